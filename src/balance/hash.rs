//! `ip_hash` and `uri_hash`: a consistent-hash ring with virtual nodes.
//!
//! Each server owns points on a 64-bit circle, placed by hashing its address,
//! so its points do not depend on the other servers: removing one of N
//! servers moves only the keys that were on its points (about 1/N of them),
//! and a server skipped for health hands its keys to the next points
//! clockwise, spread over the others, while every other key stays put.

use std::net::{IpAddr, SocketAddr};

/// Points per unit of weight. 160 (as ketama) keeps the spread of equally
/// weighted servers within about ±10% of their share.
const POINTS_PER_WEIGHT: u64 = 160;

/// Most points on one ring (weights are scaled down beyond it): 64 Ki points
/// are 768 KiB per worker at worst; 4 equal servers take 640.
const MAX_POINTS: u64 = 1 << 16;

/// A fast 64-bit hash for placing keys on the ring: 8 bytes per multiply,
/// then murmur3's finalizer so that every input bit moves every output bit.
/// Not keyed: the same key maps to the same server in every worker and
/// after every restart, which is the point of hashing.
pub fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    fmix64(h)
}

/// A bijective step (xorshift, then an odd multiplier).
fn mix(h: u64) -> u64 {
    (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// murmur3's 64-bit finalizer.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The full client address (all 16 bytes of IPv6, all 4 of IPv4: unlike
/// nginx's ip_hash, clients of one /24 are not lumped together).
pub fn ip(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(a) => hash(&a.octets()),
        IpAddr::V6(a) => hash(&a.octets()),
    }
}

/// A server's stable name for hashing: its address as `ip:port`.
pub fn server(addr: SocketAddr) -> u64 {
    hash(addr.to_string().as_bytes())
}

/// Points sorted by position; `owner[i]` is the server of `at[i]`.
pub struct Ring {
    at: Box<[u64]>,
    owner: Box<[u32]>,
}

impl Ring {
    /// A ring of `(server index, address, weight)`.
    pub fn new(members: &[(usize, SocketAddr, u32)]) -> Ring {
        let total: u64 = members.iter().map(|m| u64::from(m.2)).sum();
        let per = |w: u32| {
            let n = u64::from(w) * POINTS_PER_WEIGHT;
            if total * POINTS_PER_WEIGHT > MAX_POINTS {
                (n * MAX_POINTS / (total * POINTS_PER_WEIGHT)).max(1)
            } else {
                n
            }
        };
        let mut points: Vec<(u64, u32)> = Vec::new();
        for &(index, addr, weight) in members {
            let name = addr.to_string();
            let mut buf = Vec::with_capacity(name.len() + 8);
            for p in 0..per(weight) {
                buf.clear();
                buf.extend_from_slice(name.as_bytes());
                buf.push(b'#');
                buf.extend_from_slice(&p.to_le_bytes());
                points.push((hash(&buf), index as u32));
            }
        }
        // Ties (vanishingly rare) go to the lower index, the same in every worker.
        points.sort_unstable();
        Ring {
            at: points.iter().map(|p| p.0).collect(),
            owner: points.iter().map(|p| p.1).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The owner of the first point at or after `key` (clockwise) that `ok`
    /// accepts. The caller makes sure some member is ok, else this walks the
    /// whole ring to say `None`.
    pub fn pick(&self, key: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.at.len();
        let start = self.at.partition_point(|&p| p < key);
        (0..n)
            .map(|k| self.owner[(start + k) % n] as usize)
            .find(|&s| ok(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<(usize, SocketAddr, u32)> {
        (0..n)
            .map(|i| (i, SocketAddr::from(([10, 0, 0, 1], 3000 + i as u16)), 1))
            .collect()
    }

    fn owners(ring: &Ring, keys: usize, ok: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        (0..keys)
            .map(|k| {
                ring.pick(hash(format!("/item/{k}").as_bytes()), ok)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn equal_servers_get_about_equal_shares() {
        let ring = Ring::new(&members(8));
        let mut count = [0usize; 8];
        for s in owners(&ring, 80_000, |_| true) {
            count[s] += 1;
        }
        for c in count {
            assert!((7_000..13_000).contains(&c), "{count:?}");
        }
    }

    #[test]
    fn weights_scale_shares() {
        let mut m = members(2);
        m[0].2 = 3;
        let ring = Ring::new(&m);
        let heavy = owners(&ring, 40_000, |_| true)
            .iter()
            .filter(|&&s| s == 0)
            .count();
        assert!((27_000..33_000).contains(&heavy), "{heavy} of 40000");
    }

    #[test]
    fn removing_one_of_n_moves_only_its_keys() {
        let n = 10;
        let before = owners(&Ring::new(&members(n)), 20_000, |_| true);
        let mut fewer = members(n);
        fewer.remove(4);
        let after = owners(&Ring::new(&fewer), 20_000, |_| true);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Exactly the removed server's keys move, and they are about 1/N.
        assert!(before.iter().zip(&after).all(|(&a, &b)| a == b || a == 4));
        assert!((1_400..2_600).contains(&moved), "moved {moved} of 20000");
    }

    #[test]
    fn a_skipped_server_hands_its_keys_to_several_others() {
        let ring = Ring::new(&members(5));
        let all = owners(&ring, 10_000, |_| true);
        let without = owners(&ring, 10_000, |s| s != 2);
        let mut heirs = std::collections::HashSet::new();
        for (&a, &b) in all.iter().zip(&without) {
            if a == 2 {
                heirs.insert(b);
            } else {
                assert_eq!(a, b, "a key not on the skipped server moved");
            }
        }
        assert_eq!(heirs.len(), 4, "{heirs:?}");
        assert_eq!(ring.pick(1, |_| false), None);
    }

    #[test]
    fn huge_weights_are_capped() {
        let mut m = members(3);
        m[0].2 = 1_000_000;
        let ring = Ring::new(&m);
        assert!(ring.at.len() as u64 <= MAX_POINTS + 3);
        assert!(ring.owner.contains(&1) && ring.owner.contains(&2));
    }

    #[test]
    fn hash_spreads_short_keys() {
        // Consecutive small integers land evenly in the top bits.
        let mut buckets = [0u32; 16];
        for i in 0u32..64_000 {
            buckets[(hash(&i.to_le_bytes()) >> 60) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (3_600..4_400).contains(&b)),
            "{buckets:?}"
        );
        assert_ne!(hash(b""), hash(b"\0"));
        assert_ne!(hash(b"a"), hash(b"a\0"));
    }
}
