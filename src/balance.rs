//! Stage 3b: which server of an upstream gets the request.
//!
//! Every worker keeps its own balancer state (no cross-core traffic on the
//! request path), so the spread is exact per worker and close to exact
//! across workers.

use std::cell::Cell;

use crate::config::Server;

/// Smooth weighted round robin, as nginx does it: each pick adds every
/// server's weight to its current value, takes the largest, and subtracts the
/// total from the winner. Weights 3:2:1 give `a b a c b a`.
pub struct RoundRobin {
    current: Vec<Cell<i64>>,
}

impl RoundRobin {
    pub fn new(servers: usize) -> Self {
        RoundRobin {
            current: (0..servers).map(|_| Cell::new(0)).collect(),
        }
    }

    /// Picks among the servers for which `usable` holds: primaries first,
    /// backups only when no primary is usable.
    pub fn pick(&self, servers: &[Server], usable: impl Fn(usize) -> bool) -> Option<usize> {
        self.pick_among(servers, |i| !servers[i].backup && usable(i))
            .or_else(|| self.pick_among(servers, |i| servers[i].backup && usable(i)))
    }

    fn pick_among(&self, servers: &[Server], ok: impl Fn(usize) -> bool) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, s) in servers.iter().enumerate() {
            if !ok(i) {
                continue;
            }
            let w = i64::from(s.weight);
            let cur = self.current[i].get() + w;
            self.current[i].set(cur);
            total += w;
            if best.is_none_or(|b| cur > self.current[b].get()) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b].set(self.current[b].get() - total);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<Server> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Server {
                address: ([127, 0, 0, 1], 3000 + i as u16).into(),
                label: format!("s{i}"),
                weight,
                backup: false,
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_order_matches_nginx() {
        let s = servers(&[3, 2, 1]);
        let rr = RoundRobin::new(3);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&s, |_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn backups_only_when_no_primary() {
        let mut s = servers(&[1, 1]);
        s[1].backup = true;
        let rr = RoundRobin::new(2);
        assert_eq!(rr.pick(&s, |_| true), Some(0));
        assert_eq!(rr.pick(&s, |i| i != 0), Some(1));
        assert_eq!(rr.pick(&s, |_| false), None);
    }
}
