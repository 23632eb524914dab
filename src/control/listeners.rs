//! Binding the `[[listen]]` sockets: one SO_REUSEPORT socket per worker per
//! listener, or the sockets a previous process handed over (binary upgrade).

use std::{
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
};

use crate::{accept, handoff::Passed};

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
    let mut bind_to = mine.first().map_or(configured, |p| p.bound);
    let workers = per_worker.len();
    let mut sockets = Vec::new();
    for p in mine {
        sockets.push(p.socket);
    }
    while sockets.len() < workers {
        let s = accept::bind(bind_to).map_err(|e| format!("cannot listen on {configured}: {e}"))?;
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

/// The admin socket: SO_REUSEPORT too, so a new process can bind it while
/// the old one still serves (the admin listener is not handed over).
pub fn bind_admin(addr: SocketAddr) -> Result<TcpListener, String> {
    let l = accept::bind(addr).map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?;
    l.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(l)
}
