//! `least_conn` and `random_two`: choices by load, where load is the number
//! of requests this worker has in flight to a server, relative to its weight.
//! Each worker counts only its own requests (no cross-core traffic), as the
//! contract says.

use std::cell::Cell;

use super::rr::RoundRobin;

/// Whether `a` active requests on weight `wa` is less load than `b` on `wb`
/// (`a/wa < b/wb`, without division).
fn lighter(a: u32, wa: u32, b: u32, wb: u32) -> bool {
    u64::from(a) * u64::from(wb) < u64::from(b) * u64::from(wa)
}

/// The server with the fewest active requests per unit of weight among those
/// `ok` accepts; ties are broken by smooth weighted round robin among the
/// tied servers (as nginx), so an idle upstream still gets an even spread.
pub fn least_conn(
    active: &[Cell<u32>],
    weights: &[u32],
    rr: &RoundRobin,
    ok: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for i in (0..weights.len()).filter(|&i| ok(i)) {
        if best.is_none_or(|b| lighter(active[i].get(), weights[i], active[b].get(), weights[b])) {
            best = Some(i);
        }
    }
    let b = best?;
    let (load, weight) = (u64::from(active[b].get()), u64::from(weights[b]));
    // Tied: the same load per weight as the best.
    rr.pick(|i| ok(i) && u64::from(active[i].get()) * weight == load * u64::from(weights[i]))
}

/// A per-worker xorshift64* generator: fast, and good enough to pick servers.
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(Cell::new(seed | 1))
    }

    pub fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift (no modulo bias worth
    /// the name for n far below 2^32).
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next() >> 32) * u128::from(n)) >> 32) as u64
    }
}

/// The servers of one tier (primaries or backups) with their running weight
/// totals, for weighted random draws.
pub struct Weighted {
    members: Box<[usize]>,
    /// `upto[k]` = sum of the weights of members 0..=k.
    upto: Box<[u64]>,
}

impl Weighted {
    pub fn new(members: impl IntoIterator<Item = (usize, u32)>) -> Self {
        let mut sum = 0u64;
        let (members, upto): (Vec<usize>, Vec<u64>) = members
            .into_iter()
            .map(|(i, w)| {
                sum += u64::from(w);
                (i, sum)
            })
            .unzip();
        Weighted {
            members: members.into(),
            upto: upto.into(),
        }
    }

    /// A member drawn with probability proportional to its weight.
    fn draw(&self, rng: &Rng) -> usize {
        let total = self.upto.last().copied().unwrap_or(0);
        let r = rng.below(total);
        self.members[self.upto.partition_point(|&u| u <= r)]
    }
}

/// How many draws `random_two` makes before it stops hoping to land on a
/// usable server and scans the tier instead (only when most are out).
const DRAWS: usize = 8;

/// The less loaded of two servers drawn at random (by weight) among those
/// `ok` accepts ("the power of two choices": nearly as even as least_conn,
/// and it never herds every worker onto the same least-loaded server).
pub fn random_two(
    tier: &Weighted,
    active: &[Cell<u32>],
    weights: &[u32],
    rng: &Rng,
    ok: impl Fn(usize) -> bool,
) -> Option<usize> {
    if tier.members.is_empty() {
        return None;
    }
    let mut first: Option<usize> = None;
    for _ in 0..DRAWS {
        let s = tier.draw(rng);
        if !ok(s) || first == Some(s) {
            continue;
        }
        let Some(a) = first else {
            first = Some(s);
            continue;
        };
        let b = s;
        return Some(
            if lighter(active[b].get(), weights[b], active[a].get(), weights[a]) {
                b
            } else {
                a
            },
        );
    }
    // Most of the tier is out (or it has one usable server): the lightest
    // usable one.
    let mut best: Option<usize> = None;
    for &i in tier.members.iter().filter(|&&i| ok(i)) {
        if best.is_none_or(|b| lighter(active[i].get(), weights[i], active[b].get(), weights[b])) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[u32]) -> Vec<Cell<u32>> {
        v.iter().map(|&a| Cell::new(a)).collect()
    }

    #[test]
    fn least_conn_takes_the_lightest_per_weight() {
        let rr = RoundRobin::new([1, 2, 1]);
        let active = cells(&[1, 1, 0]);
        assert_eq!(least_conn(&active, &[1, 2, 1], &rr, |_| true), Some(2));
        // 1/1 against 1/2: the heavier server carries less per weight.
        assert_eq!(least_conn(&active, &[1, 2, 1], &rr, |i| i != 2), Some(1));
        assert_eq!(least_conn(&active, &[1, 2, 1], &rr, |_| false), None);
    }

    #[test]
    fn least_conn_ties_go_round_robin() {
        let rr = RoundRobin::new([1, 1, 1]);
        let active = cells(&[0, 0, 0]);
        let picks: Vec<usize> = (0..6)
            .map(|_| least_conn(&active, &[1, 1, 1], &rr, |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_two_prefers_the_lighter_of_two() {
        let tier = Weighted::new([(0, 1), (1, 1)]);
        let active = cells(&[5, 0]);
        let rng = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(random_two(&tier, &active, &[1, 1], &rng, |_| true), Some(1));
        }
        assert_eq!(
            random_two(&tier, &active, &[1, 1], &rng, |i| i == 0),
            Some(0)
        );
        assert_eq!(random_two(&tier, &active, &[1, 1], &rng, |_| false), None);
    }

    #[test]
    fn random_two_spreads_an_idle_tier_by_weight() {
        let tier = Weighted::new([(0, 1), (1, 1), (2, 2)]);
        let active = cells(&[0, 0, 0]);
        let rng = Rng::new(42);
        let mut count = [0u32; 3];
        for _ in 0..40_000 {
            let first = random_two(&tier, &active, &[1, 1, 2], &rng, |_| true).unwrap();
            count[first] += 1;
        }
        // Between two idle servers the first drawn wins, so shares follow the draws.
        assert!(count.iter().all(|&c| c > 8_000), "{count:?}");
        assert!(count[2] > count[0] && count[2] > count[1], "{count:?}");
    }

    #[test]
    fn rng_below_is_in_range_and_spread() {
        let rng = Rng::new(1);
        let mut seen = [0u32; 5];
        for _ in 0..50_000 {
            seen[rng.below(5) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{seen:?}"
        );
    }
}
