CREATE TABLE usage_records_by_id (
    id TEXT NOT NULL PRIMARY KEY,
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
    duration_ms BIGINT NOT NULL
);
INSERT INTO usage_records_by_id SELECT id, at_ms, user_id, key_id, model_asked, model_run, instance, route,
    status, streamed, cancelled, estimated, input_tokens, output_tokens, ttft_ms, duration_ms FROM usage_records;
DROP TABLE usage_records;
ALTER TABLE usage_records_by_id RENAME TO usage_records;
CREATE INDEX usage_records_at ON usage_records (at_ms);
CREATE INDEX usage_records_user_at ON usage_records (user_id, at_ms);

CREATE TABLE usage_groups_rowid (
    record_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (record_id, group_id)
);
INSERT INTO usage_groups_rowid SELECT record_id, group_id, at_ms FROM usage_groups;
DROP TABLE usage_groups;
ALTER TABLE usage_groups_rowid RENAME TO usage_groups;
CREATE INDEX usage_groups_group ON usage_groups (group_id, at_ms);
CREATE INDEX usage_groups_at ON usage_groups (at_ms);
