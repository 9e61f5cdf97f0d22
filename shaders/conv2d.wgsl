// 2-D convolution (PyTorch semantics): forward, input gradient, weight gradient.
//
// Shape legend: N batch, C input channels, H x W input, K output channels,
// KH x KW kernel, S stride, P zero padding, G groups, CG = C / G and
// KG = K / G channels per group, OH x OW output, R = CG*KH*KW the reduction
// length of one output (a weight row). x, y, dy, dx are NCHW views: element
// (n, c, h, w) of view v sits at v_off + n*v_stride + (c*H + h)*W + w.
// Weights are OIHW [K, CG, KH, KW] starting at b_off; bias [K] at v_off.
//
// Bindings, per entry point:
//   forward:          a = x,       b = w,  v = bias,  out = y
//   backward_input:   a = dy,      b = w,             out = dx
//   backward_weight:  a = x,       b = dy, v = dbias, out = dw        (direct)
//                     a = x,       b = dy,            out = partials  (subgroup pass 1)
//                     a = partials,        v = dbias, out = dw        (pass 2)
//
// Two families of kernels:
// - `*_direct`: one invocation per output element; needs nothing, slow.
// - `*_sg`: every one is a small GEMM out[i][c] = sum_k A[i][k] * B[c][k]
//   with a lane per row i (a pixel, or a weight column) holding NV*4 columns
//   c (output channels) in registers. Lanes load one chunk of B (one k each)
//   cooperatively and pass it around with subgroupShuffle, so each FMA costs
//   a register shuffle instead of a memory load (loads dominate on CPUs
//   such as lavapipe). The subgroup size is read at run time, never assumed.

struct Params {
    n: u32, c_in: u32, h: u32, w: u32,
    c_out: u32, kh: u32, kw: u32, stride: u32,
    pad: u32, groups: u32, oh: u32, ow: u32,
    cin_g: u32, cout_g: u32, has_bias: u32, blocks: u32,   // blocks: channel blocks per group
    a_off: u32, a_stride: u32, b_off: u32, b_stride: u32,
    o_off: u32, o_stride: u32, v_off: u32, chunk: u32,     // chunk: pixels per split (dw)
    splits: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

// vec4 blocks of output columns per lane in the `_sg` kernels (1..4).
override NV: u32 = 4u;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// a[i] where ok, else 0, without an out-of-range read.
fn load_a(i: u32, ok: bool) -> f32 {
    return select(0.0, a[select(0u, i, ok)], ok);
}

fn load_b(i: u32, ok: bool) -> f32 {
    return select(0.0, b[select(0u, i, ok)], ok);
}

// Four B values at base + c*step, c = 0..3; the first `left` of them exist.
fn load_b4(base: u32, step: u32, ok: bool, left: u32) -> vec4<f32> {
    return vec4<f32>(
        load_b(base, ok && left > 0u),
        load_b(base + step, ok && left > 1u),
        load_b(base + 2u * step, ok && left > 2u),
        load_b(base + 3u * step, ok && left > 3u));
}

// Channels left in a group from column block `vb` of a lane's columns.
fn cols_left(c0: u32, vb: u32, count: u32) -> u32 {
    let first = c0 + 4u * vb;
    return select(0u, count - first, first < count);
}

// ---------------------------------------------------------------- direct

// y[n, k, oy, ox] = bias[k] + sum_{ci, ky, kx} x[n, g*CG + ci, oy*S - P + ky, ox*S - P + kx] * w[k, ci, ky, kx]
@compute @workgroup_size(64)
fn conv2d_forward_direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    let ohw = p.oh * p.ow;
    if (i >= p.n * p.c_out * ohw) { return; }
    let q = i % ohw;
    let k = (i / ohw) % p.c_out;
    let n = i / (ohw * p.c_out);
    let oy = q / p.ow;
    let ox = q % p.ow;
    let g = k / p.cout_g;
    let hw = p.h * p.w;
    let xbase = p.a_off + n * p.a_stride + g * p.cin_g * hw;
    let khw = p.kh * p.kw;
    var acc = 0.0;
    if (p.has_bias != 0u) { acc = v[p.v_off + k]; }
    for (var ci = 0u; ci < p.cin_g; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                let ok = u32(iy) < p.h && u32(ix) < p.w;
                let xv = load_a(xbase + ci * hw + u32(iy) * p.w + u32(ix), ok);
                acc += xv * b[p.b_off + (k * p.cin_g + ci) * khw + ky * p.kw + kx];
            }
        }
    }
    out[p.o_off + n * p.o_stride + k * ohw + q] = acc;
}

// dx[n, c, iy, ix] = sum over (kg, ky, kx) with oy = (iy + P - ky) / S exact
// and in range of dy[n, g*KG + kg, oy, ox] * w[g*KG + kg, c % CG, ky, kx]
@compute @workgroup_size(64)
fn conv2d_backward_input_direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    let hw = p.h * p.w;
    if (i >= p.n * p.c_in * hw) { return; }
    let q = i % hw;
    let c = (i / hw) % p.c_in;
    let n = i / (hw * p.c_in);
    let iy = q / p.w;
    let ix = q % p.w;
    let g = c / p.cin_g;
    let ci = c % p.cin_g;
    let ohw = p.oh * p.ow;
    let khw = p.kh * p.kw;
    let s = i32(p.stride);
    var acc = 0.0;
    for (var kg = 0u; kg < p.cout_g; kg++) {
        let k = g * p.cout_g + kg;
        let dybase = p.a_off + n * p.a_stride + k * ohw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = i32(iy + p.pad) - i32(ky);
            let oy = ty / s;
            let oky = ty >= 0 && oy * s == ty && oy < i32(p.oh);
            for (var kx = 0u; kx < p.kw; kx++) {
                let tx = i32(ix + p.pad) - i32(kx);
                let ox = tx / s;
                let ok = oky && tx >= 0 && ox * s == tx && ox < i32(p.ow);
                let g_y = load_a(dybase + u32(oy) * p.ow + u32(ox), ok);
                acc += g_y * b[p.b_off + (k * p.cin_g + ci) * khw + ky * p.kw + kx];
            }
        }
    }
    out[p.o_off + n * p.o_stride + c * hw + q] = acc;
}

// dw[k, ci, ky, kx] = sum_{n, oy, ox} dy[n, k, oy, ox] * x[n, g*CG + ci, oy*S - P + ky, ox*S - P + kx];
// one extra column r = R per channel gives dbias[k] = sum dy[n, k, :, :].
@compute @workgroup_size(64)
fn conv2d_backward_weight_direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    let khw = p.kh * p.kw;
    let r_len = p.cin_g * khw;
    let r1 = r_len + p.has_bias;
    if (i >= p.c_out * r1) { return; }
    let k = i / r1;
    let r = i % r1;
    let is_bias = r == r_len;
    let ci = r / khw;
    let ky = (r % khw) / p.kw;
    let kx = r % p.kw;
    let g = k / p.cout_g;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let xbase = p.a_off + n * p.a_stride + (g * p.cin_g + ci) * hw;
        let dybase = p.b_off + n * p.b_stride + k * ohw;
        for (var oy = 0u; oy < p.oh; oy++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            for (var ox = 0u; ox < p.ow; ox++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                let ok = !is_bias && u32(iy) < p.h && u32(ix) < p.w;
                let xv = select(load_a(xbase + u32(iy) * p.w + u32(ix), ok), 1.0, is_bias);
                acc += xv * b[dybase + oy * p.ow + ox];
            }
        }
    }
    if (is_bias) {
        v[p.v_off + k] = acc;
    } else {
        out[p.o_off + k * r_len + r] = acc;
    }
}

// ---------------------------------------------------------------- subgroup

// Per-invocation state of the `_sg` kernels, private so that the unrolled
// steps below can share small helpers.
var<private> acc0: vec4<f32>;
var<private> acc1: vec4<f32>;
var<private> acc2: vec4<f32>;
var<private> acc3: vec4<f32>;
// This lane's entry of the current chunk of B, 4*NV columns.
var<private> bw0: vec4<f32>;
var<private> bw1: vec4<f32>;
var<private> bw2: vec4<f32>;
var<private> bw3: vec4<f32>;
// Reduction counters (outer, middle, inner) of the next step, and steps
// left in the chunk (0 masks the unrolled steps past the end of k).
var<private> k_outer: u32;
var<private> k_mid: u32;
var<private> k_inner: u32;
var<private> k_left: u32;
// Where this lane reads A: a base index, a 2-D origin, and whether it has a row.
var<private> a_base: u32;
var<private> a_y0: i32;
var<private> a_x0: i32;
var<private> live: bool;

// Lanes 0..CHUNK-1 share their chunk of B with constant-index broadcasts,
// which lavapipe turns into a register extract + splat (a dynamic-index
// shuffle becomes a loop over the lanes). Subgroups smaller than CHUNK
// take the shuffle loop instead.
const CHUNK: u32 = 8u;

// Caps the chunk; below CHUNK it forces the shuffle loop (for tests).
override MAX_CHUNK: u32 = 8u;

fn chunk_len(sgs: u32) -> u32 {
    return min(sgs, min(MAX_CHUNK, CHUNK));
}

// acc += a * (column values of lane j's B entry), j dynamic.
fn step_shuffle(a_val: f32, j: u32) {
    acc0 += a_val * subgroupShuffle(bw0, j);
    if (NV > 1u) { acc1 += a_val * subgroupShuffle(bw1, j); }
    if (NV > 2u) { acc2 += a_val * subgroupShuffle(bw2, j); }
    if (NV > 3u) { acc3 += a_val * subgroupShuffle(bw3, j); }
}

fn step0(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 0u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 0u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 0u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 0u); }
}
fn step1(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 1u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 1u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 1u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 1u); }
}
fn step2(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 2u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 2u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 2u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 2u); }
}
fn step3(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 3u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 3u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 3u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 3u); }
}
fn step4(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 4u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 4u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 4u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 4u); }
}
fn step5(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 5u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 5u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 5u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 5u); }
}
fn step6(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 6u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 6u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 6u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 6u); }
}
fn step7(a_val: f32) {
    acc0 += a_val * subgroupBroadcast(bw0, 7u);
    if (NV > 1u) { acc1 += a_val * subgroupBroadcast(bw1, 7u); }
    if (NV > 2u) { acc2 += a_val * subgroupBroadcast(bw2, 7u); }
    if (NV > 3u) { acc3 += a_val * subgroupBroadcast(bw3, 7u); }
}

// Loads this lane's chunk entry of B: columns c at base + c*step, the first
// `left0..3` of each vec4 block existing, all zero where !ok.
fn load_chunk(base: u32, step: u32, ok: bool, c0: u32, cols: u32) {
    bw0 = load_b4(base, step, ok, cols_left(c0, 0u, cols));
    if (NV > 1u) { bw1 = load_b4(base + 4u * step, step, ok, cols_left(c0, 1u, cols)); }
    if (NV > 2u) { bw2 = load_b4(base + 8u * step, step, ok, cols_left(c0, 2u, cols)); }
    if (NV > 3u) { bw3 = load_b4(base + 12u * step, step, ok, cols_left(c0, 3u, cols)); }
}

// Sets the counters to reduction index k = (outer, mid, inner) with sizes
// (_, mid_n, inner_n), and the chunk's step count.
fn start_chunk(k: u32, mid_n: u32, inner_n: u32, steps: u32) {
    k_outer = k / (mid_n * inner_n);
    k_mid = (k / inner_n) % mid_n;
    k_inner = k % inner_n;
    k_left = steps;
}

// Moves the counters one step on; returns whether the step was in range.
fn advance(mid_n: u32, inner_n: u32) -> bool {
    let in_range = k_left > 0u;
    k_left = select(0u, k_left - 1u, in_range);
    k_inner += 1u;
    let wrap = k_inner == inner_n;
    k_inner = select(k_inner, 0u, wrap);
    k_mid = select(k_mid, k_mid + 1u, wrap);
    let wrap2 = k_mid == mid_n;
    k_mid = select(k_mid, 0u, wrap2);
    k_outer = select(k_outer, k_outer + 1u, wrap2);
    return in_range;
}

// out[base + c*step] = acc[c] (+ bias[bias_at + c]) for the first `left` c.
fn store_cols(acc: vec4<f32>, base: u32, step: u32, left: u32, bias: bool, bias_at: u32) {
    for (var c = 0u; c < min(left, 4u); c++) {
        var val = acc[c];
        if (bias) { val += v[bias_at + c]; }
        out[base + c * step] = val;
    }
}

// Stores the accumulators of columns c0.. (of `cols`) at base + c*step.
fn store_all(base: u32, step: u32, c0: u32, cols: u32, bias: bool, bias_at: u32) {
    store_cols(acc0, base, step, cols_left(c0, 0u, cols), bias, bias_at);
    if (NV > 1u) { store_cols(acc1, base + 4u * step, step, cols_left(c0, 1u, cols), bias, bias_at + 4u); }
    if (NV > 2u) { store_cols(acc2, base + 8u * step, step, cols_left(c0, 2u, cols), bias, bias_at + 8u); }
    if (NV > 3u) { store_cols(acc3, base + 12u * step, step, cols_left(c0, 3u, cols), bias, bias_at + 12u); }
}

// A of the forward: x at the lane's pixel for k = (ci, ky, kx).
fn forward_a() -> f32 {
    let iy = a_y0 + i32(k_mid);
    let ix = a_x0 + i32(k_inner);
    let at = a_base + (k_outer * p.h + u32(iy)) * p.w + u32(ix);
    let ok = live && u32(iy) < p.h && u32(ix) < p.w;
    let in_range = advance(p.kh, p.kw);
    return load_a(at, ok && in_range);
}

// Rows: output pixels (n, oy, ox) of the grid's x/y; columns: channels
// g*KG + c0 .. + 4*NV of block wg.z = g * blocks + block; k: (ci, ky, kx).
@compute @workgroup_size(64)
fn conv2d_forward_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32,
                     @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    let i = linear_index(vec3<u32>(wg.x, wg.y, 0u), nwg, lid);
    live = i < total;
    let pix = min(i, total - 1u);
    let n = pix / ohw;
    let q = pix % ohw;
    a_y0 = i32((q / p.ow) * p.stride) - i32(p.pad);
    a_x0 = i32((q % p.ow) * p.stride) - i32(p.pad);
    let g = wg.z / p.blocks;
    let c0 = (wg.z % p.blocks) * 4u * NV;
    let r_len = p.cin_g * p.kh * p.kw;
    a_base = p.a_off + n * p.a_stride + g * p.cin_g * p.h * p.w;
    let wrow = p.b_off + (g * p.cout_g + c0) * r_len;
    let ch = chunk_len(sgs);
    for (var k0 = 0u; k0 < r_len; k0 += ch) {
        let kl = k0 + lane;
        load_chunk(wrow + kl, r_len, lane < ch && kl < r_len, c0, p.cout_g);
        start_chunk(k0, p.kh, p.kw, min(ch, r_len - k0));
        if (ch == CHUNK) {
            step0(forward_a()); step1(forward_a()); step2(forward_a()); step3(forward_a());
            step4(forward_a()); step5(forward_a()); step6(forward_a()); step7(forward_a());
        } else {
            for (var j = 0u; j < ch; j++) { step_shuffle(forward_a(), j); }
        }
    }
    if (!live) { return; }
    let ybase = p.o_off + n * p.o_stride + (g * p.cout_g + c0) * ohw + q;
    store_all(ybase, ohw, c0, p.cout_g, p.has_bias != 0u, p.v_off + g * p.cout_g + c0);
}

// A of the input gradient: dy at output pixel (oy0 - my, ox0 - mx) of
// channel kg, for k = (kg, my, mx); the taps of the phase have size
// (nty, ntx) = (p.kh - phy) / S, (p.kw - phx) / S rounded up.
fn backward_input_a(nty: u32, ntx: u32) -> f32 {
    let oy = a_y0 - i32(k_mid);
    let ox = a_x0 - i32(k_inner);
    let at = a_base + (k_outer * p.oh + u32(oy)) * p.ow + u32(ox);
    let ok = live && u32(oy) < p.oh && u32(ox) < p.ow;
    let in_range = advance(nty, ntx);
    return load_a(at, ok && in_range);
}

// The input gradient is a convolution of dy with the flipped kernel. With
// stride S only the taps ky = (iy + P) mod S (+ S*m) reach input row iy, so
// the input pixels are split into S*S phases (wg.z % (S*S)) whose lanes all
// share the same taps: no lane wastes FMAs on taps that miss its pixel.
// Rows: input pixels of one phase; columns: input channels of block
// (wg.z / (S*S)) = g * blocks + block; k: (kg, my, mx).
@compute @workgroup_size(64)
fn conv2d_backward_input_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32,
                            @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
    let s = p.stride;
    let phases = s * s;
    let phy = (wg.z % phases) / s;
    let phx = wg.z % s;
    let gb = wg.z / phases;
    let g = gb / p.blocks;
    let c0 = (gb % p.blocks) * 4u * NV;
    // First input row/column of this phase, and rows/columns per phase.
    let iy_first = (phy + s - p.pad % s) % s;
    let ix_first = (phx + s - p.pad % s) % s;
    let th = (p.h + s - 1u) / s;
    let tw = (p.w + s - 1u) / s;
    let total = p.n * th * tw;
    let i = linear_index(vec3<u32>(wg.x, wg.y, 0u), nwg, lid);
    let pix = min(i, total - 1u);
    let n = pix / (th * tw);
    let ty = (pix / tw) % th;
    let tx = pix % tw;
    let iy = iy_first + s * ty;
    let ix = ix_first + s * tx;
    live = i < total && iy < p.h && ix < p.w;
    // Output row of tap m: oy = oy0 - m.
    a_y0 = i32((iy_first + p.pad - phy) / s + ty);
    a_x0 = i32((ix_first + p.pad - phx) / s + tx);
    let nty = select(0u, (p.kh - phy + s - 1u) / s, phy < p.kh);
    let ntx = select(0u, (p.kw - phx + s - 1u) / s, phx < p.kw);
    let taps = nty * ntx;
    let r_len = p.cout_g * taps;
    let khw = p.kh * p.kw;
    a_base = p.a_off + n * p.a_stride + g * p.cout_g * p.oh * p.ow;
    let ch = chunk_len(sgs);
    for (var k0 = 0u; k0 < r_len; k0 += ch) {
        // This lane's k: weight w[g*KG + kg, c0 + c, phy + S*my, phx + S*mx].
        let kl = min(k0 + lane, r_len - 1u);
        let lkg = kl / taps;
        let lmy = (kl % taps) / ntx;
        let lmx = kl % ntx;
        let wat = p.b_off + ((g * p.cout_g + lkg) * p.cin_g + c0) * khw
            + (phy + s * lmy) * p.kw + phx + s * lmx;
        load_chunk(wat, khw, lane < ch && k0 + lane < r_len, c0, p.cin_g);
        start_chunk(k0, nty, ntx, min(ch, r_len - k0));
        if (ch == CHUNK) {
            step0(backward_input_a(nty, ntx)); step1(backward_input_a(nty, ntx));
            step2(backward_input_a(nty, ntx)); step3(backward_input_a(nty, ntx));
            step4(backward_input_a(nty, ntx)); step5(backward_input_a(nty, ntx));
            step6(backward_input_a(nty, ntx)); step7(backward_input_a(nty, ntx));
        } else {
            for (var j = 0u; j < ch; j++) { step_shuffle(backward_input_a(nty, ntx), j); }
        }
    }
    if (!live) { return; }
    let hw = p.h * p.w;
    let xbase = p.o_off + n * p.o_stride + (g * p.cin_g + c0) * hw + iy * p.w + ix;
    store_all(xbase, hw, c0, p.cin_g, false, 0u);
}

// A of the weight gradient: x at the lane's (ci, ky, kx) for output pixel
// k = (n, oy, ox); 1 on the bias row.
fn backward_weight_a(is_bias: bool) -> f32 {
    let iy = i32(k_mid * p.stride) + a_y0;
    let ix = i32(k_inner * p.stride) + a_x0;
    let at = a_base + k_outer * p.a_stride + u32(iy) * p.w + u32(ix);
    let ok = live && !is_bias && u32(iy) < p.h && u32(ix) < p.w;
    let in_range = advance(p.oh, p.ow);
    return select(load_a(at, ok && in_range), 1.0, is_bias && in_range);
}

// Pass 1 of the weight gradient. Rows: weight columns r = (ci, ky, kx) of
// the grid's x, plus r = R for the bias when there is one; columns: output
// channels of block wg.y = g * blocks + block; k: the pixels of split wg.z
// (p.chunk of the N*OH*OW output pixels). Writes partial sums
// partials[split, k, r] with R + has_bias entries per channel.
@compute @workgroup_size(64)
fn conv2d_backward_weight_sg(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32,
                             @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
    let khw = p.kh * p.kw;
    let r_len = p.cin_g * khw;
    let r1 = r_len + p.has_bias;
    let r = wg.x * WG + lid;
    live = r < r1;
    let is_bias = r == r_len;
    let rr = min(r, r_len - 1u);
    let ci = rr / khw;
    a_y0 = i32((rr % khw) / p.kw) - i32(p.pad);
    a_x0 = i32(rr % p.kw) - i32(p.pad);
    let g = wg.y / p.blocks;
    let c0 = (wg.y % p.blocks) * 4u * NV;
    let ohw = p.oh * p.ow;
    let first = wg.z * p.chunk;
    let end = min(p.n * ohw, first + p.chunk);
    a_base = p.a_off + (g * p.cin_g + ci) * p.h * p.w;
    let dych = (g * p.cout_g + c0) * ohw;
    let ch = chunk_len(sgs);
    for (var k0 = first; k0 < end; k0 += ch) {
        // This lane's pixel of dy, for the 4*NV channels.
        let pl = min(k0 + lane, end - 1u);
        let dyat = p.b_off + (pl / ohw) * p.b_stride + dych + pl % ohw;
        load_chunk(dyat, ohw, lane < ch && k0 + lane < end, c0, p.cout_g);
        start_chunk(k0, p.oh, p.ow, min(ch, end - k0));
        if (ch == CHUNK) {
            step0(backward_weight_a(is_bias)); step1(backward_weight_a(is_bias));
            step2(backward_weight_a(is_bias)); step3(backward_weight_a(is_bias));
            step4(backward_weight_a(is_bias)); step5(backward_weight_a(is_bias));
            step6(backward_weight_a(is_bias)); step7(backward_weight_a(is_bias));
        } else {
            for (var j = 0u; j < ch; j++) { step_shuffle(backward_weight_a(is_bias), j); }
        }
    }
    if (!live) { return; }
    let at = (wg.z * p.c_out + g * p.cout_g + c0) * r1 + r;
    store_all(at, r1, c0, p.cout_g, false, 0u);
}

// Pass 2 of the weight gradient: sums the partials of every split.
@compute @workgroup_size(64)
fn conv2d_backward_weight_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    let r_len = p.cin_g * p.kh * p.kw;
    let r1 = r_len + p.has_bias;
    let per_split = p.c_out * r1;
    if (i >= per_split) { return; }
    var acc = 0.0;
    for (var sp = 0u; sp < p.splits; sp++) {
        acc += a[sp * per_split + i];
    }
    let k = i / r1;
    let r = i % r1;
    if (r == r_len) {
        v[p.v_off + k] = acc;
    } else {
        out[p.o_off + k * r_len + r] = acc;
    }
}
