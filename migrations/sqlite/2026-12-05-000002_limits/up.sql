-- Limits per API key, user or group (`scope` key, user or group; `subject_id` its id), as the
-- JSON the admin API takes (corral_auth::limits::Limits). Changes bump the `auth` revision.
CREATE TABLE limits (
    scope TEXT NOT NULL CHECK (scope IN ('key', 'user', 'group')),
    subject_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, subject_id)
);

-- Every replica's own counts per limited subject and window (`bucket`: the minute or hour
-- number, 0 for requests in flight), written in batches; a replica adds up the others' rows.
CREATE TABLE limit_counters (
    scope TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    replica TEXT NOT NULL,
    value BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, subject_id, metric, bucket, replica)
);
CREATE INDEX limit_counters_bucket ON limit_counters (metric, bucket);
