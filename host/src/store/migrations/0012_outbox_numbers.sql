-- Dialgate schema, version 12: the dev outbox's messages indexed by number, so listing
-- a number's codes and erasing a verification's copies read only that number's keys.
CREATE TABLE tree_outbox_numbers (k bytea PRIMARY KEY, v bytea NOT NULL);
