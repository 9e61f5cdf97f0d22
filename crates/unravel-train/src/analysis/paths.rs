//! The ensemble view of a residual network (Veit et al. 2016): with n
//! residual blocks, each block's branch is either taken or skipped, so there
//! are 2^n paths from input to output, C(n, k) of them through exactly k
//! branches. Counts are exact big integers, whatever n.

use num_bigint::BigUint;
use num_traits::{One, ToPrimitive, Zero};

/// The number of paths of each length 0..=n: the binomial coefficients.
pub fn path_counts(n: usize) -> Vec<BigUint> {
    let mut row = vec![BigUint::one()];
    for k in 1..=n {
        // C(n, k) = C(n, k - 1) * (n - k + 1) / k, exact at every step.
        let next = &row[k - 1] * BigUint::from(n - k + 1) / BigUint::from(k);
        row.push(next);
    }
    row
}

/// `count / 2^n` as f64 (exact to f64 precision even where 2^n overflows).
pub fn fraction(count: &BigUint, n: usize) -> f64 {
    // Shift both so the divisor fits an f64.
    let shift = n.saturating_sub(1000);
    let scaled = (count >> shift).to_f64().unwrap_or(f64::INFINITY);
    scaled / 2f64.powi((n - shift) as i32)
}

/// The shortest range of lengths [lo, hi] holding at least `share` of all
/// paths. The distribution is unimodal and symmetric, so the range grows
/// outward from the middle, taking the larger neighbour first.
pub fn shortest_range(counts: &[BigUint], share: f64) -> (usize, usize) {
    let n = counts.len() - 1;
    let total: BigUint = counts.iter().sum();
    // Compare in integers: sum * 10^6 >= total * round(share * 10^6).
    let scale = BigUint::from(1_000_000u32);
    let need = &total * BigUint::from((share * 1e6).round() as u64);
    let (mut lo, mut hi) = (n / 2, n / 2);
    let mut sum = counts[lo].clone();
    while &sum * &scale < need {
        let left = if lo > 0 {
            counts[lo - 1].clone()
        } else {
            BigUint::zero()
        };
        let right = if hi < n {
            counts[hi + 1].clone()
        } else {
            BigUint::zero()
        };
        if lo > 0 && (left >= right || hi == n) {
            lo -= 1;
            sum += left;
        } else {
            hi += 1;
            sum += right;
        }
    }
    (lo, hi)
}
