-- Every admin operation the HTTP API is asked to run (actions, policies, lane controls), by whom.
-- The row is written before the operation starts and given its answer when the response is sent,
-- so no change made through the API is missing from the log: a row without a status is an
-- operation whose process ended before it answered.

create table if not exists usher.api_audit_log (
  id bigint generated always as identity primary key,
  requested_at timestamptz not null default clock_timestamp(),
  actor text not null,
  operation text not null,
  method text not null,
  path text not null,
  target text,
  request jsonb not null default '{}',
  request_id text not null,
  status integer,
  answered_at timestamptz
);

comment on table usher.api_audit_log is
  'Admin operations of the HTTP API (actions, policies, lane controls): one row per authorized request, written before it runs, completed with the HTTP status it answered.';
comment on column usher.api_audit_log.actor is
  'token:<first 12 hex digits of the token''s SHA-256> (printf %s "$TOKEN" | sha256sum | cut -c1-12), or open when the API runs without tokens.';
comment on column usher.api_audit_log.operation is 'The route''s operationId in the OpenAPI document, e.g. unblockLane.';
comment on column usher.api_audit_log.target is 'What the operation names: the action or policy ref, or the lane key.';
comment on column usher.api_audit_log.request is 'The validated path parameters and body.';
comment on column usher.api_audit_log.status is 'HTTP status answered; null while the operation runs, or if its process ended before answering.';

create index if not exists api_audit_log_by_target on usher.api_audit_log (target, id);
