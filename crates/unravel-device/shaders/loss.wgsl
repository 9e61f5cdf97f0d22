// Softmax cross-entropy over integer labels, with the batch accuracy count.
//
// Shape legend: logits z [N, K] (row n starts at z_off + n * z_stride),
// labels [N] u32, loss a single f32 (the mean over the batch), correct a
// single u32 (samples whose argmax, lowest index on ties, is the label),
// dz [N, K] like z.
//
// One workgroup of 256 invocations does the whole batch: invocation t takes
// samples t, t + 256, ... (three passes over each row: max and argmax, sum
// of exp, gradient), then a tree reduction in workgroup memory combines the
// partial loss sums and hit counts. A single dispatch thus yields all three
// results without atomics or a second pass; for a classifier head (K up to
// ~1000, N up to a few thousand) the row work is small.
//
// A label >= K (the host cannot check GPU data) is ignored: its sample adds
// 0 to the loss sum, gets a zero gradient row and counts as wrong; the mean
// still divides by N.

struct Params {
    n: u32, k: u32, inv_n: f32, _pad0: u32,
    z_off: u32, z_stride: u32,
    g_off: u32, g_stride: u32,
    label_off: u32, loss_off: u32, correct_off: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> correct: array<u32>;
@group(0) @binding(5) var<storage, read_write> dz: array<f32>;

const WG: u32 = 256u;

var<workgroup> part_loss: array<f32, 256>;
var<workgroup> part_hit: array<u32, 256>;

struct Row {
    m: f32,       // max logit
    lse: f32,     // log(sum exp(z - m))
    label: u32,
    valid: bool,  // label < K
    loss: f32,    // lse - (z[label] - m), 0 when not valid
    hit: u32,     // 1 when argmax == label
}

fn row_stats(n: u32) -> Row {
    let base = p.z_off + n * p.z_stride;
    var m = z[base];
    var arg = 0u;
    for (var j = 1u; j < p.k; j++) {
        let v = z[base + j];
        // Strictly greater: the lowest index wins a tie.
        if (v > m) { m = v; arg = j; }
    }
    var s = 0.0;
    for (var j = 0u; j < p.k; j++) {
        s += exp(z[base + j] - m);
    }
    var r: Row;
    r.m = m;
    r.lse = log(s);
    r.label = labels[p.label_off + n];
    r.valid = r.label < p.k;
    r.loss = 0.0;
    r.hit = 0u;
    if (r.valid) {
        r.loss = r.lse - (z[base + r.label] - m);
        r.hit = select(0u, 1u, arg == r.label);
    }
    return r;
}

// dz[n, j] = (softmax(z)[j] - [j == label]) / N, or 0 for an ignored label.
fn write_grad(n: u32, r: Row) {
    let zb = p.z_off + n * p.z_stride;
    let gb = p.g_off + n * p.g_stride;
    for (var j = 0u; j < p.k; j++) {
        let prob = exp(z[zb + j] - r.m - r.lse);
        let target_ = select(0.0, 1.0, j == r.label);
        dz[gb + j] = select(0.0, (prob - target_) * p.inv_n, r.valid);
    }
}

// Sums every invocation's partials; invocation 0 writes the results.
fn reduce_and_store(lid: u32, l: f32, h: u32) {
    part_loss[lid] = l;
    part_hit[lid] = h;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            part_loss[lid] += part_loss[lid + half];
            part_hit[lid] += part_hit[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        loss[p.loss_off] = part_loss[0] * p.inv_n;
        correct[p.correct_off] = part_hit[0];
    }
}

// Training: mean loss, correct count and the logits gradient.
@compute @workgroup_size(256)
fn softmax_cross_entropy(@builtin(local_invocation_index) lid: u32) {
    var l = 0.0;
    var h = 0u;
    for (var n = lid; n < p.n; n += WG) {
        let r = row_stats(n);
        write_grad(n, r);
        l += r.loss;
        h += r.hit;
    }
    reduce_and_store(lid, l, h);
}

// Evaluation: mean loss and correct count, no gradient.
@compute @workgroup_size(256)
fn softmax_cross_entropy_eval(@builtin(local_invocation_index) lid: u32) {
    var l = 0.0;
    var h = 0u;
    for (var n = lid; n < p.n; n += WG) {
        let r = row_stats(n);
        l += r.loss;
        h += r.hit;
    }
    reduce_and_store(lid, l, h);
}
