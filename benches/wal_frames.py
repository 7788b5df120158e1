#!/usr/bin/env python3
"""Which pages one ingest commit writes to the WAL, by table and index.

Builds a database from migrations/sqlite/*.sql with ldbridge's pragmas (8 KB
pages, incremental auto-vacuum, WAL), commits requests of 100 Segment
events and their pending deliveries the way the ingest writer does, then
reads the WAL's frame headers of the last 50 commits and names each page
with `dbstat`. BENCHMARKS.md ("What one ingest commit writes") has the
figures.

    python3 benches/wal_frames.py                   # ascending messageIds, as the bench sends
    python3 benches/wal_frames.py --ids random      # analytics.js-like random messageIds
    python3 benches/wal_frames.py --page-size 4096  # another page size

Needs Python's sqlite3 built with the dbstat table (Debian's is).
"""

import argparse
import glob
import json
import os
import struct
import tempfile
import uuid
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = json.dumps({
    "event": "Order Completed", "userId": "user-123",
    "anonymousId": "3f1a8c2e-7b4d-4e9a-9c51-2d6e8f0a1b37",
    "timestamp": "2024-05-14T09:31:27.412Z",
    "properties": {"orderId": "ord_1234", "revenue": 84.5, "currency": "USD",
                   "products": [{"sku": "SKU-1187", "quantity": 2, "price": 42.25}]},
    "context": {"ip": "203.0.113.24",
                "library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
    "integrations": {}, "_metadata": {"nodeVersion": "v20.12.2", "jsRuntime": "node"},
})


def message_id(n, ids):
    if ids == "random":
        return "ajs-next-" + uuid.uuid5(uuid.NAMESPACE_OID, str(n)).hex
    return f"bench-{n:012}-6c9e0f5e-2b1a-4c3d-8e7f-9a0b1c2d3e4f"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", choices=["ascending", "random"], default="ascending")
    parser.add_argument("--page-size", type=int, default=8192)
    parser.add_argument("--stored", type=int, default=1000,
                        help="requests of 100 events stored before measuring")
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(), "wal.db")
    db = __import__("sqlite3").connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size = {args.page_size}")
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    for migration in sorted(glob.glob(os.path.join(ROOT, "migrations", "sqlite", "*.sql"))):
        db.executescript(open(migration).read())
    stored = 0

    def commit():
        nonlocal stored
        db.execute("BEGIN IMMEDIATE")
        first = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()[0]
        rows = [(first + i, "web", "segment", message_id(stored + i, args.ids), "track",
                 1_700_000_000_000 + stored, BODY) for i in range(100)]
        db.executemany("INSERT INTO events (id, source, protocol, dedupe_key, kind, received_at, body) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("INSERT INTO deliveries (event_id, route, status) "
                   "SELECT id, 1, 'pending' FROM events WHERE id >= ?", (first,))
        db.execute("COMMIT")
        stored += 100

    for _ in range(args.stored):
        commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    measured = 50
    for _ in range(measured):
        commit()
    wal = open(path + "-wal", "rb").read()
    frame = 24 + args.page_size
    pages = [struct.unpack(">I", wal[at:at + 4])[0] for at in range(32, len(wal) - frame + 1, frame)]
    names = dict(db.execute("SELECT pageno, name FROM dbstat").fetchall())
    by_name = Counter(names.get(page, "pointer map / free") for page in pages)
    print(f"{args.ids} messageIds, {args.page_size}-byte pages, {args.stored * 100} events stored")
    print(f"WAL frames per 100-event commit: {len(pages) / measured:.1f}"
          f" ({len(pages) * frame / (measured * 100):.0f} WAL bytes per event)")
    for name, count in by_name.most_common():
        print(f"  {name:<20} {count / measured:6.1f}")


if __name__ == "__main__":
    main()
