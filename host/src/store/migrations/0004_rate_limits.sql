-- Dialgate schema, version 4: rate-limit buckets shared by the replicas (tree
-- `rate_limits`).
CREATE TABLE tree_rate_limits (k bytea PRIMARY KEY, v bytea NOT NULL);
