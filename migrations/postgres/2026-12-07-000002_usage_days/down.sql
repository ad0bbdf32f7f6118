DROP TABLE usage_days;
DROP INDEX usage_batches_unrolled;
ALTER TABLE usage_batches DROP COLUMN rolled_up;
