-- Mapping profiles: what shaped a batch's events besides the events
-- themselves (a Segment source's mappings, a LaunchDarkly source's export
-- settings), stored once per distinct text. A batch names the profile it
-- was formed with, so every retry and resend maps its events the same way,
-- whatever a reload changed since. Unreferenced profiles go with retention.
-- AUTOINCREMENT: an id is never reused, so one read earlier still names
-- the same text.
CREATE TABLE profiles (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    definition TEXT    NOT NULL UNIQUE
);
-- profiles.id; NULL for the relays (they send what they received) and for
-- batches formed before this migration (mapped with the config of the
-- moment, as they were).
ALTER TABLE batches ADD COLUMN profile INTEGER;
CREATE INDEX batches_profile ON batches (profile) WHERE profile IS NOT NULL;
