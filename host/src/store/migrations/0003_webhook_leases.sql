-- Dialgate schema, version 3: leases on webhook deliveries being attempted, so two
-- replicas never attempt one delivery at once (tree `webhook_leases`).
CREATE TABLE tree_webhook_leases (k bytea PRIMARY KEY, v bytea NOT NULL);
