-- Dialgate schema, version 2: the change log replicas read to keep their caches
-- current (tree `changes`).
CREATE TABLE tree_changes (k bytea PRIMARY KEY, v bytea NOT NULL);
