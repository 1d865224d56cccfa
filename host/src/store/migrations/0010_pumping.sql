-- Dialgate schema, version 10: the SMS-pumping detector's trees, its counts per
-- tenant and prefix (and the host's aggregate per prefix) and its prefix blocks.
CREATE TABLE tree_pumping_counts (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE tree_fraud_blocks (k bytea PRIMARY KEY, v bytea NOT NULL);
