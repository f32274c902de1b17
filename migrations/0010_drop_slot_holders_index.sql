-- executions_holding_slot_by_lane gave every admission and every claim of an execution in a lane
-- an index entry (a status change is never a HOT update), and only usher.check_invariants, a
-- diagnostic, read it. The check now reads slot holders through the claim index (scheduled) and
-- the lease index (running, canceling). Batches of 250 completions in 1,000 threshold-1 lanes,
-- admitting and claiming each lane's next (bench/step-loop.ts lanes), four interleaved pairs:
-- 81.5, 80.6, 82.0, 79.8 µs of server time per execution with the index, 72.1, 77.1, 72.8, 72.8 without.

drop index if exists usher.executions_holding_slot_by_lane;
