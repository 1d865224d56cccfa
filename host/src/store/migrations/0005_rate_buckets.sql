-- Dialgate schema, version 5: rate-limit buckets as rows the database updates in one
-- statement (refill, take, and when the bucket is full again), so replicas taking
-- from one hot bucket never retry a compare-and-swap. Replaces `tree_rate_limits`,
-- which is kept (empty) for the key-value contract.
CREATE TABLE rate_buckets (
    k bytea PRIMARY KEY,
    tokens double precision NOT NULL,
    at_ms bigint NOT NULL,
    full_at_ms bigint NOT NULL
);
CREATE INDEX rate_buckets_full_at ON rate_buckets (full_at_ms);
