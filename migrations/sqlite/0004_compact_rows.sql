-- Compact rows: what every event repeated is now stored once.
--
-- * A LaunchDarkly payload (one SDK request) is one `requests` row: its
--   source, payload id, request metadata (endpoint, schema, tags) and the id
--   of its first event. Its events carry the row's id instead of a
--   "<payload id>:<index>" key each, and their dedupe key is derived:
--   payload id, ':', the event's id minus `first_event`. A payload stored
--   once is recognised again by (payload_id, source).
-- * A delivery names its route by a small integer (`routes`), not by the
--   route's name three times over (row and two indexes).
-- * `deliveries_batch` covers only batched deliveries; pending ones have no
--   batch. It serves lookups by batch; deliveries.batch_id keeps no foreign
--   key, so deleting a batch needs no index over every delivery.
-- * No index on events.received_at: retention walks events in id order,
--   which is the order they were received in.
--
-- Rows stored before this migration keep their text dedupe keys and get one
-- `requests` row per distinct (source, meta), so they read back unchanged.

CREATE TABLE routes (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);
INSERT INTO routes (id, name) VALUES
    (1, 'segment-to-launchdarkly'),
    (2, 'launchdarkly-to-segment'),
    (3, 'launchdarkly-relay'),
    (4, 'segment-relay');

CREATE TABLE requests (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    payload_id  TEXT,                      -- X-LaunchDarkly-Payload-ID, or NULL
    meta        TEXT,                      -- protocol extras as JSON, or NULL
    first_event INTEGER NOT NULL,          -- id of the request's first event
    event_count INTEGER NOT NULL           -- its events are ids first_event .. + event_count - 1
);
CREATE UNIQUE INDEX requests_payload ON requests (payload_id, source) WHERE payload_id IS NOT NULL;

INSERT INTO requests (source, meta, first_event, event_count)
    SELECT source, meta, MIN(id), MAX(id) - MIN(id) + 1 FROM events
    WHERE meta IS NOT NULL GROUP BY source, meta;

CREATE TABLE events_v4 (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,          -- configured source name
    protocol    TEXT    NOT NULL,          -- 'segment' | 'launchdarkly'
    dedupe_key  TEXT,                      -- Segment messageId, LaunchDarkly diagnostic id; NULL when derived from the request
    request     INTEGER,                   -- requests.id (no foreign key: see above), or NULL
    kind        TEXT    NOT NULL,          -- Segment type / LaunchDarkly kind
    received_at INTEGER NOT NULL,
    body        TEXT    NOT NULL           -- the event JSON (Segment: without type, messageId and the receivedAt ldbridge stamped, see store::body)
);
INSERT INTO events_v4 (id, source, protocol, dedupe_key, request, kind, received_at, body)
    SELECT e.id, e.source, e.protocol, e.dedupe_key, r.id, e.kind, e.received_at, e.body
    FROM events e LEFT JOIN requests r ON r.source = e.source AND r.meta = e.meta;

CREATE TABLE deliveries_v4 (
    event_id INTEGER NOT NULL REFERENCES events_v4 (id),
    route    INTEGER NOT NULL,             -- routes.id
    status   TEXT    NOT NULL,             -- pending|batched|delivered|failed|skipped
    batch_id INTEGER,                      -- batches.id once batched
    reason   TEXT,                         -- why skipped / failed
    PRIMARY KEY (event_id, route)
) WITHOUT ROWID;
INSERT INTO deliveries_v4 (event_id, route, status, batch_id, reason)
    SELECT d.event_id, r.id, d.status, d.batch_id, d.reason
    FROM deliveries d JOIN routes r ON r.name = d.route;

DROP TABLE deliveries;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
ALTER TABLE deliveries_v4 RENAME TO deliveries;

-- Segment messageIds (and keys stored before this migration), per source.
CREATE UNIQUE INDEX events_dedupe ON events (dedupe_key, source) WHERE dedupe_key IS NOT NULL;
CREATE INDEX deliveries_pending ON deliveries (route, event_id) WHERE status = 'pending';
CREATE INDEX deliveries_open ON deliveries (route, status) WHERE status IN ('batched', 'failed');
CREATE INDEX deliveries_batch ON deliveries (batch_id) WHERE batch_id IS NOT NULL;
