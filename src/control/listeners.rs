//! Binding the `[[listen]]` sockets: one SO_REUSEPORT socket per worker per
//! listener, or the sockets a previous process handed over (binary upgrade).
#![forbid(unsafe_code)]

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{accept, control::handoff::Passed};

/// Sockets for one `[[listen]]`, per worker, as (configured address, socket).
pub type PerWorker = Vec<Vec<(SocketAddr, TcpListener)>>;

/// Every listening socket the process has (dup'd), for the next hand-off.
pub type Kept = Arc<Mutex<Vec<Passed>>>;

/// Binds (or takes from `inherited`) the sockets of `configured` for
/// `workers` workers; returns the bound address. Inherited sockets for this
/// address are used first; more workers than inherited sockets bind more
/// (SO_REUSEPORT); more inherited sockets than workers are shared out.
pub fn bind_one(
    configured: SocketAddr,
    per_worker: &mut PerWorker,
    inherited: &mut Vec<Passed>,
    kept: &Kept,
) -> Result<SocketAddr, String> {
    let mut mine = Vec::new();
    let mut i = 0;
    while i < inherited.len() {
        if inherited[i].configured == configured {
            mine.push(inherited.remove(i));
        } else {
            i += 1;
        }
    }
    if mine.is_empty() {
        ensure_free(configured, kept)?;
    }
    let mut bind_to = mine.first().map_or(configured, |p| p.bound);
    let workers = per_worker.len();
    let mut sockets = Vec::new();
    for p in mine {
        sockets.push(p.socket);
    }
    while sockets.len() < workers {
        let s = accept::bind(bind_to).map_err(|e| super::privdrop::bind_error(configured, &e))?;
        bind_to = s.local_addr().map_err(|e| e.to_string())?;
        sockets.push(s);
    }
    let mut kept = kept
        .lock()
        .map_err(|_| "listener list poisoned".to_string())?;
    for (n, s) in sockets.into_iter().enumerate() {
        let copy = s
            .try_clone()
            .map_err(|e| format!("cannot dup a listener: {e}"))?;
        kept.push(Passed {
            configured,
            bound: bind_to,
            socket: copy,
        });
        per_worker[n % workers].push((configured, s));
    }
    Ok(bind_to)
}

/// Sets each listener's `defer_accept` on all its sockets (the kept copies
/// share them with the workers'): at start, and at every reload, where it
/// may turn either way.
pub fn defer(kept: &Kept, listeners: &[crate::config::Listener]) -> Result<(), String> {
    let kept = kept
        .lock()
        .map_err(|_| "listener list poisoned".to_string())?;
    for l in listeners {
        for p in kept.iter().filter(|p| p.configured == l.address) {
            accept::defer(&p.socket, l.defer_accept)
                .map_err(|e| format!("{}: cannot set defer_accept: {e}", l.address))?;
        }
    }
    Ok(())
}

/// Forgets the kept copies of a closed listener.
pub fn forget(kept: &Kept, configured: SocketAddr) {
    if let Ok(mut k) = kept.lock() {
        k.retain(|p| p.configured != configured);
    }
}

/// Copies of the kept sockets, for a hand-off.
pub fn copies(kept: &Kept) -> Vec<Passed> {
    let Ok(k) = kept.lock() else {
        return Vec::new();
    };
    k.iter()
        .filter_map(|p| {
            Some(Passed {
                configured: p.configured,
                bound: p.bound,
                socket: p.socket.try_clone().ok()?,
            })
        })
        .collect()
}

/// The admin socket: SO_REUSEPORT too, so that in a binary upgrade
/// (`upgrading`) the new process binds it while the old one still serves
/// (the admin listener is not handed over). Otherwise another process
/// listening there is an error, as for `bind_one`.
pub fn bind_admin(addr: SocketAddr, upgrading: bool) -> Result<TcpListener, String> {
    if !upgrading {
        ensure_free(addr, &Kept::default()).map_err(|e| format!("{e} (admin)"))?;
    }
    let l = accept::bind(addr).map_err(|e| super::privdrop::bind_error(addr, &e) + " (admin)")?;
    l.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(l)
}

/// Refuses `addr` when another process already listens there. ringside's
/// sockets use SO_REUSEPORT, which would let it bind the address beside that
/// process (same user) and silently take part of its connections; a probe
/// socket without SO_REUSEPORT fails with `EADDRINUSE` while any socket
/// listens on the address (SO_REUSEADDR lets it ignore TIME_WAIT leftovers).
/// A listener of this process that overlaps `addr` (a reload that moves
/// from 0.0.0.0:P to 127.0.0.1:P) is not another process: the probe cannot
/// tell them apart, so the bind goes ahead as before. Port 0 is always free.
fn ensure_free(addr: SocketAddr, kept: &Kept) -> Result<(), String> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = || -> std::io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())
    };
    match probe() {
        Err(e) if e.kind() == ErrorKind::AddrInUse && !holds_overlapping(kept, addr) => {
            Err(format!(
                "cannot listen on {addr}: another process already listens there \
             (only a binary upgrade, --upgrade-socket, shares listeners)"
            ))
        }
        // Any other failure shows again, with its reason, at the real bind.
        _ => Ok(()),
    }
}

/// Whether this process already listens on a socket that takes `addr`'s
/// port on `addr`'s address (the same address, or a wildcard of its family).
fn holds_overlapping(kept: &Kept, addr: SocketAddr) -> bool {
    let Ok(k) = kept.lock() else { return false };
    k.iter().any(|p| {
        let b = p.bound;
        b.port() == addr.port()
            && (b.ip() == addr.ip()
                || (b.is_ipv4() == addr.is_ipv4()
                    && (b.ip().is_unspecified() || addr.ip().is_unspecified())))
    })
}
