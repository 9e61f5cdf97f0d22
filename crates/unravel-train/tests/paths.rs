//! Path counts of the ensemble view: exact binomials and the 95% range.

use num_bigint::BigUint;
use unravel_train::analysis::paths::{fraction, path_counts, shortest_range};

#[test]
fn counts_for_54_blocks_are_the_exact_binomials() {
    let c = path_counts(54);
    assert_eq!(c.len(), 55);
    assert_eq!(c[0], BigUint::from(1u32));
    assert_eq!(c[1], BigUint::from(54u32));
    assert_eq!(c[2], BigUint::from(1431u32));
    // C(54, 27) = 1946939425648112
    assert_eq!(c[27], BigUint::from(1_946_939_425_648_112u64));
    let total: BigUint = c.iter().sum();
    assert_eq!(total, BigUint::from(1u32) << 54);
    let f: f64 = c.iter().map(|x| fraction(x, 54)).sum();
    assert!((f - 1.0).abs() < 1e-12);
}

#[test]
fn ninety_five_percent_of_paths_of_resnet110_lie_between_19_and_35() {
    // ResNet-110 has 54 residual blocks; Veit et al. 2016 (Figure 6) report
    // 95% of paths between 19 and 35 blocks long.
    let c = path_counts(54);
    let inside: f64 = c[19..=35].iter().map(|x| fraction(x, 54)).sum();
    assert!(inside >= 0.95, "{inside}");
    // The shortest range with 95% is one narrower on each side.
    assert_eq!(shortest_range(&c, 0.95), (20, 34));
    let shortest: f64 = c[20..=34].iter().map(|x| fraction(x, 54)).sum();
    let narrower: f64 = c[21..=34].iter().map(|x| fraction(x, 54)).sum();
    assert!(shortest >= 0.95 && narrower < 0.95, "{shortest} {narrower}");
}

#[test]
fn large_networks_stay_exact() {
    // ResNet-1202: 600 blocks; 2^600 overflows every machine integer.
    let c = path_counts(600);
    let total: BigUint = c.iter().sum();
    assert_eq!(total, BigUint::from(1u32) << 600);
    assert_eq!(c[1], BigUint::from(600u32));
    assert_eq!(c[599], BigUint::from(600u32));
    assert!(fraction(&c[300], 600) > 0.03 && fraction(&c[300], 600) < 0.04);
    let (lo, hi) = shortest_range(&c, 0.95);
    assert!(lo < 300 && hi > 300 && hi - lo < 60, "{lo}..{hi}");
}

#[test]
fn contributions_weight_each_length_by_its_number_of_paths() {
    use unravel_train::analysis::gradient::{contributions, shortest_share, LengthGradient};
    // 4 blocks; a path of length k carries 2^-k: shares ∝ C(4,k) 2^-k.
    let g: Vec<LengthGradient> = (0..=4)
        .map(|k| LengthGradient {
            k,
            mean: 0.5f64.powi(k as i32),
            std: 0.0,
        })
        .collect();
    let shares = contributions(&g);
    let raw: Vec<f64> = [1.0, 4.0, 6.0, 4.0, 1.0]
        .iter()
        .enumerate()
        .map(|(k, c)| c * 0.5f64.powi(k as i32))
        .collect();
    let total: f64 = raw.iter().sum();
    for (s, r) in shares.iter().zip(&raw) {
        assert!((s - r / total).abs() < 1e-12);
    }
    // Shares 16, 32, 24, 8, 1 (of 81): lengths 0..=2 hold 72/81 < 90%,
    // 1..=3 hold 64/81; 0..=3 hold 80/81.
    assert_eq!(shortest_share(&shares, 0.9), (0, 3));
    // Two lengths suffice for half; of the equally short ranges the first.
    assert_eq!(shortest_share(&shares, 0.5), (0, 1));
}
