//! `[[limit]]`: request-rate limits, one token bucket per key for the whole
//! process.
//!
//! Each bucket is kept as GCRA (the generic cell rate algorithm, one number
//! per key): its *theoretical arrival time* `tat`, the moment the bucket
//! would be full again. A request is allowed when `tat - now` leaves room
//! for one more token, and then moves `tat` on by one emission interval
//! (`1 / rate`). That is a token bucket of `burst` tokens that starts full,
//! in 8 bytes, and "full again" is simply `tat <= now`, so a full bucket
//! and an absent key are the same thing: idle keys are swept away.
//!
//! The table is shared by every worker (an `Arc` inside the config
//! generation), so N requests of one key count as N whichever workers serve
//! them. It is split into [`SHARDS`] shards by key hash, each behind its own
//! `Mutex` held for one hash-map lookup: two workers meet on a lock only
//! when their keys share a shard at the same instant. Steering each client
//! address to one worker (a reuseport BPF program) would need no lock, but a
//! header key cannot be steered at accept, and one heavy address or a NAT
//! would load a single core.

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Shards of one limit's table: 64 keeps two or a few dozen workers off
/// each other's locks, for 64 small maps.
pub const SHARDS: usize = 64;
/// Most live keys one shard holds: 262,144 keys per limit in all, about
/// 9 MiB (a map entry is 16 bytes plus hash-map slack). A key counts as live
/// until its bucket is full again.
pub const SHARD_CAP: usize = 4096;
/// A shard drops its full-again buckets at most this often, on the path of
/// a request that adds a key (the sweep walks the whole shard).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a limit keys its buckets on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The client address.
    Ip,
    /// The first value of this header (lowercase name); the client address
    /// when the request has none.
    Header(String),
}

/// One `[[limit]]`, compiled: its settings and its shared table.
#[derive(Clone)]
pub struct Limit {
    pub name: String,
    pub key: Key,
    /// The answer over the limit (429 unless `status` says otherwise).
    pub status: u16,
    table: Arc<Table>,
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("status", &self.status)
            .field("interval", &self.table.interval)
            .field("burst", &self.table.burst)
            .finish()
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit: try again in this many whole seconds (at least 1).
    Refuse {
        retry_after: u32,
    },
}

impl Limit {
    /// `count` requests every `period`, with a bucket of `burst` (at
    /// least 1) tokens that starts full.
    pub fn new(
        name: &str,
        key: Key,
        status: u16,
        count: u64,
        period: Duration,
        burst: u64,
    ) -> Self {
        let interval = period.as_nanos() as u64 / count.max(1);
        Limit {
            name: name.to_string(),
            key,
            status,
            table: Arc::new(Table::new(interval.max(1), burst.max(1))),
        }
    }

    /// Takes one token from the bucket of this request's key.
    /// `header` finds a header's first value by lowercase name.
    pub fn check<'h>(
        &self,
        peer: IpAddr,
        header: impl FnOnce(&str) -> Option<&'h [u8]>,
    ) -> Verdict {
        let value = match &self.key {
            Key::Ip => None,
            Key::Header(name) => header(name),
        };
        let hash = match value {
            Some(v) => self.table.hash(1, v),
            None => match crate::shield::nets::canonical(peer) {
                IpAddr::V4(a) => self.table.hash(0, &a.octets()),
                IpAddr::V6(a) => self.table.hash(0, &a.octets()),
            },
        };
        self.table.take(hash, self.table.now())
    }

    /// Live keys in the table (tests and the bench).
    pub fn keys(&self) -> usize {
        self.table.len()
    }

    /// `check` with a given key hash and time: the bench's entry point.
    pub fn take_at(&self, hash: u64, now: u64) -> Verdict {
        self.table.take(hash, now)
    }
}

/// The buckets of one limit: key hash → `tat`, in nanoseconds since
/// `epoch`.
struct Table {
    /// Nanoseconds per token (`1 / rate`).
    interval: u64,
    burst: u64,
    /// Keyed (SipHash with a random key), so that a client cannot choose
    /// header values that pile into one shard.
    hasher: RandomState,
    epoch: Instant,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    /// Key hash → theoretical arrival time. The key is already a keyed
    /// hash, so the map does not hash it again.
    buckets: HashMap<u64, u64, BuildHasherDefault<Identity>>,
    /// When the shard last dropped its full-again buckets.
    swept: u64,
}

impl Table {
    fn new(interval: u64, burst: u64) -> Self {
        Table {
            interval,
            burst,
            hasher: RandomState::new(),
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn hash(&self, kind: u8, bytes: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(kind);
        h.write(bytes);
        h.finish()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// GCRA: allowed while the bucket, after this request, is not past
    /// full (`tat - now` at most `(burst - 1) × interval` before it).
    fn take(&self, hash: u64, now: u64) -> Verdict {
        // The middle bits pick the shard: the map uses the low bits for the
        // slot and the top ones for its tag, so both stay spread.
        let shard = &self.shards[(hash >> 32) as usize % SHARDS];
        // A panic while holding the lock leaves a consistent map (every
        // write is one insert), so a poisoned lock is used as it is.
        let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
        let room = (self.burst - 1).saturating_mul(self.interval);
        let tat = match s.buckets.get(&hash) {
            Some(&tat) => tat.max(now),
            None => {
                if s.buckets.len() >= SHARD_CAP && !s.sweep(now) {
                    // Full of live buckets: the new key is refused, as
                    // nginx answers when its limit_req zone is full, so
                    // neither memory nor the limit gives way.
                    return Verdict::Refuse { retry_after: 1 };
                }
                now
            }
        };
        let ahead = tat - now;
        if ahead > room {
            let wait = ahead - room;
            let secs = wait.div_ceil(1_000_000_000).max(1);
            return Verdict::Refuse {
                retry_after: u32::try_from(secs).unwrap_or(u32::MAX),
            };
        }
        s.buckets.insert(hash, tat + self.interval);
        if now.saturating_sub(s.swept) >= SWEEP_EVERY.as_nanos() as u64 {
            s.sweep(now);
        }
        Verdict::Allow
    }

    fn len(&self) -> usize {
        (self.shards.iter())
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).buckets.len())
            .sum()
    }
}

impl Shard {
    /// Drops the buckets that are full again (no more than once every
    /// [`SWEEP_EVERY`]); returns whether the shard has room for a key.
    fn sweep(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.swept) >= SWEEP_EVERY.as_nanos() as u64 || self.swept == 0 {
            self.buckets.retain(|_, tat| *tat > now);
            // Gives memory back after a flood of keys has gone.
            if self.buckets.capacity() > 4 * self.buckets.len().max(64) {
                self.buckets.shrink_to_fit();
            }
            self.swept = now;
        }
        self.buckets.len() < SHARD_CAP
    }
}

/// The hash of an already-hashed key: the key itself.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limit(per_minute: u64, burst: u64) -> Limit {
        let m = Duration::from_secs(60);
        Limit::new("t", Key::Ip, 429, per_minute, m, burst)
    }

    #[test]
    fn a_full_bucket_allows_burst_then_refuses_until_a_token_comes_back() {
        let l = limit(60, 3);
        for _ in 0..3 {
            assert_eq!(l.take_at(7, 10 * SEC), Verdict::Allow);
        }
        assert_eq!(l.take_at(7, 10 * SEC), Verdict::Refuse { retry_after: 1 });
        // Another key has its own bucket.
        assert_eq!(l.take_at(8, 10 * SEC), Verdict::Allow);
        // One second later one token is back (60 per minute).
        assert_eq!(l.take_at(7, 11 * SEC), Verdict::Allow);
        assert!(matches!(l.take_at(7, 11 * SEC), Verdict::Refuse { .. }));
    }

    #[test]
    fn retry_after_is_whole_seconds_until_the_next_token() {
        let l = limit(1, 2);
        assert_eq!(l.take_at(1, 5 * SEC), Verdict::Allow);
        assert_eq!(l.take_at(1, 5 * SEC), Verdict::Allow);
        assert_eq!(l.take_at(1, 5 * SEC), Verdict::Refuse { retry_after: 60 });
        assert_eq!(
            l.take_at(1, 5 * SEC + SEC / 2),
            Verdict::Refuse { retry_after: 60 }
        );
        assert_eq!(
            l.take_at(1, 64 * SEC + 1),
            Verdict::Refuse { retry_after: 1 }
        );
        assert_eq!(l.take_at(1, 65 * SEC), Verdict::Allow);
    }

    #[test]
    fn full_again_buckets_are_swept_and_a_full_shard_refuses_new_keys() {
        let l = limit(60, 1);
        // Every key lands in shard 0 (bits 32.. are zero).
        for k in 0..SHARD_CAP as u64 {
            assert_eq!(l.take_at(k, 2 * SEC), Verdict::Allow);
        }
        assert_eq!(l.keys(), SHARD_CAP);
        let new = SHARD_CAP as u64;
        assert_eq!(l.take_at(new, 2 * SEC), Verdict::Refuse { retry_after: 1 });
        // A token's time later every bucket is full again: swept.
        assert_eq!(l.take_at(new, 4 * SEC), Verdict::Allow);
        assert_eq!(l.keys(), 1);
    }
}
