-- Dialgate schema, version 14: rule statistics, each rule's runs, decisions and
-- failures per tenant and day, merged as traffic flows.
CREATE TABLE tree_rule_stats (k bytea PRIMARY KEY, v bytea NOT NULL);
