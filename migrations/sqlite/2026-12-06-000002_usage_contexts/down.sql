-- Back to one wide row per record (its id made from its time and seq) and a group row per record.
CREATE TABLE usage_records_wide (
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
INSERT INTO usage_records_wide SELECT r.at_ms || '-' || r.seq, r.at_ms, c.user_id, c.key_id,
    COALESCE(c.model_asked, ''), COALESCE(c.model_run, ''), c.instance, COALESCE(c.route, ''), r.status,
    COALESCE(c.streamed, FALSE), r.cancelled, r.estimated, r.input_tokens, r.output_tokens, r.ttft_ms, r.duration_ms
    FROM usage_records r LEFT JOIN usage_contexts c ON c.id = r.context_id;
CREATE TABLE usage_groups (
    record_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (record_id, group_id)
) WITHOUT ROWID;
INSERT INTO usage_groups SELECT r.at_ms || '-' || r.seq, g.group_id, r.at_ms FROM usage_records r
    JOIN usage_context_groups g ON g.context_id = r.context_id;
CREATE INDEX usage_groups_at ON usage_groups (at_ms);
DROP TABLE usage_records;
DROP TABLE usage_context_groups;
DROP TABLE usage_contexts;
ALTER TABLE usage_records_wide RENAME TO usage_records;
