//! The sd_notify protocol, spoken directly: a datagram to `$NOTIFY_SOCKET`
//! (a path, or an abstract socket written `@name`). Without that variable
//! every call does nothing, so ldbridge runs the same outside systemd.
//!
//! Owns the socket and the watchdog interval systemd asks for; what to say
//! and when is `daemon`'s business.

use std::{
    os::{
        linux::net::SocketAddrExt,
        unix::{
            ffi::OsStrExt,
            net::{SocketAddr, UnixDatagram},
        },
    },
    time::Duration,
};

/// Where to send notifications, if systemd asked for them.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`. A missing or unusable socket disables
    /// notifications (with a warning when it was set but unusable).
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let bytes = path.as_bytes();
        let address = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
            _ => SocketAddr::from_pathname(&path),
        };
        match (UnixDatagram::unbound(), address) {
            (Ok(socket), Ok(address)) => Notifier {
                target: Some((socket, address)),
            },
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "NOTIFY_SOCKET is set but unusable; not notifying systemd.");
                Notifier { target: None }
            }
        }
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (e.g. `READY=1\nSTATUS=…`). Failures are logged at
    /// debug level only: notification is best effort by design.
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.target {
            if let Err(error) = socket.send_to_addr(state.as_bytes(), address) {
                tracing::debug!(%error, "sd_notify send failed.");
            }
        }
    }
}

/// Half of `$WATCHDOG_USEC`, when systemd set a watchdog for this process
/// (`$WATCHDOG_PID`, if present, must be ours). `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}
