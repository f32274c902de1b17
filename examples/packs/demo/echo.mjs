// demo.echo: returns its params. The smallest possible handler.
export const description = 'Returns its params unchanged';

export default async function echo(params, ctx) {
  ctx.log.info({ event: 'demo:echo', params }, 'echo');
  return { echoed: params };
}
