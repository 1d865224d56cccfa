-- Dialgate schema, version 7: the job queue carries its lease as a column. A replica
-- claims due jobs with one statement that skips the rows another replica is claiming
-- at that moment (`FOR UPDATE SKIP LOCKED`) and leases each until a time; a job whose
-- runner died is claimed again once its lease has ended. The row's key still starts
-- with its due time, so due jobs are a range of the primary key.
ALTER TABLE tree_jobs ADD COLUMN lease_until_ms bigint;
