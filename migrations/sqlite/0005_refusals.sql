-- The refusal log ("failed on ingest"): every message or request that
-- ingest refused, with why. Bounded: the ingest writer records at most
-- store.refusal_log_per_second and keeps the newest
-- store.refusal_log_max_rows; retention purges rows older than store.retain.
-- Never holds a key, a token or an Authorization value.
CREATE TABLE refusals (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,           -- Unix ms, when it was refused
    source     TEXT,                       -- configured source name; NULL: unknown key
    path       TEXT    NOT NULL,           -- the request's path
    item       INTEGER,                    -- index in the request's array; NULL: the whole request
    status     INTEGER NOT NULL,           -- HTTP status the request was answered with
    code       TEXT    NOT NULL,           -- reason code (missing_event, invalid_json, ...)
    reason     TEXT    NOT NULL,           -- reason text, naming the field
    message_id TEXT,                       -- Segment messageId or LaunchDarkly payload id, if any
    excerpt    TEXT    NOT NULL            -- the first 1 KB of the message (write keys redacted)
);
CREATE INDEX refusals_message ON refusals (message_id) WHERE message_id IS NOT NULL;
