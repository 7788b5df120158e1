-- Claims that expire: a batch in `sending` is claimed until its
-- next_attempt_at (set when it was claimed: the request timeout three times
-- over plus a margin). A claim that outlives its attempt (the outcome could
-- not be recorded: a full disk, a locked database, a task that died) is
-- taken again by a later dispatcher run, with the same payload id, without
-- waiting for a restart. So the due index covers `sending` too.
DROP INDEX batches_due;
CREATE INDEX batches_due ON batches (route, next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'sending');
-- Batches left `sending` by a version without claims get a claim that has
-- already expired.
UPDATE batches SET next_attempt_at = updated_at WHERE status = 'sending' AND next_attempt_at IS NULL;
