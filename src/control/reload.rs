//! SIGHUP (reload) and SIGUSR1 (reopen logs) on the control plane.
//!
//! A reload parses and checks the new file here; an invalid file changes
//! nothing and is logged with every problem. A valid one is handed to each
//! worker as a read-only snapshot (`mailbox::Reload`), with sockets already
//! bound for new listeners, so a worker never does blocking work for it.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use super::{
    health::{Checks, Table},
    listeners,
};
use crate::{
    config::{Config, LogTarget},
    control::mailbox::{Control, Reload},
    log::{self, Sink},
};

/// What the control plane knows about the running proxy.
pub struct Running {
    pub path: PathBuf,
    /// The config in force, shared with the admin listener.
    pub config: Arc<Mutex<Arc<Config>>>,
    pub workers: Vec<async_channel::Sender<Control>>,
    pub access: Option<Arc<Mutex<Sink>>>,
    /// Copies of every listening socket, for a binary upgrade.
    pub kept: super::listeners::Kept,
    /// The active health checks of the config in force; replaced (and the
    /// old ones stopped) by a reload.
    pub checks: Checks,
    /// Their verdicts, shared with the admin listener.
    pub health: Arc<Mutex<Arc<Table>>>,
    /// The ACME thread of the config in force; restarted by a reload that
    /// changes `[acme]` or an ACME listener's names.
    pub acme: Option<crate::acme::Manager>,
}

impl Running {
    pub fn current(&self) -> Arc<Config> {
        match self.config.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn reload(&mut self) {
        let new = match super::start::load(&self.path) {
            Ok((c, warnings)) => {
                super::start::log_warnings(&warnings);
                Arc::new(c)
            }
            Err(problems) => {
                // Each problem on its own stamped line.
                for problem in problems.to_string().lines() {
                    crate::error!("reload failed, the running config stays: {problem}");
                }
                return;
            }
        };
        let old = self.current();
        match self.hand_over(&old, new.clone()) {
            Ok(()) => {
                if let Ok(mut c) = self.config.lock() {
                    *c = new;
                }
                crate::info!("reloaded {}", self.path.display());
            }
            Err(e) => crate::error!("reload failed, the running config stays: {e}"),
        }
    }

    /// Prepares what the workers need (sockets, log sinks), then sends it.
    /// Nothing is sent unless everything could be prepared.
    fn hand_over(&mut self, old: &Config, new: Arc<Config>) -> Result<(), String> {
        if new.runtime.account != old.runtime.account {
            return Err(
                "runtime.user / runtime.group changed: a reload cannot switch the \
                        account the process runs as; restart ringside for that"
                    .into(),
            );
        }
        let old_addrs: Vec<SocketAddr> = old.listeners.iter().map(|l| l.address).collect();
        let new_addrs: Vec<SocketAddr> = new.listeners.iter().map(|l| l.address).collect();
        let close: Vec<SocketAddr> = old_addrs
            .iter()
            .filter(|a| !new_addrs.contains(a))
            .copied()
            .collect();
        let mut open: listeners::PerWorker = self.workers.iter().map(|_| Vec::new()).collect();
        let added: Vec<SocketAddr> = new_addrs
            .iter()
            .filter(|a| !old_addrs.contains(a))
            .copied()
            .collect();
        let bound = added
            .iter()
            .try_for_each(|&addr| {
                listeners::bind_one(addr, &mut open, &mut Vec::new(), &self.kept).map(drop)
            })
            .and_then(|()| listeners::defer(&self.kept, &new.listeners));
        if let Err(e) = bound {
            for &a in &added {
                listeners::forget(&self.kept, a);
            }
            return Err(e);
        }
        let access = if new.log.access == old.log.access {
            self.access.clone()
        } else {
            Sink::open(&new.log.access)
                .map_err(|e| format!("cannot open the access log: {e}"))?
                .map(|s| Arc::new(Mutex::new(s)))
        };
        log::init_error_log(&new.log.error, new.log.level)
            .map_err(|e| format!("cannot open the error log: {e}"))?;
        // The new config's servers are probed from now on; dropping the old
        // checks stops theirs.
        let checks = Checks::start(&new).map_err(|e| format!("cannot start health checks: {e}"))?;
        for (tx, open) in self.workers.iter().zip(open) {
            let msg = Control::Reload(Reload {
                config: new.clone(),
                open,
                close: close.clone(),
                access: access.clone(),
                health: checks.table(),
            });
            if tx.try_send(msg).is_err() {
                crate::error!("reload: a worker is gone");
            }
        }
        for &a in &close {
            listeners::forget(&self.kept, a);
        }
        self.access = access;
        if let Ok(mut h) = self.health.lock() {
            *h = checks.table();
        }
        self.checks = checks;
        if !crate::acme::same_work(old, &new) {
            self.acme = None;
            self.acme = crate::acme::Manager::start(&new)?;
        }
        Ok(())
    }

    /// Re-opens log files after logrotate moved them (nginx's USR1).
    pub fn reopen_logs(&self) {
        let config = self.current();
        if let (LogTarget::File(path), Some(sink)) = (&config.log.access, &self.access) {
            match log::open_append(path) {
                Ok(f) => {
                    if let Ok(mut s) = sink.lock() {
                        *s = Sink::File(f);
                    }
                }
                Err(e) => crate::error!("cannot reopen the access log {}: {e}", path.display()),
            }
        }
        if let Err(e) = log::init_error_log(&config.log.error, config.log.level) {
            crate::error!("cannot reopen the error log: {e}");
        }
        crate::info!("log files reopened");
    }
}
