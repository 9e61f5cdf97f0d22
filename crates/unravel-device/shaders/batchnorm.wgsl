// Batch normalisation over (N, H, W) per channel, as PyTorch's BatchNorm2d,
// with an optional fused ReLU.
//
// Shape legend: x, y, dy, dx are NCHW views (N images, C channels, HW = H*W
// pixels per plane); image n of view t starts at t_off + n * t_stride.
// gamma, beta, running_mean, running_var, dgamma, dbeta: [C] at their offset;
// saved: [2, C] = (batch mean, 1 / sqrt(biased var + eps)).
// part: [C, CHUNKS, 4] per-workgroup partial statistics.
//
// Every pass walks one channel's N*HW elements as N planes of UNITS units
// (a unit is a vec4 in the `*4` entry points, a scalar otherwise; offsets and
// strides in p are in units). Workgroup (chunk, c) owns units
// [chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK) of channel c (see `cursor`);
// threads step through them without per-element division.
//
// Training forward = bn_stats (partial mean/M2 per chunk) + bn_apply_train
// (each workgroup merges its channel's partials, then y = x * scale + shift;
// bn_apply_train_add also adds a residual and applies ReLU).
// Backward = bn_grad_stats (partial sums of dy and dy * (x - mean)) +
// bn_grad_apply. Two passes over the data each way; the tiny per-channel
// finalisation is folded into the second pass to save a dispatch.
//
// With FROZEN_STATS a training plan normalises with the running statistics
// and treats them as constants (PyTorch's BatchNorm2d in eval mode under
// autograd): bn_apply_train(_add) alone, saving (running mean, 1 / sqrt(
// running var + eps)) and touching no running statistic; in backward dx =
// gamma * invstd * dy, without the batch statistics' terms.

struct Params {
    n: u32, c: u32, units: u32, per_chunk: u32,
    chunks: u32, step_n: u32, step_k: u32, relu: u32,
    count: f32, eps: f32, momentum: f32, inv_units: f32,
    x_off: u32, x_stride: u32, y_off: u32, y_stride: u32,
    dy_off: u32, dy_stride: u32, dx_off: u32, dx_stride: u32,
    g_off: u32, b_off: u32, rm_off: u32, rv_off: u32,
    s_off: u32, dg_off: u32, db_off: u32, update_running: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<elem1>;
@group(0) @binding(1) var<storage, read_write> x4: array<vec4<elem1>>;
@group(0) @binding(2) var<storage, read_write> y: array<elem2>;
@group(0) @binding(2) var<storage, read_write> y4: array<vec4<elem2>>;
@group(0) @binding(3) var<storage, read_write> dy: array<elem3>;
@group(0) @binding(3) var<storage, read_write> dy4: array<vec4<elem3>>;
@group(0) @binding(4) var<storage, read_write> dx: array<elem4>;
@group(0) @binding(4) var<storage, read_write> dx4: array<vec4<elem4>>;
@group(0) @binding(5) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(9) var<storage, read_write> saved: array<f32>;
@group(0) @binding(10) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(12) var<storage, read_write> dbeta: array<f32>;

// See the header: normalise with the running statistics, held constant.
override FROZEN_STATS: bool = false;

const WG: u32 = 64u;
// Entries each first-level thread merges in the workgroup reductions.
const FAN: u32 = 8u;
// Threads that step through memory together (not a subgroup-size assumption:
// any value is correct; 8 matches lavapipe's vector width).
const LANES: u32 = 8u;

var<workgroup> red: array<vec4<f32>, WG>;
var<workgroup> coef: vec4<f32>;

// Where a thread starts: (first unit, image n, unit within the plane k, end).
// Each block of LANES threads owns LANES * iters consecutive units and walks
// them LANES at a time: on a GPU every step is still one coalesced segment
// per block, and on lavapipe, which runs each block's loop to the end before
// the next block starts, every block streams through memory linearly.
fn cursor(chunk: u32, lid: u32) -> vec4<u32> {
    let first = chunk * p.per_chunk;
    let iters = p.per_chunk / WG;
    let block = first + (lid / LANES) * LANES * iters;
    let j = block + lid % LANES;
    let end = min(min(first + p.per_chunk, block + LANES * iters), p.n * p.units);
    let nk = split_unit(j);
    return vec4<u32>(j, nk.x, nk.y, end);
}

// (j / UNITS, j % UNITS) through an f32 reciprocal and one correction step:
// lavapipe turns a u32 division by a non-constant into one scalar divide per
// lane, which cost more per workgroup than the reduction itself. Exact for
// j < 2^24 (the host checks).
fn split_unit(j: u32) -> vec2<u32> {
    var n = u32(f32(j) * p.inv_units);
    var k = i32(j) - i32(n * p.units);
    if (k < 0) {
        n -= 1u;
        k += i32(p.units);
    } else if (k >= i32(p.units)) {
        n += 1u;
        k -= i32(p.units);
    }
    return vec2<u32>(n, u32(k));
}

// Moves a cursor LANES units on without dividing.
fn advance(cur: vec4<u32>) -> vec4<u32> {
    var n = cur.y + p.step_n;
    var k = cur.z + p.step_k;
    if (k >= p.units) {
        k -= p.units;
        n += 1u;
    }
    return vec4<u32>(cur.x + LANES, n, k, cur.w);
}

fn at(off: u32, stride: u32, c: u32, cur: vec4<u32>) -> u32 {
    return off + cur.y * stride + c * p.units + cur.z;
}

// Chan et al.'s merge of (count, mean, M2) summaries: stable in f32 where
// E[x^2] - E[x]^2 is not.
fn merge(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let n = a.x + b.x;
    if (n == 0.0) {
        return vec4<f32>(0.0);
    }
    let d = b.y - a.y;
    let f = b.x / n;
    return vec4<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f, 0.0);
}

// Workgroup reductions in two levels (WG / FAN threads merge FAN entries
// each, then thread 0 merges those WG / FAN) rather than a log2(WG)-step tree: lavapipe
// pays for every barrier by switching through all of the workgroup's
// invocation blocks, and that fixed cost dominated small channels.
// The result is in red[0], visible to thread 0.
fn reduce_moments(lid: u32, mine: vec4<f32>) {
    red[lid] = mine;
    workgroupBarrier();
    if (lid < WG / FAN) {
        var m = red[lid * FAN];
        for (var i = 1u; i < FAN; i++) {
            m = merge(m, red[lid * FAN + i]);
        }
        red[lid * FAN] = m;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var m = red[0];
        for (var i = 1u; i < WG / FAN; i++) {
            m = merge(m, red[i * FAN]);
        }
        red[0] = m;
    }
}

fn reduce_sums(lid: u32, mine: vec4<f32>) {
    red[lid] = mine;
    workgroupBarrier();
    if (lid < WG / FAN) {
        var m = red[lid * FAN];
        for (var i = 1u; i < FAN; i++) {
            m += red[lid * FAN + i];
        }
        red[lid * FAN] = m;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var m = red[0];
        for (var i = 1u; i < WG / FAN; i++) {
            m += red[i * FAN];
        }
        red[0] = m;
    }
}

// A thread's (count, mean, M2) from sums shifted by its own first value,
// which keeps the cancellation in M2 small whatever the channel's mean.
fn moments(cnt: f32, shift: f32, s1: f32, s2: f32) -> vec4<f32> {
    if (cnt == 0.0) {
        return vec4<f32>(0.0);
    }
    return vec4<f32>(cnt, shift + s1 / cnt, max(s2 - s1 * s1 / cnt, 0.0), 0.0);
}

// Channel c's partials merged, valid in thread 0: by thread 0 alone when
// there are few, by the whole workgroup when a long sequential merge would
// keep the others idle (large images: hundreds of chunks per channel).
fn merged_moments(lid: u32, c: u32) -> vec4<f32> {
    var m = vec4<f32>(0.0);
    if (p.chunks <= FAN) {
        if (lid == 0u) {
            for (var i = 0u; i < p.chunks; i++) {
                m = merge(m, part[c * p.chunks + i]);
            }
        }
        return m;
    }
    for (var i = lid; i < p.chunks; i += WG) {
        m = merge(m, part[c * p.chunks + i]);
    }
    reduce_moments(lid, m);
    return red[0];
}

fn merged_sums(lid: u32, c: u32) -> vec4<f32> {
    var m = vec4<f32>(0.0);
    if (p.chunks <= FAN) {
        if (lid == 0u) {
            for (var i = 0u; i < p.chunks; i++) {
                m += part[c * p.chunks + i];
            }
        }
        return m;
    }
    for (var i = lid; i < p.chunks; i += WG) {
        m += part[c * p.chunks + i];
    }
    reduce_sums(lid, m);
    return red[0];
}

fn write_partial(lid: u32, chunk: u32, c: u32) {
    if (lid == 0u) {
        part[c * p.chunks + chunk] = red[0];
    }
}

// ---- training forward -----------------------------------------------------

@compute @workgroup_size(WG)
fn bn_stats4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var cur = cursor(wg.x, lid);
    var shift = 0.0;
    if (cur.x < cur.w) {
        shift = vec4<f32>(x4[at(p.x_off, p.x_stride, wg.y, cur)]).x;
    }
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var cnt = 0u;
    while (cur.x < cur.w) {
        let v = vec4<f32>(x4[at(p.x_off, p.x_stride, wg.y, cur)]) - shift;
        s1 += v;
        s2 += v * v;
        cnt += 4u;
        cur = advance(cur);
    }
    let one = vec4<f32>(1.0);
    reduce_moments(lid, moments(f32(cnt), shift, dot(s1, one), dot(s2, one)));
    write_partial(lid, wg.x, wg.y);
}

@compute @workgroup_size(WG)
fn bn_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var cur = cursor(wg.x, lid);
    var shift = 0.0;
    if (cur.x < cur.w) {
        shift = f32(x[at(p.x_off, p.x_stride, wg.y, cur)]);
    }
    var s1 = 0.0;
    var s2 = 0.0;
    var cnt = 0u;
    while (cur.x < cur.w) {
        let v = f32(x[at(p.x_off, p.x_stride, wg.y, cur)]) - shift;
        s1 += v;
        s2 += v * v;
        cnt += 1u;
        cur = advance(cur);
    }
    reduce_moments(lid, moments(f32(cnt), shift, s1, s2));
    write_partial(lid, wg.x, wg.y);
}

// Thread 0 merges channel c's partials into (scale, shift) in `coef` (read
// back with workgroupUniformLoad, which is the barrier); the chunk-0
// workgroup also saves (mean, invstd) and, unless p.update_running is 0,
// updates the running statistics (running_var with the unbiased variance,
// as PyTorch).
fn train_coefficients(lid: u32, chunk: u32, c: u32) {
    if (FROZEN_STATS) {
        frozen_coefficients(lid, chunk, c);
        return;
    }
    let m = merged_moments(lid, c);
    if (lid == 0u) {
        let var_b = m.z / m.x;
        let invstd = inverseSqrt(var_b + p.eps);
        let scale = gamma[p.g_off + c] * invstd;
        coef = vec4<f32>(scale, beta[p.b_off + c] - m.y * scale, 0.0, 0.0);
        if (chunk == 0u) {
            saved[p.s_off + c] = m.y;
            saved[p.s_off + p.c + c] = invstd;
            if (p.update_running != 0u) {
                let mo = p.momentum;
                let rm = p.rm_off + c;
                let rv = p.rv_off + c;
                running_mean[rm] = (1.0 - mo) * running_mean[rm] + mo * m.y;
                running_var[rv] = (1.0 - mo) * running_var[rv] + mo * (m.z / (m.x - 1.0));
            }
        }
    }
}

// The evaluation's coefficients, with the running statistics saved in the
// (mean, invstd) form backward reads.
fn frozen_coefficients(lid: u32, chunk: u32, c: u32) {
    eval_coefficients(lid, c);
    if (lid == 0u && chunk == 0u) {
        saved[p.s_off + c] = running_mean[p.rm_off + c];
        saved[p.s_off + p.c + c] = inverseSqrt(running_var[p.rv_off + c] + p.eps);
    }
}

fn eval_coefficients(lid: u32, c: u32) {
    if (lid == 0u) {
        let scale = gamma[p.g_off + c] * inverseSqrt(running_var[p.rv_off + c] + p.eps);
        coef = vec4<f32>(scale, beta[p.b_off + c] - running_mean[p.rm_off + c] * scale, 0.0, 0.0);
    }
}

fn apply4(lid: u32, chunk: u32, c: u32) {
    let k = workgroupUniformLoad(&coef);
    var cur = cursor(chunk, lid);
    while (cur.x < cur.w) {
        var v = vec4<f32>(x4[at(p.x_off, p.x_stride, c, cur)]) * k.x + k.y;
        if (p.relu != 0u) {
            v = max(v, vec4<f32>(0.0));
        }
        y4[at(p.y_off, p.y_stride, c, cur)] = vec4<elem2>(v);
        cur = advance(cur);
    }
}

fn apply1(lid: u32, chunk: u32, c: u32) {
    let k = workgroupUniformLoad(&coef);
    var cur = cursor(chunk, lid);
    while (cur.x < cur.w) {
        var v = f32(x[at(p.x_off, p.x_stride, c, cur)]) * k.x + k.y;
        if (p.relu != 0u) {
            v = max(v, 0.0);
        }
        y[at(p.y_off, p.y_stride, c, cur)] = elem2(v);
        cur = advance(cur);
    }
}

@compute @workgroup_size(WG)
fn bn_apply_train4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    train_coefficients(lid, wg.x, wg.y);
    apply4(lid, wg.x, wg.y);
}

@compute @workgroup_size(WG)
fn bn_apply_train(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    train_coefficients(lid, wg.x, wg.y);
    apply1(lid, wg.x, wg.y);
}

// The training normalisation fused with the residual merge after it:
// y = max(x * scale + shift + r, 0), r (the block's shortcut) read through
// the dy binding, so the branch's output is never stored.
fn apply_add4(lid: u32, chunk: u32, c: u32) {
    let k = workgroupUniformLoad(&coef);
    var cur = cursor(chunk, lid);
    while (cur.x < cur.w) {
        let r = vec4<f32>(dy4[at(p.dy_off, p.dy_stride, c, cur)]);
        let v = vec4<f32>(x4[at(p.x_off, p.x_stride, c, cur)]) * k.x + k.y + r;
        y4[at(p.y_off, p.y_stride, c, cur)] = vec4<elem2>(max(v, vec4<f32>(0.0)));
        cur = advance(cur);
    }
}

fn apply_add1(lid: u32, chunk: u32, c: u32) {
    let k = workgroupUniformLoad(&coef);
    var cur = cursor(chunk, lid);
    while (cur.x < cur.w) {
        let v = f32(x[at(p.x_off, p.x_stride, c, cur)]) * k.x + k.y + f32(dy[at(p.dy_off, p.dy_stride, c, cur)]);
        y[at(p.y_off, p.y_stride, c, cur)] = elem2(max(v, 0.0));
        cur = advance(cur);
    }
}

@compute @workgroup_size(WG)
fn bn_apply_train_add4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    train_coefficients(lid, wg.x, wg.y);
    apply_add4(lid, wg.x, wg.y);
}

@compute @workgroup_size(WG)
fn bn_apply_train_add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    train_coefficients(lid, wg.x, wg.y);
    apply_add1(lid, wg.x, wg.y);
}

// ---- eval forward (running statistics) ------------------------------------

@compute @workgroup_size(WG)
fn bn_apply_eval4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    eval_coefficients(lid, wg.y);
    apply4(lid, wg.x, wg.y);
}

@compute @workgroup_size(WG)
fn bn_apply_eval(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    eval_coefficients(lid, wg.y);
    apply1(lid, wg.x, wg.y);
}

// The eval forward's coefficients alone, for a convolution to apply as it
// stores its output (the batch norm folded into the conv): saved[c] =
// scale, saved[C + c] = shift, computed as bn_apply_eval computes them.
// One workgroup per channel (wg.y).
@compute @workgroup_size(WG)
fn bn_fold_eval(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    eval_coefficients(lid, wg.y);
    if (lid == 0u) {
        saved[p.s_off + wg.y] = coef.x;
        saved[p.s_off + p.c + wg.y] = coef.y;
    }
}

// Recomputation with the statistics a training forward saved (mean and
// 1 / std): reproduces that forward's output exactly without touching the
// running statistics, so a memory-saving plan can drop the output after the
// forward pass and rebuild it for backward (memory-efficient DenseNet).
fn saved_coefficients(lid: u32, c: u32) {
    if (lid == 0u) {
        let scale = gamma[p.g_off + c] * saved[p.s_off + p.c + c];
        coef = vec4<f32>(scale, beta[p.b_off + c] - saved[p.s_off + c] * scale, 0.0, 0.0);
    }
}

@compute @workgroup_size(WG)
fn bn_apply_saved4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    saved_coefficients(lid, wg.y);
    apply4(lid, wg.x, wg.y);
}

@compute @workgroup_size(WG)
fn bn_apply_saved(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    saved_coefficients(lid, wg.y);
    apply1(lid, wg.x, wg.y);
}

// ---- backward ---------------------------------------------------------------
// With the fused ReLU, dy is first masked by y > 0 (y = the forward output).
// Partials: (sum dy, sum dy * (x - mean)).

@compute @workgroup_size(WG)
fn bn_grad_stats4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.y;
    let mean = saved[p.s_off + c];
    var cur = cursor(wg.x, lid);
    var sg = vec4<f32>(0.0);
    var sgx = vec4<f32>(0.0);
    while (cur.x < cur.w) {
        var g = vec4<f32>(dy4[at(p.dy_off, p.dy_stride, c, cur)]);
        if (p.relu != 0u) {
            g = select(vec4<f32>(0.0), g, vec4<f32>(y4[at(p.y_off, p.y_stride, c, cur)]) > vec4<f32>(0.0));
        }
        sg += g;
        sgx += g * (vec4<f32>(x4[at(p.x_off, p.x_stride, c, cur)]) - mean);
        cur = advance(cur);
    }
    let one = vec4<f32>(1.0);
    reduce_sums(lid, vec4<f32>(dot(sg, one), dot(sgx, one), 0.0, 0.0));
    write_partial(lid, wg.x, c);
}

@compute @workgroup_size(WG)
fn bn_grad_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.y;
    let mean = saved[p.s_off + c];
    var cur = cursor(wg.x, lid);
    var sg = 0.0;
    var sgx = 0.0;
    while (cur.x < cur.w) {
        var g = f32(dy[at(p.dy_off, p.dy_stride, c, cur)]);
        if (p.relu != 0u) {
            g = select(0.0, g, f32(y[at(p.y_off, p.y_stride, c, cur)]) > 0.0);
        }
        sg += g;
        sgx += g * (f32(x[at(p.x_off, p.x_stride, c, cur)]) - mean);
        cur = advance(cur);
    }
    reduce_sums(lid, vec4<f32>(sg, sgx, 0.0, 0.0));
    write_partial(lid, wg.x, c);
}

// dx = a * dy + b * (x - mean) + d, with a = gamma * invstd,
// b = -a * invstd^2 * sum(dy (x - mean)) / M, d = -a * sum(dy) / M;
// the chunk-0 workgroup writes dgamma = invstd * sum(dy (x - mean)) and
// dbeta = sum(dy). Coefficients go to `coef` as (a, b, d, mean).
fn grad_coefficients(lid: u32, chunk: u32, c: u32) {
    let s = merged_sums(lid, c);
    if (lid == 0u) {
        let invstd = saved[p.s_off + p.c + c];
        let a = gamma[p.g_off + c] * invstd;
        // Constant statistics pass no gradient of their own.
        let b = select(-a * invstd * invstd * s.y / p.count, 0.0, FROZEN_STATS);
        let d = select(-a * s.x / p.count, 0.0, FROZEN_STATS);
        coef = vec4<f32>(a, b, d, saved[p.s_off + c]);
        if (chunk == 0u) {
            dgamma[p.dg_off + c] = s.y * invstd;
            dbeta[p.db_off + c] = s.x;
        }
    }
}

@compute @workgroup_size(WG)
fn bn_grad_apply4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.y;
    grad_coefficients(lid, wg.x, c);
    let k = workgroupUniformLoad(&coef);
    var cur = cursor(wg.x, lid);
    while (cur.x < cur.w) {
        var g = vec4<f32>(dy4[at(p.dy_off, p.dy_stride, c, cur)]);
        if (p.relu != 0u) {
            g = select(vec4<f32>(0.0), g, vec4<f32>(y4[at(p.y_off, p.y_stride, c, cur)]) > vec4<f32>(0.0));
        }
        let xv = vec4<f32>(x4[at(p.x_off, p.x_stride, c, cur)]);
        dx4[at(p.dx_off, p.dx_stride, c, cur)] = vec4<elem4>(k.x * g + k.y * (xv - k.w) + k.z);
        cur = advance(cur);
    }
}

@compute @workgroup_size(WG)
fn bn_grad_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.y;
    grad_coefficients(lid, wg.x, c);
    let k = workgroupUniformLoad(&coef);
    var cur = cursor(wg.x, lid);
    while (cur.x < cur.w) {
        var g = f32(dy[at(p.dy_off, p.dy_stride, c, cur)]);
        if (p.relu != 0u) {
            g = select(0.0, g, f32(y[at(p.y_off, p.y_stride, c, cur)]) > 0.0);
        }
        let xv = f32(x[at(p.x_off, p.x_stride, c, cur)]);
        dx[at(p.dx_off, p.dx_stride, c, cur)] = elem4(k.x * g + k.y * (xv - k.w) + k.z);
        cur = advance(cur);
    }
}
