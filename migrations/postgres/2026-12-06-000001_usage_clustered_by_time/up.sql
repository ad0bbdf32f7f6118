-- Usage rows are found by time: the primary key becomes (at_ms, id), which serves every report's
-- time range, and the indexes no report used go (a report's filters are optional, `$3 IS NULL OR
-- ...`, so the user and group indexes were never chosen): each record updates one index instead of
-- three. A record keeps its `at_ms` when a batch is retried, so (at_ms, id) still stores it once.
ALTER TABLE usage_records DROP CONSTRAINT usage_records_pkey;
ALTER TABLE usage_records ADD PRIMARY KEY (at_ms, id);
DROP INDEX usage_records_at;
DROP INDEX usage_records_user_at;
DROP INDEX usage_groups_group;
