-- Operator surface (show / explain / resend / stats / retention / readyz).

-- `/readyz` proves the database is writable by writing this one row.
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);

-- Queue depth for metrics and stats without scanning every delivery:
-- pending ones have deliveries_pending; these are the other open states.
CREATE INDEX deliveries_open ON deliveries (route, status) WHERE status IN ('batched', 'failed');

-- give_up_after counts from here: the batch's creation, or its last manual
-- resend (NULL = created_at), so a resent batch gets a full retry window.
ALTER TABLE batches ADD COLUMN retry_since INTEGER;

-- Deleting a batch makes SQLite check, for the foreign keys, that no
-- delivery and no half still points at it. Partial indexes cannot serve
-- those checks (each deleted batch scanned both tables), so both columns get
-- full indexes.
DROP INDEX deliveries_batch;
CREATE INDEX deliveries_batch ON deliveries (batch_id);
CREATE INDEX batches_parent ON batches (parent_id);
