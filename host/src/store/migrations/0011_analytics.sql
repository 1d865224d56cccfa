-- Dialgate schema, version 11: conversion analytics. Tallies per tenant (and for the host),
-- interval, grouping, bucket and group value, merged as traffic flows.
CREATE TABLE tree_analytics (k bytea PRIMARY KEY, v bytea NOT NULL);
