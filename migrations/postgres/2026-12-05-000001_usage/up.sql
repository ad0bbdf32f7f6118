-- One row per model-running request, written in batches by the gateway (never on the request path).
-- `id` is a uuid made by the gateway, so a batch retried after a lost acknowledgement is not counted
-- twice. Times are Unix milliseconds (`at_ms`: a request's second is too coarse to order them); the UTC
-- day is `at_ms / 86400000`. `instance` is the index in `ollama.base_urls`. Counts are estimated
-- (`estimated`) when the instance gave none: the output then is the chunks relayed.
-- No state_revisions row: usage is never loaded into memory.
CREATE TABLE usage_records (
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
CREATE INDEX usage_records_at ON usage_records (at_ms);
CREATE INDEX usage_records_user_at ON usage_records (user_id, at_ms);

-- The groups the caller belonged to when the request ran (one row per group).
CREATE TABLE usage_groups (
    record_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (record_id, group_id)
);
CREATE INDEX usage_groups_group ON usage_groups (group_id, at_ms);
CREATE INDEX usage_groups_at ON usage_groups (at_ms);
