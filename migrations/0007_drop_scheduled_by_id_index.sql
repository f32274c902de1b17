-- Claims read executions_scheduled_by_action (0006). With this index also on offer, a generic plan
-- of the claim could walk every scheduled execution in id order and filter by action, so a claim
-- would slow with the backlog of actions the worker does not run; and every admission and claim
-- paid to maintain it. Nothing else reads it.

drop index if exists usher.executions_scheduled_by_id;
