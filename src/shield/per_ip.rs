//! `limits.max_connections_per_ip`: the open client connections of each
//! address, counted for the whole process.
//!
//! Connections of one address land on any worker (SO_REUSEPORT hashes the
//! source port too), so the count is shared: one process-wide table, split
//! in `SHARDS` locks so that workers admitting different addresses rarely
//! meet on one. It is touched twice per connection (at accept and at
//! close), never per request, and only while the limit is on. A `Slot`
//! holds one connection's place and gives it back when dropped, however
//! the connection ends; an address at 0 leaves the table, so its size is
//! bounded by the open connections. Being a `static`, the table outlives
//! reloads: connections admitted under one config stay counted under the
//! next.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{LazyLock, Mutex, MutexGuard},
};

/// Locks the table is split into: a power of two well above the worker
/// count of a large machine, so two workers rarely wait on one another.
const SHARDS: usize = 64;

struct Table {
    /// Keyed per process, so no client can pick addresses that all fall in
    /// one shard or one hash chain.
    hasher: RandomState,
    shards: [Mutex<HashMap<IpAddr, u32, RandomState>>; SHARDS],
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let hasher = RandomState::new();
    Table {
        shards: std::array::from_fn(|_| Mutex::new(HashMap::with_hasher(hasher.clone()))),
        hasher,
    }
});

impl Table {
    fn shard(&self, ip: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, u32, RandomState>> {
        let i = self.hasher.hash_one(ip) as usize % SHARDS;
        // A panic while the lock is held cannot leave a count half-written
        // (each change is one store), so a poisoned lock is used as is.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One admitted connection's place in its address's count.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
}

/// Takes a place for one more connection from `ip` if fewer than `max`
/// are open, else says how many are (`Err(open)`). `ip` is the canonical
/// client address (`nets::canonical`).
pub fn admit(ip: IpAddr, max: u32) -> Result<Slot, u32> {
    let mut shard = TABLE.shard(ip);
    let open = shard.entry(ip).or_insert(0);
    if *open >= max {
        let n = *open;
        if n == 0 {
            // `max` is 0: nothing was taken, leave no entry behind.
            shard.remove(&ip);
        }
        return Err(n);
    }
    *open += 1;
    Ok(Slot { ip })
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut shard = TABLE.shard(self.ip);
        if let Some(open) = shard.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                shard.remove(&self.ip);
            }
        }
    }
}

/// Connections counted for `ip` now.
pub fn open(ip: IpAddr) -> u32 {
    TABLE.shard(ip).get(&ip).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The table is process-wide: each test uses addresses of its own.

    #[test]
    fn counts_up_to_the_limit_and_gives_back_on_drop() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let a = admit(ip, 2).unwrap();
        let b = admit(ip, 2).unwrap();
        assert_eq!(admit(ip, 2).unwrap_err(), 2);
        assert_eq!(open(ip), 2);
        drop(a);
        let c = admit(ip, 2).unwrap();
        drop((b, c));
        assert_eq!(open(ip), 0);
    }

    #[test]
    fn counts_across_threads_and_forgets_addresses_at_zero() {
        let ips: Vec<IpAddr> = (0..200u8)
            .map(|i| IpAddr::from([198, 51, 100, i]))
            .collect();
        let held: Vec<Vec<Slot>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| ips.iter().filter_map(|&ip| admit(ip, 3).ok()).collect()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        // Four workers, three places each: exactly three admitted per address.
        assert_eq!(held.iter().map(Vec::len).sum::<usize>(), 3 * ips.len());
        assert!(ips.iter().all(|&ip| open(ip) == 3));
        drop(held);
        assert!(ips.iter().all(|&ip| open(ip) == 0));
        assert!(ips.iter().all(|&ip| admit(ip, 0).is_err() && open(ip) == 0));
    }
}
