-- Usage rows are kept in time order, with no index beside the table itself: a row costs one
-- B-tree insert instead of four (the rowid table, the id's unique index and two indexes), about half
-- the database's CPU per request (docs/benchmarks.md, "What usage metering costs").
-- Every report reads a time range (`at_ms`), which the primary key's prefix now serves; the user
-- and group indexes were never used, since a report's filters are optional (`?3 IS NULL OR ...`).
-- A record keeps its `at_ms` when a batch is retried, so (at_ms, id) still stores it once.
CREATE TABLE usage_records_by_time (
    id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    user_id TEXT,
    key_id TEXT,
    model_asked TEXT NOT NULL,
    model_run TEXT NOT NULL,
    instance INTEGER,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    streamed BOOLEAN NOT NULL,
    cancelled BOOLEAN NOT NULL,
    estimated BOOLEAN NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    ttft_ms BIGINT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (at_ms, id)
) WITHOUT ROWID;
INSERT INTO usage_records_by_time SELECT id, at_ms, user_id, key_id, model_asked, model_run, instance, route,
    status, streamed, cancelled, estimated, input_tokens, output_tokens, ttft_ms, duration_ms FROM usage_records;
DROP TABLE usage_records;
ALTER TABLE usage_records_by_time RENAME TO usage_records;

-- A record's groups, found by record (reports join on it); `at_ms` for pruning.
CREATE TABLE usage_groups_by_record (
    record_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (record_id, group_id)
) WITHOUT ROWID;
INSERT INTO usage_groups_by_record SELECT record_id, group_id, at_ms FROM usage_groups;
DROP TABLE usage_groups;
ALTER TABLE usage_groups_by_record RENAME TO usage_groups;
CREATE INDEX usage_groups_at ON usage_groups (at_ms);
