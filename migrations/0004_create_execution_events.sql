-- The execution event log behind GET /api/v1/executions/stream: every status change, in an order a
-- reader can resume from. Transitions are written by triggers into an inbox, in whatever order
-- their transactions commit; usher.sequence_execution_events() moves committed ones into the log
-- under gap-free positions, so a reader that remembers its last position never misses one.

create table usher.execution_transitions (
  id bigint generated always as identity primary key,
  execution_id bigint not null,
  action_ref text not null,
  status text not null,
  previous_status text,
  attempt integer not null,
  elapsed_seconds double precision,
  at timestamptz not null default clock_timestamp()
);

comment on table usher.execution_transitions is
  'Inbox of status changes not yet given a position in usher.execution_events. Written by triggers on usher.executions; emptied by usher.sequence_execution_events().';

create table usher.execution_events (
  position bigint primary key,
  execution_id bigint not null,
  action_ref text not null,
  status text not null,
  previous_status text,
  attempt integer not null,
  elapsed_seconds double precision,
  at timestamptz not null
);

comment on table usher.execution_events is
  'Every status change of every execution, in positions without gaps: the stream of GET /api/v1/executions/stream. Kept for USHER_EVENT_RETENTION_MINUTES.';
comment on column usher.execution_events.position is
  'Order of the log, without gaps; the SSE event id. Each execution''s own events are in the order they happened.';
comment on column usher.execution_events.execution_id is 'The execution (usher.executions.id); not a foreign key, so the log outlives deleted executions.';
comment on column usher.execution_events.action_ref is 'The execution''s action.';
comment on column usher.execution_events.status is 'The status it changed to.';
comment on column usher.execution_events.previous_status is 'The status it changed from; null when it was inserted.';
comment on column usher.execution_events.attempt is 'The execution''s attempt number at the change.';
comment on column usher.execution_events.elapsed_seconds is
  'Time spent in the previous status where Usher records both ends: waiting in the lane (to scheduled), waiting for a worker (to running), running (to an end from running or canceling).';
comment on column usher.execution_events.at is 'When the change was made (clock time of its transaction).';

create index execution_events_by_action on usher.execution_events (action_ref, position);
create index execution_events_by_at on usher.execution_events (at);
create index execution_transitions_by_at on usher.execution_transitions (at);

-- One row: the last position given out. Its row lock lets one sequencer run at a time.
create table usher.execution_event_sequencer (
  singleton boolean primary key default true constraint execution_event_sequencer_one_row check (singleton),
  last_position bigint not null default 0
);

insert into usher.execution_event_sequencer default values;

comment on table usher.execution_event_sequencer is
  'The last position given to an event in usher.execution_events; locked while events are sequenced.';

alter table usher.execution_transitions set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);
