-- Own dedupe keys (Segment messageIds, LaunchDarkly diagnostic ids) are
-- looked up in the dedupe key file beside the database (src/store/keys.rs),
-- built from `events` when the store opens. Random messageIds wrote one
-- random 8 KB page of this index per event.
DROP INDEX events_dedupe;

-- LaunchDarkly keys stored as text: those of payloads stored before
-- migration 0004 ("<payload id>:<index>", found by payload id as a prefix)
-- and diagnostic ids. Payload events stored since have no key of their
-- own, so this index no longer grows with them.
CREATE INDEX events_launchdarkly_keys ON events (dedupe_key)
    WHERE protocol = 'launchdarkly' AND dedupe_key IS NOT NULL;
