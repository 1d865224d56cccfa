-- Dialgate schema, version 13: stored idempotent answers indexed by the verification
-- they are about, so erasing a verification removes them without a scan.
CREATE TABLE tree_idempotency_verifications (k bytea PRIMARY KEY, v bytea NOT NULL);
