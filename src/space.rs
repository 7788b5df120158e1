//! Room on the store's file system: a full disk is a normal state.
//!
//! Ingest stops taking events while the file system holding the database
//! has less than `store.min_free_bytes` free (`statvfs`), well before SQLite
//! would meet a failed write, so the dispatcher (attempts, statuses) and
//! retention still have room to work: delivered events are what retention
//! can free. For when something else eats that room too, a reserve file of
//! `store.reserve_bytes` ("ballast", as CockroachDB keeps) sits beside the
//! database: it is deleted when free space falls below half the watermark,
//! giving its room to delivery, and written again once there is room for it.
//!
//! [`Space::check`] is one look (the daemon calls it every
//! [`CHECK_EVERY`]); it returns what changed, for the caller to log and act
//! on. Ingest reads [`Space::ingest_refused`], an atomic. Not here: what to
//! purge (`ops`), readiness and metrics (`admin`).

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

/// How often the daemon looks. Ingest can overshoot the watermark by what it
/// writes in this time; `store.min_free_bytes` should be far larger.
pub const CHECK_EVERY: Duration = Duration::from_millis(50);

/// What one look changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Free space fell below the watermark: ingest is refused from now on.
    IngestStopped { free: u64 },
    /// Free space is back above the watermark (with a margin): ingest resumes.
    IngestResumed { free: u64 },
    /// The reserve file was deleted to give delivery room.
    ReserveReleased { free: u64 },
    /// The reserve file was written again.
    ReserveRestored { free: u64 },
}

/// The store's file system as last seen, and the reserve file.
#[derive(Debug)]
pub struct Space {
    /// A path on the file system (the database's directory).
    dir: PathBuf,
    reserve_path: PathBuf,
    min_free: u64,
    reserve_bytes: u64,
    free: AtomicU64,
    refused: AtomicBool,
    reserve_present: AtomicBool,
    /// Serialises looks (the check loop and start-up): a reserve file is
    /// written or deleted by one of them at a time.
    looking: Mutex<()>,
}

/// "disk full: …", as readiness, STATUS and ingest's 503 say it.
pub fn disk_full_text(space: &Space) -> String {
    format!(
        "disk full: {} bytes free on the database's file system, below store.min_free_bytes ({})",
        space.free(),
        space.min_free()
    )
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

impl Space {
    /// For the database at `database`: the watermark and the reserve's size
    /// (0: none, and a reserve file left by an earlier configuration is
    /// removed). Nothing is measured until the first [`Space::check`].
    pub fn new(database: &Path, min_free: u64, reserve_bytes: u64) -> Space {
        let dir = match database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut reserve_path = database.as_os_str().to_owned();
        reserve_path.push(".reserve");
        let reserve_path = PathBuf::from(reserve_path);
        let space = Space {
            reserve_present: AtomicBool::new(reserve_size(&reserve_path) >= reserve_bytes.max(1)),
            dir,
            reserve_path,
            min_free,
            reserve_bytes,
            free: AtomicU64::new(u64::MAX),
            refused: AtomicBool::new(false),
            looking: Mutex::new(()),
        };
        if reserve_bytes == 0 {
            // A reserve left by an earlier configuration gives its room back.
            let _ = std::fs::remove_file(&space.reserve_path);
            space.reserve_present.store(false, Ordering::Relaxed);
        }
        space
    }

    /// Whether ingest must refuse for lack of room.
    pub fn ingest_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Free bytes at the last look.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// The watermark (`store.min_free_bytes`).
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Bytes the reserve file holds now (0 when released or not kept).
    pub fn reserve_held(&self) -> u64 {
        if self.reserve_present.load(Ordering::Relaxed) {
            self.reserve_bytes
        } else {
            0
        }
    }

    /// One look: measures free space, releases or restores the reserve, and
    /// stops or resumes ingest. Returns what changed, in that order. A file
    /// system that cannot be measured changes nothing.
    pub fn check(&self) -> Vec<Change> {
        let _looking = self
            .looking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut changes = Vec::new();
        let Ok(mut free) = free_bytes(&self.dir) else {
            return changes;
        };
        let present = self.reserve_present.load(Ordering::Relaxed);
        if self.reserve_bytes > 0 && present && free < self.min_free / 2 {
            if std::fs::remove_file(&self.reserve_path).is_ok() {
                self.reserve_present.store(false, Ordering::Relaxed);
                free = free_bytes(&self.dir).unwrap_or(free);
                changes.push(Change::ReserveReleased { free });
            }
        } else if self.reserve_bytes > 0
            && !present
            && free >= self.min_free + self.reserve_bytes + self.margin()
        {
            match write_reserve(&self.reserve_path, self.reserve_bytes) {
                Ok(()) => {
                    self.reserve_present.store(true, Ordering::Relaxed);
                    free = free_bytes(&self.dir).unwrap_or(free);
                    changes.push(Change::ReserveRestored { free });
                }
                Err(error) => {
                    let _ = std::fs::remove_file(&self.reserve_path);
                    tracing::debug!(%error, "Writing the reserve file failed; retrying later.");
                }
            }
        }
        self.free.store(free, Ordering::Relaxed);
        let refused = self.refused.load(Ordering::Relaxed);
        if !refused && free < self.min_free {
            self.refused.store(true, Ordering::Relaxed);
            changes.push(Change::IngestStopped { free });
        } else if refused && free >= self.min_free + self.margin() {
            self.refused.store(false, Ordering::Relaxed);
            changes.push(Change::IngestResumed { free });
        }
        changes
    }

    /// How far above the watermark free space must climb before ingest
    /// resumes (or the reserve is written back), so that one purge or one
    /// delivered batch does not flap it: an eighth of the watermark.
    fn margin(&self) -> u64 {
        self.min_free / 8
    }
}

/// The size of the reserve file at `path`; 0 when there is none.
fn reserve_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// Writes `bytes` zero bytes to `path` (real blocks, not a sparse file) and
/// syncs them.
fn write_reserve(path: &Path, bytes: u64) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut file = std::fs::File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let now = left.min(CHUNK as u64) as usize;
        file.write_all(&zeros[..now])?;
        left -= now as u64;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_written_when_there_is_room_and_given_back_when_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("ldbridge.db");
        let space = Space::new(&database, 1 << 20, 2 << 20);
        let changes = space.check();
        assert!(
            matches!(changes[..], [Change::ReserveRestored { .. }]),
            "{changes:?}"
        );
        let reserve = dir.path().join("ldbridge.db.reserve");
        assert_eq!(reserve_size(&reserve), 2 << 20);
        assert_eq!(space.reserve_held(), 2 << 20);
        assert!(!space.ingest_refused());
        assert!(space.free() > 0);
        // Not kept any more: removed at start.
        let space = Space::new(&database, 1 << 20, 0);
        assert!(!reserve.exists());
        assert_eq!(space.reserve_held(), 0);
    }

    #[test]
    fn a_watermark_above_the_free_space_refuses_ingest_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(&dir.path().join("ldbridge.db"), u64::MAX / 4, 0);
        assert!(matches!(space.check()[..], [Change::IngestStopped { .. }]));
        assert!(space.ingest_refused());
        // Still refused at the next look: no new change.
        assert!(space.check().is_empty());
    }
}
