//! What both benchmarks share: the real release binary as a separate
//! process, found ready by its "ldbridge is ready." log line.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

/// The files of a database `ldbridge.db`: the database, the dedupe key
/// file beside it (from migration 0007 on) and their WALs.
#[allow(dead_code)] // not every benchmark measures the files
pub const DATABASE_FILES: [&str; 4] = [
    "ldbridge.db",
    "ldbridge.db-wal",
    "ldbridge.db-dedupe",
    "ldbridge.db-dedupe-wal",
];

/// A running `ldbridge serve`.
pub struct Daemon {
    pub child: Child,
    /// The ingest address it bound (`server.listen` may say port 0).
    pub addr: String,
    /// The admin address it bound, when the config has one.
    #[allow(dead_code)] // not every benchmark asks the admin listener
    pub admin: Option<String>,
}

impl Daemon {
    /// Starts `ldbridge --config <config> serve` (JSON logs, warnings only;
    /// the binary this build made, or `$BENCH_BINARY`)
    /// and waits up to 60 s for it to be ready.
    pub fn start(config: &Path) -> Daemon {
        // BENCH_BINARY runs another build (an A/B against a saved binary).
        let binary = std::env::var_os("BENCH_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_ldbridge").into());
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .arg("serve")
            .envs(crate::fixture::ENV)
            .env("LDBRIDGE_LOG", "warn,ldbridge::daemon=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if entry["message"] == "ldbridge is ready." {
                        let listen = entry["listen"].as_str().unwrap_or_default().to_owned();
                        let admin = entry["admin"]
                            .as_str()
                            .filter(|admin| *admin != "disabled")
                            .map(str::to_owned);
                        let _ = tx.send((listen, admin));
                    }
                }
            }
        });
        let (addr, admin) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("daemon ready");
        Daemon { child, addr, admin }
    }

    /// Peak resident memory so far (VmHWM), in MB.
    #[allow(dead_code)] // not every benchmark reports it
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    /// Resident memory now (VmRSS), in MB.
    #[allow(dead_code)] // not every benchmark reports it
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// A kB figure of `/proc/<pid>/status`, in MB (0 once the process is gone).
    fn status_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|line| line.starts_with(field))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// CPU time the daemon has used so far (user + system), in seconds:
    /// unlike wall-clock rates, not skewed by other load on the machine.
    #[allow(dead_code)] // used by one of the two benchmarks
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// Bytes the daemon has written to storage so far: `/proc/<pid>/io`'s
    /// `write_bytes` (every page it dirtied: WAL frames, checkpoints into the
    /// database file, the file growing) less `cancelled_write_bytes` (what a
    /// truncation dropped before it reached the disk).
    #[allow(dead_code)] // not every benchmark reports it
    pub fn written_bytes(&self) -> u64 {
        let io =
            std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        field("write_bytes:").saturating_sub(field("cancelled_write_bytes:"))
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// CPU time process `pid` has used so far (user + system), in seconds.
#[allow(dead_code)] // used by one of the two benchmarks
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |at: usize| {
        fields
            .get(at)
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
