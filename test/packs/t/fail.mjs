// t.fail: throws what params.throw says: an Error by default, or a string or an object.
export default async function fail(params) {
  if (params.throw === 'string') throw 'plain string thrown';
  if (params.throw === 'object') throw { code: 42, why: 'object thrown' };
  throw new TypeError(String(params.message ?? 'failed on purpose'));
}
