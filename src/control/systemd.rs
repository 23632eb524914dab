//! systemd's readiness protocol (`sd_notify(3)`): when the service manager
//! set `NOTIFY_SOCKET`, one datagram per state change goes to that unix
//! socket — `READY=1` once every listener is bound, `RELOADING=1` with
//! `MONOTONIC_USEC` when a reload starts and `READY=1` after it (also after
//! a failed one: the old config keeps running), `STOPPING=1` at the stop
//! signal. Without `NOTIFY_SOCKET` every call does nothing.
#![forbid(unsafe_code)]

use std::os::{
    linux::net::SocketAddrExt,
    unix::net::{SocketAddr, UnixDatagram},
};

use nix::time::{clock_gettime, ClockId};

/// The socket systemd listens on, from `NOTIFY_SOCKET`: a path, or an
/// abstract name written with a leading `@` (as systemd passes it).
fn target() -> Option<Result<SocketAddr, String>> {
    let value = std::env::var_os("NOTIFY_SOCKET")?;
    let value = value.to_string_lossy().into_owned();
    let addr = match value.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None if value.starts_with('/') => SocketAddr::from_pathname(&value),
        None => {
            let why = "is neither a path nor an abstract socket (@name)";
            return Some(Err(format!("NOTIFY_SOCKET={value} {why}")));
        }
    };
    Some(addr.map_err(|e| format!("NOTIFY_SOCKET={value}: {e}")))
}

/// Sends `state` (newline-separated `KEY=value` lines) to systemd; a
/// failure is logged, never fatal: the proxy serves either way.
pub fn notify(state: &str) {
    let Some(addr) = target() else { return };
    let sent = addr.and_then(|addr| {
        let socket = UnixDatagram::unbound().map_err(|e| format!("cannot make a socket: {e}"))?;
        socket
            .send_to_addr(state.as_bytes(), &addr)
            .map_err(|e| format!("cannot send to NOTIFY_SOCKET: {e}"))
    });
    if let Err(e) = sent {
        let first = state.lines().next().unwrap_or_default();
        crate::warn!("systemd notify {first}: {e}");
    }
}

/// Every listener is bound and every worker runs. After a binary upgrade
/// the new process also names itself the service's main process (systemd
/// accepts that with `NotifyAccess=all`).
pub fn ready(took_over: bool) {
    match took_over {
        true => notify(&format!("MAINPID={}\nREADY=1", std::process::id())),
        false => notify("READY=1"),
    }
}

/// A reload starts: systemd wants the CLOCK_MONOTONIC time with it, so it
/// can tell this reload's `READY=1` from an earlier one.
pub fn reloading() {
    let usec = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// The stop signal arrived: draining starts.
pub fn stopping() {
    notify("STOPPING=1");
}
