//! What the control plane tells a worker, and the worker's side of it.
//!
//! The control plane never touches a worker's state: it sends a message, and
//! the worker applies it between requests on its own thread.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, sync::mpsc};

use crate::{config::Config, log::Sink, stats::Snapshot};
use std::sync::{Arc, Mutex};

pub enum Control {
    /// Make a new config current (SIGHUP).
    Reload(Reload),
    /// Send this worker's counters (a `/metrics` scrape).
    Scrape(mpsc::Sender<Snapshot>),
}

pub struct Reload {
    pub config: Arc<Config>,
    /// New `[[listen]]` sockets for this worker: (configured address, socket).
    pub open: Vec<(SocketAddr, std::net::TcpListener)>,
    /// Configured addresses whose listeners close.
    pub close: Vec<SocketAddr>,
    /// The access-log sink of the new config.
    pub access: Option<Arc<Mutex<Sink>>>,
    /// Active-health verdicts of the new config (its checks run from now on).
    pub health: Arc<crate::control::health::Table>,
}
