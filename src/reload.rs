//! The reload handshake: `ldbridge reload` signals the daemon (SIGHUP) and
//! waits until it has applied, or rejected, the new file, so a script that
//! reloads and then uses a new key does not race it (systemd's
//! `ExecReload=` returns when the command does).
//!
//! The daemon keeps a status file beside its database
//! (`<database>.reload`, JSON): its pid and, for each reload, a generation
//! number with the result, written atomically (temporary file, rename).
//! Not here: what a reload applies (`daemon`, `config::diff`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// What the daemon last said about reloading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's process id.
    pub pid: u32,
    /// 0 at start, one more for every reload since.
    pub generation: u64,
    /// Whether the last reload (or the start) succeeded.
    pub ok: bool,
    /// What it applied, or why it was rejected; never a secret (config
    /// errors name keys, not values).
    pub message: String,
}

/// The status file of the daemon using `database`.
pub fn path(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(".reload");
    PathBuf::from(path)
}

/// Writes `status` for the daemon using `database`, atomically.
pub fn write(database: &Path, status: &Status) -> std::io::Result<()> {
    let path = path(database);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let text = serde_json::to_vec(status).map_err(std::io::Error::other)?;
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, &path)
}

/// The status the daemon using `database` last wrote.
pub fn read(database: &Path) -> std::io::Result<Status> {
    let text = std::fs::read(path(database))?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// Asks the daemon using `database` (or process `pid`) to reload, and waits
/// up to `timeout` for its answer. `Ok` with what it applied; `Err` with why
/// it was rejected, or why no answer came.
pub fn request(database: &Path, pid: Option<u32>, timeout: Duration) -> Result<String, String> {
    let before = read(database).map_err(|error| {
        format!(
            "no reload status at {} ({error}): is ldbridge serve running with this config?",
            path(database).display()
        )
    })?;
    let pid = pid.unwrap_or(before.pid);
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("{pid} is not a process id"))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(|error| format!("signalling process {pid}: {error}"))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(now) = read(database) {
            if now.pid == pid && now.generation > before.generation {
                return if now.ok {
                    Ok(now.message)
                } else {
                    Err(now.message)
                };
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "process {pid} did not answer the reload within {}",
                humantime::format_duration(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_round_trips_beside_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("ldbridge.db");
        assert!(read(&database).is_err());
        let status = Status {
            pid: 42,
            generation: 3,
            ok: false,
            message: "config: test.toml: line 2 (dispatch.max_in_flight): …".to_owned(),
        };
        write(&database, &status).unwrap();
        assert_eq!(read(&database).unwrap(), status);
        assert!(dir.path().join("ldbridge.db.reload").exists());
        assert!(!dir.path().join("ldbridge.db.reload.tmp").exists());
    }

    #[test]
    fn a_reload_with_no_daemon_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let error = request(&dir.path().join("ldbridge.db"), None, Duration::ZERO).unwrap_err();
        assert!(error.contains("is ldbridge serve running"), "{error}");
    }
}
