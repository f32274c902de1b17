-- Every index a row is in costs each claim and each completion an entry (status changes are never
-- HOT updates). Two indexes held entries nothing reads:
--
-- executions_active_by_lane counted slot holders per lane, but also held every execution of an
-- action without a policy (lane_key null), which has no lane and holds no slot: each such claim
-- added an entry for nothing. Every reader asks for one lane, or for lane_key is not null.
--
-- execution_transitions_by_at served only the retention of transitions no stream sequenced; ids
-- are given in the order of `at` (give or take one statement's run), so that delete walks the
-- primary key instead (usher.delete_old_execution_events). Each status change added an entry.

create index executions_holding_slot_by_lane on usher.executions (lane_key, id)
  where lane_key is not null and status in ('scheduled', 'running', 'canceling');

comment on index usher.executions_holding_slot_by_lane is
  'Executions holding a slot of their lane (usher.check_invariants, usher.lane_stats).';

drop index if exists usher.executions_active_by_lane;
drop index if exists usher.execution_transitions_by_at;
