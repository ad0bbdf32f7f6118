-- Usage records in batches: each write of the gateway's usage buffer is one row holding its
-- records packed as numbers (the format is in crates/corral-store/src/usage/batch.rs), keyed by
-- the time of its newest record and the seq of its first, so a batch retried after a lost
-- acknowledgement is stored once. A batch spans less than an hour of arrivals, so a report of a
-- time range reads only the batches whose newest record is in it or within the hour after.
-- One row a batch instead of one a request took metering's whole cost from about 5,000
-- instructions a request (4,200 of them SQLite's) to about 1,000 (docs/benchmarks.md, "What
-- usage metering costs"). Records of the earlier shape stay in usage_records and are read with these
-- (expand now; a later release may move them and drop the table).
CREATE TABLE usage_batches (
    last_ms BIGINT NOT NULL,
    batch_id BIGINT NOT NULL,
    first_ms BIGINT NOT NULL,
    records BYTEA NOT NULL,
    PRIMARY KEY (last_ms, batch_id)
);
