//! Stage 3, plan: which server of an upstream gets the request.
//!
//! A `Balancer` is one upstream's selection state in one worker: the
//! method's own state (round-robin positions, a hash ring, a random
//! generator), the requests in flight per server, passive-health counts and
//! sticky ids. Nothing in it is shared with another worker, so the request
//! path touches no other core's cache lines; the spread is exact per worker
//! and close to exact across workers. Active health (process-wide) arrives
//! as the caller's `usable` test.
//!
//! Every pick follows one order: the client's sticky server if it is
//! usable, else the method among usable primaries, else among usable
//! backups (a backup is left as soon as a primary is usable again).

mod hash;
mod load;
mod passive;
mod rr;

use std::{
    cell::Cell,
    net::{IpAddr, SocketAddr},
};

pub use hash::{hash, Ring};
pub use load::{least_conn, random_two, Rng, Weighted};
pub use passive::Passive;
pub use rr::RoundRobin;

use crate::config::{Balance, Upstream};

/// What a request brings to the pick, taken from its head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Key {
    /// `ip_hash`: the client address; `uri_hash`: the request target; else 0.
    pub hash: u64,
    /// The server id in the request's sticky cookie, if it has one.
    pub sticky: Option<u64>,
}

impl Key {
    /// The key of a request from `peer` for `target` to upstream `up`;
    /// `cookie` looks a cookie up by name in the request.
    pub fn new<'a>(
        up: &Upstream,
        peer: IpAddr,
        target: &[u8],
        cookie: impl FnOnce(&str) -> Option<&'a [u8]>,
    ) -> Key {
        Key {
            hash: match up.balance {
                Balance::IpHash => hash::ip(peer),
                Balance::UriHash => hash(target),
                _ => 0,
            },
            sticky: up
                .sticky
                .as_ref()
                .and_then(|s| cookie(&s.cookie))
                .and_then(parse_id),
        }
    }
}

/// Primaries or backups.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Primary = 0,
    Backup = 1,
}

enum Method {
    RoundRobin,
    LeastConn,
    /// One ring per tier.
    Hash([Ring; 2]),
    RandomTwo {
        rng: Rng,
        tiers: [Weighted; 2],
    },
}

/// One upstream's selection state in one worker.
pub struct Balancer {
    method: Method,
    tier: Box<[Tier]>,
    weights: Box<[u32]>,
    /// Smooth WRR positions: round_robin, and least_conn's tie-break.
    rr: RoundRobin,
    /// This worker's requests in flight, per server.
    active: Box<[Cell<u32>]>,
    pub passive: Passive,
    sticky: Option<Sticky>,
}

struct Sticky {
    cookie: String,
    /// Per server: the id its cookie carries.
    ids: Box<[u64]>,
}

impl Balancer {
    /// `seed` varies random_two's draws between workers.
    pub fn new(up: &Upstream, seed: u64) -> Self {
        let servers = &up.servers;
        let tier: Box<[Tier]> = servers
            .iter()
            .map(|s| {
                if s.backup {
                    Tier::Backup
                } else {
                    Tier::Primary
                }
            })
            .collect();
        let weights: Box<[u32]> = servers.iter().map(|s| s.weight).collect();
        let in_tier = |t: Tier| -> Vec<(usize, SocketAddr, u32)> {
            (servers.iter().enumerate())
                .filter(|(i, _)| tier[*i] == t)
                .map(|(i, s)| (i, s.address, s.weight))
                .collect()
        };
        let tiers = [Tier::Primary, Tier::Backup];
        let method = match up.balance {
            Balance::RoundRobin => Method::RoundRobin,
            Balance::LeastConn => Method::LeastConn,
            Balance::IpHash | Balance::UriHash => {
                Method::Hash(tiers.map(|t| Ring::new(&in_tier(t))))
            }
            Balance::RandomTwo => Method::RandomTwo {
                rng: Rng::new(hash(&seed.to_le_bytes())),
                tiers: tiers.map(|t| Weighted::new(in_tier(t).into_iter().map(|m| (m.0, m.2)))),
            },
        };
        Balancer {
            method,
            rr: RoundRobin::new(weights.iter().copied()),
            active: servers.iter().map(|_| Cell::new(0)).collect(),
            passive: Passive::new(servers.len(), up.max_fails, up.fail_timeout),
            sticky: up.sticky.as_ref().map(|s| Sticky {
                cookie: s.cookie.clone(),
                ids: servers.iter().map(|s| hash::server(s.address)).collect(),
            }),
            tier,
            weights,
        }
    }

    /// The server for `key` among those `usable` accepts and passive health
    /// does not skip; `None` when there is none.
    ///
    /// `all_usable` says `usable` holds for every server (no health verdict
    /// or earlier try rules one out), the usual case: with no server out
    /// for passive health either, the pick then tests no server at all.
    /// The health table's atomic loads keep the compiler from hoisting
    /// anything out of the per-server loop, so skipping it matters with
    /// many servers.
    pub fn pick(
        &self,
        key: &Key,
        all_usable: bool,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if all_usable && self.passive.none_out() {
            self.pick_among(key, &|_| true)
        } else {
            self.pick_among(key, &|i| usable(i) && !self.passive.skips(i))
        }
    }

    fn pick_among(&self, key: &Key, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        if let Some(s) = self.sticky_server(key, ok) {
            return Some(s);
        }
        self.pick_in(Tier::Primary, key, ok)
            .or_else(|| self.pick_in(Tier::Backup, key, ok))
    }

    fn pick_in(&self, t: Tier, key: &Key, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let ok = |i: usize| self.tier[i] == t && ok(i);
        match &self.method {
            Method::RoundRobin => self.rr.pick(ok),
            Method::LeastConn => least_conn(&self.active, &self.weights, &self.rr, ok),
            Method::Hash(rings) => {
                // The ring walk finds a usable server quickly unless none is
                // left, which this scan rules out first.
                let ring = &rings[t as usize];
                if ring.is_empty() || !(0..self.tier.len()).any(ok) {
                    return None;
                }
                ring.pick(key.hash, ok)
            }
            Method::RandomTwo { rng, tiers } => {
                random_two(&tiers[t as usize], &self.active, &self.weights, rng, ok)
            }
        }
    }

    /// The server the client's cookie names, if it may serve: usable, and
    /// not a backup while a primary is usable.
    fn sticky_server(&self, key: &Key, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let id = key.sticky?;
        let s = self.sticky.as_ref()?.ids.iter().position(|&x| x == id)?;
        let fits = ok(s)
            && (self.tier[s] == Tier::Primary
                || !(0..self.tier.len()).any(|i| self.tier[i] == Tier::Primary && ok(i)));
        fits.then_some(s)
    }

    /// The `Set-Cookie` value that pins the client to `server`, unless its
    /// cookie already does.
    pub fn set_cookie(&self, server: usize, key: &Key) -> Option<String> {
        let st = self.sticky.as_ref()?;
        let id = st.ids[server];
        (key.sticky != Some(id)).then(|| format!("{}={id:016x}; Path=/; HttpOnly", st.cookie))
    }

    /// Counts a request in flight to `server` until the guard drops.
    pub fn begin(&self, server: usize) -> Active<'_> {
        let c = &self.active[server];
        c.set(c.get() + 1);
        Active(c)
    }

    /// Requests in flight to `server` from this worker.
    pub fn active(&self, server: usize) -> u32 {
        self.active[server].get()
    }
}

/// A request in flight to one server (least_conn and random_two read these).
pub struct Active<'a>(&'a Cell<u32>);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A sticky cookie's value: 16 hex digits.
fn parse_id(v: &[u8]) -> Option<u64> {
    if v.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
}

#[cfg(test)]
mod tests;
