//! Smooth weighted round robin, as nginx does it. Also spreads `split`
//! routes over their upstreams.

use std::cell::Cell;

/// Each pick adds every candidate's weight to its current value, takes the
/// largest, and subtracts the candidates' total from the winner. Weights
/// 3:2:1 give `a b a c b a`: the heavy server's turns are spread out, not
/// bunched (`a a a b b c`).
pub struct RoundRobin {
    weights: Box<[i64]>,
    current: Box<[Cell<i64>]>,
}

impl RoundRobin {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Box<[i64]> = weights.into_iter().map(i64::from).collect();
        RoundRobin {
            current: weights.iter().map(|_| Cell::new(0)).collect(),
            weights,
        }
    }

    /// Picks among the entries `ok` accepts; entries of weight 0 never win.
    pub fn pick(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, (&w, cur)) in self.weights.iter().zip(self.current.iter()).enumerate() {
            if w == 0 || !ok(i) {
                continue;
            }
            let c = cur.get() + w;
            cur.set(c);
            total += w;
            if best.is_none_or(|(_, b)| c > b) {
                best = Some((i, c));
            }
        }
        let (b, c) = best?;
        self.current[b].set(c - total);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order_matches_nginx() {
        let rr = RoundRobin::new([3, 2, 1]);
        let picks: Vec<usize> = (0..12).map(|_| rr.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 2, 1, 0, 0, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn skips_what_is_not_ok_and_zero_weights() {
        let rr = RoundRobin::new([1, 0, 1]);
        let picks: Vec<usize> = (0..4).map(|_| rr.pick(|i| i != 2).unwrap()).collect();
        assert_eq!(picks, [0, 0, 0, 0]);
        assert_eq!(rr.pick(|_| false), None);
        assert_eq!(RoundRobin::new([0]).pick(|_| true), None);
    }
}
