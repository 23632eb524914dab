//! Stage 1, accept: one client connection, from the accept to the close.
//!
//! `serve` is the connection's long-lived task: the TLS handshake if its
//! listener has one (an `h2` connection then goes to `http2/`), then it
//! waits for readability holding no buffer (an idle keep-alive connection
//! costs a few hundred bytes) and runs `exchange::exchange` — boxed, so the
//! idle task stays small — for each request.

use std::{future::Future, net::SocketAddr, rc::Rc, sync::Arc};

use monoio::{io::AsyncWriteRent, net::TcpStream, time::Instant};

use crate::{
    exchange::exchange,
    request::Client,
    shard::{Listen, Shard},
    stream::ClientStream,
    unwind::CatchUnwind,
};

/// The connection's task. What can be known before it starts is settled
/// here, and the task is an `async move` block that uses what it captured
/// in place: an `async fn` keeps its arguments beside the locals its body
/// moves them into, and every idle connection would pay for both.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listen: Rc<Listen>,
    shard: Rc<Shard>,
) -> impl Future<Output = ()> {
    shard.connections.set(shard.connections.get() + 1);
    shard.stats.accepted(listen.stat);
    // The handshake and the first head must both be done within
    // client_header_timeout of the accept.
    let (acceptor, hsts, to_https, header_timeout) = {
        let gen = shard.gen();
        let timeout = gen.config.limits.client_header_timeout;
        match gen
            .config
            .listeners
            .iter()
            .find(|l| l.address == listen.configured)
        {
            Some(l) => (
                l.acceptor.clone(),
                l.hsts.as_deref().map(Arc::from),
                l.redirect_https,
                timeout,
            ),
            None => (None, None, false, timeout),
        }
    };
    let deadline = Instant::now() + header_timeout;
    let client = Client {
        stream: ClientStream::Plain(stream),
        peer: peer.ip().to_canonical(),
        buf: Vec::new(),
        hsts,
        to_https,
    };
    run(client, acceptor, listen, shard, deadline)
}

/// The connection's life: the TLS handshake if its listener has one, then
/// requests until it closes or idles out. Not an `async fn`, on purpose:
/// see `serve`.
#[allow(clippy::manual_async_fn)]
fn run(
    mut c: Client,
    acceptor: Option<Arc<rustls::ServerConfig>>,
    mut listen: Rc<Listen>,
    shard: Rc<Shard>,
    mut deadline: Instant,
) -> impl Future<Output = ()> {
    async move {
        // Until its first request is answered, a connection counts as
        // fresh: a graceful stop gives it a moment to send that request.
        let mut fresh = Some(shard.fresh());
        if let Some(config) = acceptor {
            let ClientStream::Plain(stream) =
                std::mem::replace(&mut c.stream, ClientStream::Closed)
            else {
                unreachable!("a connection starts as plain TCP");
            };
            // Boxed: the handshake's state (a timer and rustls' accept)
            // would otherwise sit inline in every connection's task, TLS or
            // not, for its whole life.
            let handshake = Box::pin(handshake(config, stream, deadline));
            let tls = handshake.await;
            shard.stats.handshake(listen.stat, tls.is_some());
            let Some(tls) = tls else {
                // A stalled, truncated or refused handshake: close, as
                // nginx does (rustls already sent the alert it owed).
                shard.connections.set(shard.connections.get() - 1);
                return;
            };
            listen = Rc::new(Listen {
                proto: "https",
                ..*listen
            });
            // The client chose HTTP/2 by ALPN: http2/ serves the connection.
            if tls.alpn_protocol() == Some(b"h2") {
                drop(fresh.take());
                let client = (c.peer, c.hsts.take(), c.to_https);
                let h2 = Box::pin(crate::http2::serve(
                    tls,
                    client,
                    listen,
                    shard.clone(),
                    deadline,
                ));
                h2.await;
                shard.connections.set(shard.connections.get() - 1);
                return;
            }
            c.stream = ClientStream::Tls(tls);
        }
        let mut first = true;
        loop {
            if c.buf.is_empty() {
                shard.heads.give(std::mem::take(&mut c.buf));
                // Each wait uses the config current when it starts (reload).
                let until = if first {
                    deadline
                } else {
                    crate::timer::later(shard.gen().config.limits.keepalive_timeout)
                };
                if !idle(&mut c.stream, until, !first).await {
                    // Idle too long, or the socket failed: close without a word.
                    break;
                }
            }
            if !first {
                deadline = crate::timer::later(shard.gen().config.limits.client_header_timeout);
            }
            first = false;
            let exchange = Box::pin(exchange(&mut c, &listen, &shard, deadline));
            let outcome = CatchUnwind(exchange).await;
            drop(fresh.take());
            match outcome {
                Ok(true) if !shard.draining.get() => {}
                Ok(_) => break,
                Err(()) => {
                    crate::error!(
                        "worker {}: request from {} panicked; connection closed",
                        shard.id,
                        c.peer
                    );
                    break;
                }
            }
        }
        shard.heads.give(std::mem::take(&mut c.buf));
        if c.stream.is_tls() {
            // close_notify, so a client can tell a close-delimited body
            // from a truncated one; bounded, as the peer may have stopped
            // reading. A peer already gone is fine: the socket closes next
            // either way. After a cancelled read or write the stream
            // refuses (tls/stream.rs) and nothing is sent; guarded like
            // every exchange all the same.
            let limit = shard.gen().config.limits.client_send_timeout;
            let close = Box::pin(monoio::time::timeout(limit, c.stream.shutdown()));
            let _ = CatchUnwind(close).await;
        }
        shard.connections.set(shard.connections.get() - 1);
    }
}

/// Waits, holding no buffer, until the client sends something (true) or
/// `until` passes, the socket fails or, for a keep-alive wait, the accept
/// loop evicts it to admit a new client (false).
async fn idle(stream: &mut ClientStream, until: Instant, keepalive: bool) -> bool {
    match stream {
        ClientStream::Plain(s) => monoio::select! {
            r = s.readable(false) => r.is_ok(),
            _ = crate::idle::until(until, keepalive) => false,
        },
        // Plaintext rustls already holds counts as ready too; no buffer is
        // held while waiting (tls/stream.rs). Boxed, as the handshake is:
        // inline, this wait's state would make every idle connection's task
        // larger, plain ones included.
        ClientStream::Tls(s) => {
            let wait = Box::pin(async {
                monoio::select! {
                    r = s.readable() => r.is_ok(),
                    _ = crate::idle::until(until, keepalive) => false,
                }
            });
            wait.await
        }
        // An HTTP/2 stream runs one exchange and never waits here; a stream
        // a tunnel took apart is over.
        ClientStream::H2(_) | ClientStream::Closed => false,
    }
}

/// The TLS handshake, bounded by the first head's deadline.
async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    deadline: Instant,
) -> Option<Box<crate::tls::TlsStream>> {
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, crate::tls::accept(config, stream)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        _ => None,
    }
}
