//! Stage 1: the listeners. Every worker has its own SO_REUSEPORT socket per
//! `[[listen]]`, so the kernel spreads new connections across workers and no
//! accept is ever shared between cores.

use std::{io, net::SocketAddr, os::fd::AsRawFd, rc::Rc, time::Duration};

use monoio::{io::Canceller, net::TcpListener};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{conn, worker::Shard};

/// Listen backlog. The kernel caps it at `net.core.somaxconn` (4096 by
/// default since Linux 5.4); see tuning.md for raising both.
const BACKLOG: i32 = 65535;

/// What a connection needs to know about the listener that accepted it.
#[derive(Clone, Copy)]
pub struct Listen {
    /// The address as configured: finds this listener's settings (TLS,
    /// HSTS) in the current config snapshot.
    pub configured: SocketAddr,
    pub port: u16,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
}

/// Binds one SO_REUSEPORT listener. Port 0 is resolved by the first bind;
/// the caller passes the bound address for the sockets of other workers.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // Accepted sockets inherit TCP_NODELAY: responses go out as soon as
    // they are written.
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts until the stop channel closes, then drops the listener so new
/// connections are refused.
pub async fn run(
    listener: TcpListener,
    listen: Listen,
    shard: Rc<Shard>,
    stop: async_channel::Receiver<()>,
) {
    let listen = Rc::new(listen);
    let canceller = Canceller::new();
    let mut room = crate::idle::Room::default();
    loop {
        // At `max_connections`, close the longest-idle keep-alive
        // connection to admit the next one (as nginx); with none idle, new
        // connections wait in the backlog.
        let max = shard.gen().config.limits.max_connections;
        while max > 0 && shard.connections.get() >= max {
            room.make(shard.connections.get(), listener.as_raw_fd());
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_millis(5)) => {}
                _ = stop.recv() => return,
            }
        }
        let mut accept = std::pin::pin!(listener.cancelable_accept(canceller.handle()));
        let accepted = monoio::select! {
            r = &mut accept => r,
            _ = stop.recv() => {
                // Cancel, then take what the op returns: a connection the
                // kernel handed over meanwhile is served, not reset.
                let _ = canceller.cancel();
                if let Ok((stream, peer)) = accept.await {
                    monoio::spawn(conn::serve(stream, peer, listen, shard));
                }
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(conn::serve(stream, peer, listen.clone(), shard.clone()));
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the
                // connection stays in the backlog.
                crate::error!("worker {}: accept failed: {e}", shard.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
