//! Passive health, per worker: `max_fails` failed attempts on a server
//! within `fail_timeout` (counted from the first of them) take it out of
//! rotation for `fail_timeout`. A failed attempt is a connect error or
//! whatever makes ringside answer 502/504 (the upstream closed, timed out
//! or answered something that is not HTTP); an upstream's own 5xx answer
//! is an answer, not a failure.
//!
//! After `fail_timeout` the server is tried again with a clean count. An
//! upstream with a single server never skips it (nginx does the same: there
//! would be nothing to send the request to instead).

use std::{cell::Cell, time::Duration, time::Instant};

#[derive(Default)]
struct Server {
    fails: Cell<u32>,
    /// When the first failure of the current count happened.
    since: Cell<Option<Instant>>,
    /// Skipped until then.
    out_until: Cell<Option<Instant>>,
}

pub struct Passive {
    max_fails: u32,
    fail_timeout: Duration,
    servers: Box<[Server]>,
    /// Servers with `out_until` set (some may have come back unnoticed).
    out: Cell<usize>,
}

impl Passive {
    /// `max_fails` 0 turns it off, as does a single server.
    pub fn new(servers: usize, max_fails: u32, fail_timeout: Duration) -> Self {
        let on = max_fails > 0 && servers > 1 && !fail_timeout.is_zero();
        Passive {
            max_fails: if on { max_fails } else { 0 },
            fail_timeout,
            servers: (0..servers).map(|_| Server::default()).collect(),
            out: Cell::new(0),
        }
    }

    /// No server is (or may still be) skipped: picks need not ask.
    pub fn none_out(&self) -> bool {
        self.out.get() == 0
    }

    /// Whether server `i` is being skipped. Reads the clock only for a server
    /// that was taken out.
    pub fn skips(&self, i: usize) -> bool {
        let s = &self.servers[i];
        match s.out_until.get() {
            None => false,
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                s.out_until.set(None);
                self.out.set(self.out.get() - 1);
                false
            }
        }
    }

    /// Counts a failed attempt on server `i`; true when this one took it out.
    pub fn failed(&self, i: usize, now: Instant) -> bool {
        if self.max_fails == 0 {
            return false;
        }
        let s = &self.servers[i];
        let fresh = s
            .since
            .get()
            .is_none_or(|t| now.saturating_duration_since(t) >= self.fail_timeout);
        if fresh {
            s.since.set(Some(now));
            s.fails.set(0);
        }
        s.fails.set(s.fails.get() + 1);
        if s.fails.get() < self.max_fails {
            return false;
        }
        s.fails.set(0);
        s.since.set(None);
        if s.out_until.replace(Some(now + self.fail_timeout)).is_none() {
            self.out.set(self.out.get() + 1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn max_fails_within_fail_timeout_takes_a_server_out() {
        let p = Passive::new(3, 2, T);
        let t0 = Instant::now();
        assert!(!p.failed(1, t0));
        assert!(!p.skips(1));
        assert!(p.none_out());
        assert!(p.failed(1, t0 + Duration::from_secs(1)));
        assert!(p.skips(1) && !p.none_out());
        assert!(!p.skips(0) && !p.skips(2));
    }

    #[test]
    fn failures_further_apart_than_fail_timeout_do_not_add_up() {
        let p = Passive::new(2, 2, T);
        let t0 = Instant::now();
        assert!(!p.failed(0, t0));
        assert!(!p.failed(0, t0 + T));
        assert!(p.failed(0, t0 + T + Duration::from_secs(1)));
    }

    #[test]
    fn a_server_comes_back_after_fail_timeout() {
        let p = Passive::new(2, 1, Duration::from_millis(1));
        assert!(p.failed(0, Instant::now()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!p.skips(0));
        assert!(p.none_out());
    }

    #[test]
    fn single_server_and_zero_max_fails_never_skip() {
        let now = Instant::now();
        let one = Passive::new(1, 1, T);
        assert!(!one.failed(0, now) && !one.skips(0));
        let off = Passive::new(3, 0, T);
        assert!(!off.failed(0, now) && !off.skips(0));
    }
}
