-- Dialgate schema, version 10: fraud and cost protection. The SMS-pumping detector's trees, its counts per
-- tenant and prefix (and the host's aggregate per prefix) and its prefix blocks.
CREATE TABLE tree_pumping_counts (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE tree_fraud_blocks (k bytea PRIMARY KEY, v bytea NOT NULL);
-- And what each tenant's codes cost per day, month and country (spend caps).
CREATE TABLE tree_spend (k bytea PRIMARY KEY, v bytea NOT NULL);
