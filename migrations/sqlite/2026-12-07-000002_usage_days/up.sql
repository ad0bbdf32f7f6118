-- Usage summed per UTC day and context, so a report of whole days (a month, everything, what
-- /api/v1/usage/me shows) reads a row per day and context instead of unpacking every record of
-- its range. The gateway folds each batch into these sums once (`rolled_up`, set in the same
-- transaction as the sums are added, so a batch is never counted twice by replicas folding at
-- once); reports still unpack the batches not folded yet (written by a release before this
-- one, or not reached yet) and those at the partial days at a range's ends.
ALTER TABLE usage_batches ADD COLUMN rolled_up BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX usage_batches_unrolled ON usage_batches (last_ms, batch_id) WHERE NOT rolled_up;
CREATE TABLE usage_days (
    day BIGINT NOT NULL,
    context_id BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    estimated BIGINT NOT NULL,
    ttft_ms_sum BIGINT NOT NULL,
    ttft_count BIGINT NOT NULL,
    duration_ms_sum BIGINT NOT NULL,
    PRIMARY KEY (day, context_id)
);
