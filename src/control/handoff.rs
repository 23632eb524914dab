//! Zero-downtime binary upgrade: listening sockets passed over a Unix socket
//! (SCM_RIGHTS), as HAProxy and Pingora do.
//!
//! ```text
//! new process                          old process (serving)
//!   connect(PATH) ───── "TAKEOVER" ──►  sends every listening socket
//!   ◄── fds + "configured bound" lines   (keeps accepting meanwhile)
//!   starts its workers on those sockets
//!   prints its readiness line
//!   ──────────────── "READY" ──────────►  stops listening on PATH
//!   ◄─────────────── "BYE" ────────────   then drains and exits, as on SIGTERM
//!   binds PATH for the next upgrade
//! ```
//!
//! The sockets, and the connections waiting in their accept queues, are the
//! same kernel objects in both processes, so no connection attempt is ever
//! refused: until READY both processes accept from them. If the new process
//! dies before READY, the old one simply keeps serving.

use std::{
    io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Write},
    net::{SocketAddr, TcpListener},
    os::{
        fd::{AsRawFd, FromRawFd, RawFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most sockets one hand-off carries (the kernel's SCM_MAX_FD is 253).
const MAX_FDS: usize = 250;

/// How long either side waits for the other at each step.
const STEP: Duration = Duration::from_secs(10);

/// A listening socket with the address it was configured as and the one it
/// is bound to (they differ for port 0).
pub struct Passed {
    pub configured: SocketAddr,
    pub bound: SocketAddr,
    pub socket: TcpListener,
}

/// The new process's side: `None` when nothing listens on `path` (a first
/// start), else the old process's sockets and the link to tell it READY.
pub fn take_over(path: &Path) -> io::Result<Option<(Vec<Passed>, UnixStream)>> {
    let mut link = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    link.set_read_timeout(Some(STEP))?;
    link.write_all(b"TAKEOVER\n")?;
    let (fds, text) = receive(&link)?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != fds.len() {
        return Err(io::Error::other(
            "hand-off: fd count and address list differ",
        ));
    }
    let mut passed = Vec::with_capacity(fds.len());
    for (fd, line) in fds.into_iter().zip(lines) {
        // SAFETY: the kernel installed `fd` in this process for us with
        // SCM_RIGHTS; nothing else owns it, so TcpListener may take it.
        let socket = unsafe { TcpListener::from_raw_fd(fd) };
        let mut parts = line.split(' ');
        let parse = |p: Option<&str>| {
            p.and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other(format!("hand-off: bad line {line:?}")))
        };
        let configured = parse(parts.next())?;
        let bound = parse(parts.next())?;
        socket.set_nonblocking(true)?;
        passed.push(Passed {
            configured,
            bound,
            socket,
        });
    }
    Ok(Some((passed, link)))
}

/// The new process is serving: tell the old one, wait for it to let go of
/// `path`, then listen there for the next upgrade.
pub fn finish(mut link: UnixStream, path: &Path) -> io::Result<UnixListener> {
    link.write_all(b"READY\n")?;
    let mut line = String::new();
    BufReader::new(&link).read_line(&mut line)?;
    if line.trim() != "BYE" {
        return Err(io::Error::other("hand-off: the old process did not let go"));
    }
    bind(path)
}

/// Listens on `path`, replacing a stale socket file.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// The old process's side, on its own thread: answers one TAKEOVER at a
/// time with `sockets()`; after READY, returns so the caller starts the
/// graceful stop. A hand-off that fails part-way leaves this process
/// serving and listening for the next attempt.
pub fn serve(listener: UnixListener, path: PathBuf, sockets: impl Fn() -> Vec<Passed>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        match hand_off(&conn, &sockets) {
            Ok(()) => {
                // The new process now owns `path`: leave the file alone.
                crate::info!(
                    "binary upgrade: handed the listeners over ({})",
                    path.display()
                );
                drop(listener);
                return;
            }
            Err(e) => crate::error!("binary upgrade failed, still serving: {e}"),
        }
    }
}

fn hand_off(conn: &UnixStream, sockets: &impl Fn() -> Vec<Passed>) -> io::Result<()> {
    conn.set_read_timeout(Some(STEP))?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != "TAKEOVER" {
        return Err(io::Error::other(format!("unexpected request {line:?}")));
    }
    let list = sockets();
    let text: String = list
        .iter()
        .map(|p| format!("{} {}\n", p.configured, p.bound))
        .collect();
    let fds: Vec<RawFd> = list.iter().map(|p| p.socket.as_raw_fd()).collect();
    send(conn, &fds, text.as_bytes())?;
    // The new process starts its workers; its READY ends our accepting.
    line.clear();
    conn.set_read_timeout(Some(STEP * 6))?;
    reader.read_line(&mut line)?;
    if line.trim() != "READY" {
        return Err(io::Error::other(
            "the new process stopped before it was ready",
        ));
    }
    (&*conn).write_all(b"BYE\n")?;
    Ok(())
}

fn send(conn: &UnixStream, fds: &[RawFd], text: &[u8]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(
            "too many listening sockets for one hand-off",
        ));
    }
    // Length-prefixed so the receiver knows when the text is complete.
    let len = (text.len() as u32).to_be_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(text)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    if sent != len.len() + text.len() {
        return Err(io::Error::other("hand-off message cut short"));
    }
    Ok(())
}

fn receive(conn: &UnixStream) -> io::Result<(Vec<RawFd>, String)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs() {
        if let ControlMessageOwned::ScmRights(v) = c {
            fds.extend(v);
        }
    }
    let n = msg.bytes;
    if n < 4 {
        return Err(io::Error::other("hand-off message too short"));
    }
    let want = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if n != 4 + want {
        return Err(io::Error::other("hand-off text cut short"));
    }
    let text = String::from_utf8_lossy(&buf[4..n]).into_owned();
    Ok((fds, text))
}
