-- Usage in two parts. What a request was (who asked, with which key, for which model, which model
-- ran where, through which route, streamed or not, and the caller's groups) repeats across
-- thousands of requests: it is stored once per combination, in `usage_contexts` and
-- `usage_context_groups`. What each request cost is one narrow row of numbers in `usage_records`,
-- kept in time order: the gateway's database work per request falls to about two fifths
-- (docs/benchmarks.md, "What usage metering costs"), and a group no longer adds a row per request.
-- A context's id is made by the gateway from its contents (the same on every replica); the
-- contexts carried over from the previous shape get negative ids, one per old record.
-- A record's `seq` tells apart the records of one millisecond; the gateway makes it, and a batch
-- retried after a lost acknowledgement keeps it, so (at_ms, seq) stores the record once.
CREATE TABLE usage_contexts (
    id BIGINT NOT NULL PRIMARY KEY,
    user_id TEXT,
    key_id TEXT,
    model_asked TEXT NOT NULL,
    model_run TEXT NOT NULL,
    instance INTEGER,
    route TEXT NOT NULL,
    streamed BOOLEAN NOT NULL
) WITHOUT ROWID;
CREATE TABLE usage_context_groups (
    context_id BIGINT NOT NULL,
    group_id TEXT NOT NULL,
    PRIMARY KEY (context_id, group_id)
) WITHOUT ROWID;
CREATE TABLE usage_records_narrow (
    at_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    context_id BIGINT NOT NULL,
    status INTEGER NOT NULL,
    cancelled BOOLEAN NOT NULL,
    estimated BOOLEAN NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    ttft_ms BIGINT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (at_ms, seq)
) WITHOUT ROWID;
CREATE TABLE usage_carried (record_id TEXT NOT NULL PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO usage_carried SELECT id, ROW_NUMBER() OVER (ORDER BY at_ms, id) FROM usage_records;
INSERT INTO usage_contexts SELECT -c.n, r.user_id, r.key_id, r.model_asked, r.model_run, r.instance, r.route,
    r.streamed FROM usage_records r JOIN usage_carried c ON c.record_id = r.id;
INSERT INTO usage_context_groups SELECT -c.n, g.group_id FROM usage_groups g
    JOIN usage_carried c ON c.record_id = g.record_id;
INSERT INTO usage_records_narrow SELECT r.at_ms, c.n, -c.n, r.status, r.cancelled, r.estimated, r.input_tokens,
    r.output_tokens, r.ttft_ms, r.duration_ms FROM usage_records r JOIN usage_carried c ON c.record_id = r.id;
DROP TABLE usage_carried;
DROP TABLE usage_groups;
DROP TABLE usage_records;
ALTER TABLE usage_records_narrow RENAME TO usage_records;
