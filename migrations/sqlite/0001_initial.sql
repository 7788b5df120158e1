-- ldbridge schema, version 1. Forward-only: later changes get new files.
-- Times are Unix milliseconds (INTEGER). Statuses are the names of
-- architecture.md §4. Secrets are never stored: sources are named.

-- Every accepted inbound event, as stored after ingest normalisation.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,          -- configured source name
    protocol    TEXT    NOT NULL,          -- 'segment' | 'launchdarkly'
    dedupe_key  TEXT    NOT NULL,          -- Segment messageId; LaunchDarkly "<payload id>:<index>"
    kind        TEXT    NOT NULL,          -- Segment type / LaunchDarkly kind
    received_at INTEGER NOT NULL,
    meta        TEXT,                      -- protocol extras as JSON, or NULL
    body        TEXT    NOT NULL           -- the event JSON
);
-- Dedupe key first, so `explain <messageId>` can look up by prefix too.
CREATE UNIQUE INDEX events_dedupe ON events (dedupe_key, source);
CREATE INDEX events_received ON events (received_at);

-- A request's worth of events of one route and one source (= one destination
-- credential). Keeps its identity (payload_id) for every retry and resend.
CREATE TABLE batches (
    id              INTEGER PRIMARY KEY,
    route           TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    status          TEXT    NOT NULL,      -- pending|sending|delivered|retrying|failed|split
    payload_id      TEXT    NOT NULL,
    event_count     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_attempt_at INTEGER,               -- due time while pending/retrying
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_trigger    TEXT    NOT NULL DEFAULT 'scheduled',  -- trigger of the next attempt
    last_error      TEXT,
    parent_id       INTEGER REFERENCES batches (id)        -- set on the halves of a split
);
CREATE INDEX batches_due ON batches (route, next_attempt_at) WHERE status IN ('pending', 'retrying');
CREATE INDEX batches_status ON batches (status, id);
CREATE INDEX batches_route ON batches (route, id);
CREATE INDEX batches_updated ON batches (updated_at);

-- One row per (event, route): where that event stands on that route.
CREATE TABLE deliveries (
    event_id INTEGER NOT NULL REFERENCES events (id),
    route    TEXT    NOT NULL,
    status   TEXT    NOT NULL,             -- pending|batched|delivered|failed|skipped
    batch_id INTEGER REFERENCES batches (id),
    reason   TEXT,                         -- why skipped / failed
    PRIMARY KEY (event_id, route)
) WITHOUT ROWID;
CREATE INDEX deliveries_pending ON deliveries (route, event_id) WHERE status = 'pending';
CREATE INDEX deliveries_batch ON deliveries (batch_id) WHERE batch_id IS NOT NULL;

-- Every HTTP attempt, successful or not.
CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY,
    batch_id     INTEGER NOT NULL REFERENCES batches (id),
    attempt      INTEGER NOT NULL,         -- 1-based, per batch
    triggered_by TEXT    NOT NULL,         -- 'scheduled' | 'manual'
    started_at   INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    http_status  INTEGER,                  -- NULL on transport errors
    error        TEXT,                     -- transport error or failure reason
    response     TEXT,                     -- first 1 KB of the response body
    outcome      TEXT    NOT NULL          -- delivered|retrying|split|failed
);
CREATE INDEX attempts_batch ON attempts (batch_id, attempt);
CREATE INDEX attempts_started ON attempts (started_at);
