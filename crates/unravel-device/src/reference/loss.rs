//! CPU reference of softmax cross-entropy over integer labels, with the
//! argmax accuracy count.
//!
//! Shape legend: logits [N, K] row-major, labels [N]. A label >= K is
//! ignored the way the GPU kernel ignores it: 0 added to the loss sum, a zero
//! gradient row, counted wrong; the mean still divides by N.

/// The mean loss, d(mean loss)/d(logits) and the number of rows whose argmax
/// (lowest index on ties) equals the label.
pub fn softmax_cross_entropy(
    logits: &[f64],
    labels: &[u32],
    n: usize,
    k: usize,
) -> (f64, Vec<f64>, u32) {
    let mut total = 0.0;
    let mut correct = 0;
    let mut grad = vec![0.0; n * k];
    for (r, &label) in labels.iter().enumerate().take(n) {
        let row = &logits[r * k..(r + 1) * k];
        let mut arg = 0;
        for j in 1..k {
            if row[j] > row[arg] {
                arg = j;
            }
        }
        let m = row[arg];
        let lse = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let label = label as usize;
        if label >= k {
            continue;
        }
        total += lse - (row[label] - m);
        correct += u32::from(arg == label);
        for j in 0..k {
            let prob = (row[j] - m - lse).exp();
            let target = if j == label { 1.0 } else { 0.0 };
            grad[r * k + j] = (prob - target) / n as f64;
        }
    }
    (total / n as f64, grad, correct)
}

/// The mean loss alone (the function whose gradient the tests check).
pub fn softmax_cross_entropy_loss(logits: &[f64], labels: &[u32], n: usize, k: usize) -> f64 {
    softmax_cross_entropy(logits, labels, n, k).0
}
