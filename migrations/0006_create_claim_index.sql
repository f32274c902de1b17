-- Claims take the oldest admitted executions of the worker's actions. The claim walks this index
-- one action at a time, already in id order, so its cost does not grow with the number of waiting
-- or finished rows, whatever the planner's statistics say (with (action_ref, status) and a stale
-- estimate, the planner sorted every scheduled row of the action on each claim).

create index executions_scheduled_by_action on usher.executions (action_ref, id) where status = 'scheduled';

comment on index usher.executions_scheduled_by_action is
  'Claims: the oldest scheduled executions of one action, in id order (usher.claim_scheduled).';
