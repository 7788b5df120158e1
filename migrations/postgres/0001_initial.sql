-- The PostgreSQL schema: the same tables as SQLite's migrations 0001-0009
-- arrive at, with these differences:
--
-- * events.dedupe_key is always set (a LaunchDarkly event's is
--   "<payload id>:<index>"), so dedupe across nodes is one unique index,
--   and "C" collation makes a payload's keys one index range.
-- * batches.claimed_by names the node whose claim a `sending` batch is under;
--   a node restarting recovers only its own claims.
-- * Times are Unix milliseconds (BIGINT), as in SQLite.

CREATE TABLE routes (
    id   BIGINT PRIMARY KEY,
    name TEXT   NOT NULL UNIQUE
);
INSERT INTO routes (id, name) VALUES
    (1, 'segment-to-launchdarkly'),
    (2, 'launchdarkly-to-segment'),
    (3, 'launchdarkly-relay'),
    (4, 'segment-relay');

CREATE TABLE requests (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT   NOT NULL,
    payload_id  TEXT,                      -- X-LaunchDarkly-Payload-ID, or NULL
    meta        TEXT,                      -- protocol extras as JSON, or NULL
    first_event BIGINT NOT NULL,
    event_count BIGINT NOT NULL
);
CREATE UNIQUE INDEX requests_payload ON requests (payload_id, source) WHERE payload_id IS NOT NULL;

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT   NOT NULL,
    protocol    TEXT   NOT NULL,           -- 'segment' | 'launchdarkly'
    dedupe_key  TEXT   COLLATE "C" NOT NULL,
    request     BIGINT,                    -- requests.id, or NULL
    kind        TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    body        TEXT   NOT NULL
);
CREATE UNIQUE INDEX events_dedupe ON events (dedupe_key, source);
CREATE INDEX events_request ON events (request) WHERE request IS NOT NULL;

CREATE TABLE profiles (
    id         BIGSERIAL PRIMARY KEY,
    definition TEXT NOT NULL UNIQUE
);

CREATE TABLE batches (
    id              BIGSERIAL PRIMARY KEY,
    route           TEXT   NOT NULL,
    source          TEXT   NOT NULL,
    status          TEXT   NOT NULL,       -- pending|sending|delivered|retrying|failed|split
    payload_id      TEXT   NOT NULL,
    event_count     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    next_attempt_at BIGINT,                -- due time (pending/retrying), claim expiry (sending)
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_trigger    TEXT   NOT NULL DEFAULT 'scheduled',
    last_error      TEXT,
    parent_id       BIGINT REFERENCES batches (id),
    lane            TEXT   NOT NULL DEFAULT '',
    retry_since     BIGINT,
    profile         BIGINT,
    claimed_by      TEXT
);
CREATE INDEX batches_due ON batches (route, next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'sending');
CREATE INDEX batches_status ON batches (status, id);
CREATE INDEX batches_route ON batches (route, id);
CREATE INDEX batches_updated ON batches (updated_at);
CREATE INDEX batches_parent ON batches (parent_id);
CREATE INDEX batches_profile ON batches (profile) WHERE profile IS NOT NULL;

-- No foreign key to events: its check cost every ingested event one more
-- index lookup (measured: a third of the deliveries insert). The writer
-- inserts an event and its deliveries in one transaction; retention deletes
-- deliveries before their event.
CREATE TABLE deliveries (
    event_id BIGINT NOT NULL,
    route    BIGINT NOT NULL,              -- routes.id
    status   TEXT   NOT NULL,              -- pending|batched|delivered|failed|skipped
    batch_id BIGINT,
    reason   TEXT,
    PRIMARY KEY (event_id, route)
);
CREATE INDEX deliveries_pending ON deliveries (route, event_id) WHERE status = 'pending';
CREATE INDEX deliveries_open ON deliveries (route, status) WHERE status IN ('batched', 'failed');
CREATE INDEX deliveries_batch ON deliveries (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE attempts (
    id           BIGSERIAL PRIMARY KEY,
    batch_id     BIGINT NOT NULL REFERENCES batches (id),
    attempt      BIGINT NOT NULL,
    triggered_by TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    http_status  BIGINT,
    error        TEXT,
    response     TEXT,
    outcome      TEXT   NOT NULL
);
CREATE INDEX attempts_batch ON attempts (batch_id, attempt);
CREATE INDEX attempts_started ON attempts (started_at);

CREATE TABLE heartbeat (
    id BIGINT PRIMARY KEY,                 -- one row per node (hash of its name)
    at BIGINT NOT NULL
);

CREATE TABLE refusals (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    source     TEXT,
    path       TEXT   NOT NULL,
    item       BIGINT,
    status     BIGINT NOT NULL,
    code       TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    message_id TEXT,
    excerpt    TEXT   NOT NULL
);
CREATE INDEX refusals_message ON refusals (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX refusals_at ON refusals (at);

CREATE TABLE totals (
    route  BIGINT NOT NULL,
    status TEXT   NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (route, status)
);

CREATE TABLE flows (
    minute BIGINT NOT NULL,
    route  BIGINT NOT NULL,
    source TEXT   NOT NULL,
    what   TEXT   NOT NULL,
    reason TEXT   NOT NULL DEFAULT '',
    n      BIGINT NOT NULL,
    PRIMARY KEY (minute, route, source, what, reason)
);

CREATE TABLE flows_hourly (
    hour   BIGINT NOT NULL,
    route  BIGINT NOT NULL,
    source TEXT   NOT NULL,
    what   TEXT   NOT NULL,
    reason TEXT   NOT NULL DEFAULT '',
    n      BIGINT NOT NULL,
    PRIMARY KEY (hour, route, source, what, reason)
);
