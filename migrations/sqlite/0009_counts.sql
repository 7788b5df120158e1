-- Counts kept with the changes they count, so the overview, `stats` and
-- /metrics read a few rows instead of scanning events and deliveries.
--
-- * `totals`: deliveries by route and current status (what `stats` and the
--   queue-depth gauges show), moved in the same transaction as each status
--   change. Not `pending`: ingest creates those, and its commits stay as
--   they were; they are counted from their own small index when asked.
-- * `flows`: what happened per minute, route and source: `received`
--   (deliveries created, counted in the minute the event was received when
--   the dispatcher first takes it), `skipped`, `failed` (with the reason), `delivered`,
--   `retried` (events of an attempt that ended retrying), `resent`, and
--   `refused` at ingest (route 0, reason = the refusal's code). Retention
--   deletes minutes older than `store.retain`.
CREATE TABLE totals (
    route  INTEGER NOT NULL,               -- routes.id
    status TEXT    NOT NULL,               -- pending|batched|delivered|failed|skipped
    n      INTEGER NOT NULL,
    PRIMARY KEY (route, status)
) WITHOUT ROWID;
INSERT INTO totals (route, status, n)
    SELECT route, status, COUNT(*) FROM deliveries WHERE status <> 'pending' GROUP BY route, status;

CREATE TABLE flows (
    minute INTEGER NOT NULL,               -- Unix ms / 60000
    route  INTEGER NOT NULL,               -- routes.id; 0: ingest (refused)
    source TEXT    NOT NULL,
    what   TEXT    NOT NULL,
    reason TEXT    NOT NULL DEFAULT '',
    n      INTEGER NOT NULL,
    PRIMARY KEY (minute, route, source, what, reason)
) WITHOUT ROWID;

-- What is stored already, counted once: received when the event was,
-- skipped then too (no time of its own), delivered and failed when their
-- batch last changed, refusals when they happened.
INSERT INTO flows (minute, route, source, what, reason, n)
    SELECT e.received_at / 60000, d.route, e.source, 'received', '', COUNT(*)
    FROM deliveries d JOIN events e ON e.id = d.event_id
    GROUP BY 1, 2, 3;
INSERT INTO flows (minute, route, source, what, reason, n)
    SELECT e.received_at / 60000, d.route, e.source, 'skipped', COALESCE(d.reason, ''), COUNT(*)
    FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.status = 'skipped'
    GROUP BY 1, 2, 3, 5;
INSERT INTO flows (minute, route, source, what, reason, n)
    SELECT b.updated_at / 60000, r.id, b.source, d.status,
           CASE d.status WHEN 'failed' THEN COALESCE(d.reason, '') ELSE '' END, COUNT(*)
    FROM deliveries d JOIN batches b ON b.id = d.batch_id JOIN routes r ON r.name = b.route
    WHERE d.status IN ('delivered', 'failed')
    GROUP BY 1, 2, 3, 4, 5;
INSERT INTO flows (minute, route, source, what, reason, n)
    SELECT e.received_at / 60000, d.route, e.source, 'failed', COALESCE(d.reason, ''), COUNT(*)
    FROM deliveries d JOIN events e ON e.id = d.event_id
    WHERE d.status = 'failed' AND d.batch_id IS NULL
    GROUP BY 1, 2, 3, 5
    ON CONFLICT (minute, route, source, what, reason) DO UPDATE SET n = n + excluded.n;
INSERT INTO flows (minute, route, source, what, reason, n)
    SELECT at / 60000, 0, COALESCE(source, ''), 'refused', code, COUNT(*)
    FROM refusals GROUP BY 1, 3, 5;

-- The same counts per hour, written with the minutes: a window longer than
-- six hours reads hours (336 rows a key for two weeks, not 20,160).
CREATE TABLE flows_hourly (
    hour   INTEGER NOT NULL,               -- Unix ms / 3,600,000
    route  INTEGER NOT NULL,
    source TEXT    NOT NULL,
    what   TEXT    NOT NULL,
    reason TEXT    NOT NULL DEFAULT '',
    n      INTEGER NOT NULL,
    PRIMARY KEY (hour, route, source, what, reason)
) WITHOUT ROWID;
INSERT INTO flows_hourly (hour, route, source, what, reason, n)
    SELECT minute / 60, route, source, what, reason, SUM(n) FROM flows GROUP BY 1, 2, 3, 4, 5;
