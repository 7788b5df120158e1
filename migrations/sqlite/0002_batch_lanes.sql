-- A lane is the part of a batch's destination beyond its route and source:
-- for launchdarkly-relay, the SDK endpoint kind (server, mobile, client),
-- the event schema version and the tags header, which must all be the same
-- for every event of one request. Empty for the mapped routes.
ALTER TABLE batches ADD COLUMN lane TEXT NOT NULL DEFAULT '';
