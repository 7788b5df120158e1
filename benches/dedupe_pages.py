#!/usr/bin/env python3
"""What a dedupe index of random messageIds costs per key written, by
page size and key form: the measurement behind BENCHMARKS.md's "What one
ingest commit writes" (a design question for issue 16, not ldbridge's
schema as it is).

Each commit inserts 100 analytics.js-like messageIds (`ajs-next-` and 32
hex digits) into a table of its own in a WAL database, after `--stored`
keys; the WAL of the last 50 commits is measured.

    python3 benches/dedupe_pages.py                       # 8 KB pages, text keys
    python3 benches/dedupe_pages.py --page-size 512 --key hash
"""

import argparse
import hashlib
import os
import sqlite3
import tempfile
import uuid


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--page-size", type=int, default=8192)
    parser.add_argument("--key", choices=["text", "hash"], default="text",
                        help="text: (messageId, source), as events_dedupe; hash: 64 bits of both")
    parser.add_argument("--stored", type=int, default=300_000)
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(), "keys.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size = {args.page_size}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    if args.key == "hash":
        db.execute("CREATE TABLE keys (hash INTEGER PRIMARY KEY, event_id INTEGER NOT NULL)")
    else:
        db.execute("CREATE TABLE keys (key TEXT, source TEXT, event_id INTEGER, "
                   "PRIMARY KEY (key, source)) WITHOUT ROWID")
    written = 0

    def commit():
        nonlocal written
        db.execute("BEGIN IMMEDIATE")
        for n in range(written, written + 100):
            key = "ajs-next-" + uuid.uuid5(uuid.NAMESPACE_OID, str(n)).hex
            if args.key == "hash":
                digest = hashlib.blake2b(f"web\0{key}".encode(), digest_size=8).digest()
                db.execute("INSERT INTO keys VALUES (?, ?)",
                           (int.from_bytes(digest, "little", signed=True), n))
            else:
                db.execute("INSERT INTO keys VALUES (?, 'web', ?)", (key, n))
        db.execute("COMMIT")
        written += 100

    for _ in range(args.stored // 100):
        commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for _ in range(50):
        commit()
    frame = 24 + args.page_size
    frames = (os.path.getsize(path + "-wal") - 32) // frame
    print(f"{args.key} keys, {args.page_size}-byte pages, {args.stored} stored: "
          f"{frames / 50:.1f} WAL frames per 100 keys, {frames * frame / 5000:.0f} WAL bytes "
          f"per key; {os.path.getsize(path) / written:.0f} bytes per key in the file")


if __name__ == "__main__":
    main()
