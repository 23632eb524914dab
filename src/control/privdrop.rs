//! `[runtime] user` / `group`: started as root, ringside binds its
//! listeners (and the admin listener), reads certificates, keys and error
//! pages, opens its log files and raises its limits, then runs as that
//! account, as nginx's `user` does — but for the whole process: the switch
//! happens before any worker or control thread is spawned, and glibc's
//! `setuid`/`setgid` apply to every thread of the process anyway. No
//! capability survives the switch from root to another uid.
//!
//! What stays out of reach afterwards is said where it shows: a reload that
//! adds a listener on a port below 1024, or reads a key only root may read,
//! fails with a line naming why, and the running config stays.
#![forbid(unsafe_code)]

use std::{ffi::CString, io, net::SocketAddr, path::Path};

use nix::unistd::{getegid, geteuid, initgroups, setgid, setuid, Gid, Uid};

use crate::config::{Account, Config, LogTarget};

/// Called before anything is bound: a `user` the process cannot switch to
/// is refused while nothing has started. Root can switch to anyone; a
/// process already running as the account (systemd's `User=`) has nothing
/// to switch.
pub fn precheck(account: Option<&Account>) -> Result<(), String> {
    let Some(a) = account else { return Ok(()) };
    let (euid, egid) = (geteuid().as_raw(), getegid().as_raw());
    if euid == 0 || (euid == a.uid && egid == a.gid) {
        return Ok(());
    }
    Err(format!(
        "runtime.user = \"{}\" needs ringside started as root to switch to it, \
         but it runs as uid {euid} gid {egid}: start it as root, or run it as that \
         account (systemd User=) with CAP_NET_BIND_SERVICE for ports below 1024",
        a.user
    ))
}

/// Switches the process to `account`; returns the line to log. The log
/// files opened so far are handed to the account first, so that SIGUSR1
/// can reopen them after the switch (as nginx chowns its logs).
pub fn switch(account: &Account, config: &Config) -> Result<String, String> {
    if geteuid().as_raw() != 0 {
        return Ok(format!("running as {} (uid {})", account.user, account.uid));
    }
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    for target in [&config.log.access, &config.log.error] {
        if let LogTarget::File(path) = target {
            hand_over(path, account)?;
        }
    }
    let name = CString::new(account.user.as_str())
        .map_err(|_| format!("runtime.user \"{}\" holds a NUL byte", account.user))?;
    // The account's supplementary groups, as a login (and nginx) gets them.
    initgroups(&name, gid)
        .map_err(|e| format!("cannot set the groups of {}: {e}", account.user))?;
    setgid(gid).map_err(|e| format!("cannot switch to gid {}: {e}", account.gid))?;
    setuid(uid).map_err(|e| format!("cannot switch to user {}: {e}", account.user))?;
    // A switch that could be undone did not drop anything.
    if account.uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err(format!(
            "switched to {} but root could be regained: refusing to run",
            account.user
        ));
    }
    let group = match &account.group {
        Some(name) => format!(" ({name})"),
        None => String::new(),
    };
    Ok(format!(
        "running as user {} (uid {}), gid {}{group}",
        account.user, account.uid, account.gid
    ))
}

/// Gives a log file created by root to the account, so that it can be
/// opened again after the switch.
fn hand_over(path: &Path, account: &Account) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid)).map_err(|e| {
        format!(
            "cannot give the log file {} to {}: {e}",
            path.display(),
            account.user
        )
    })
}

/// The error line for a listener that cannot be bound: a port below 1024
/// refused for lack of privilege says what would allow it.
pub fn bind_error(addr: SocketAddr, e: &io::Error) -> String {
    if e.kind() != io::ErrorKind::PermissionDenied || addr.port() >= 1024 {
        return format!("cannot listen on {addr}: {e}");
    }
    let uid = geteuid().as_raw();
    let why = match uid {
        0 => "even as root (a security module or seccomp refuses it)".to_string(),
        _ => format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE and this process runs as \
             uid {uid} (after [runtime] user, a restart binds it; under systemd: \
             AmbientCapabilities=CAP_NET_BIND_SERVICE)"
        ),
    };
    format!("cannot listen on {addr}: {e}: {why}")
}
