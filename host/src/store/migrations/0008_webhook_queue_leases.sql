-- Dialgate schema, version 8: the webhook schedule carries its lease as a column, as
-- the job queue does since version 7. A replica claims due deliveries with one
-- statement that skips the rows another replica is claiming at that moment
-- (`FOR UPDATE SKIP LOCKED`) and leases each until a time; a delivery whose attempt
-- died with its replica is claimed again once its lease has ended. The separate
-- table of delivery leases (version 3) is no longer used.
ALTER TABLE tree_webhook_queue ADD COLUMN lease_until_ms bigint;
DROP TABLE tree_webhook_leases;
