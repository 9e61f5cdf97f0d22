// 2-D convolution (PyTorch semantics): forward, input gradient, weight gradient.
//
// Shape legend: N batch, C input channels, H x W input, K output channels,
// KH x KW kernel, S stride, P zero padding, G groups, CG = C / G and
// KG = K / G channels per group, OH x OW output, R = CG*KH*KW the reduction
// length of one output (a weight row). x, y, dy, dx are NCHW views: element
// (n, c, h, w) of view v sits at v_off + n*v_stride + (c*H + h)*W + w.
// Weights are OIHW [K, CG, KH, KW] starting at b_off; bias [K] at v_off.
//
// Bindings, per entry point (bp = binding 5, a vec4 view):
//   forward:          a = x,       v = bias,  out = y,         bp = packed w
//   backward_input:   a = dy,                 out = dx,        bp = packed w
//   backward_weight:  a = x,                  out = partials,  bp = packed dy  (pass 1)
//                     a = partials, v = dbias, out = dw                        (pass 2)
//   pack_*_weights:   b = w,                  out = packed
//   pack_dy:          b = dy,                                  bp = packed
//   *_direct:         a = x or dy, b = w or dy, v = bias or dbias, out = y, dx or dw
//
// Two families of kernels:
// - `*_direct`: one invocation per output element; needs nothing, slow.
// - `*_sg`: each is a GEMM out[i][c] = sum_k A[i][k] * B[c][k] with ROWS
//   rows i (pixels, or weight columns) per lane, each with 4*NV columns c
//   (channels) in registers. B is packed first so that a lane loads its
//   entry of a chunk of 8 k's with NV vec4 loads; the lanes then pass the
//   chunk around with subgroup broadcasts, so an FMA costs a register
//   broadcast shared by ROWS rows instead of a memory load. On lavapipe a
//   storage load costs ~20 cycles per 8 lanes (it runs lane by lane), so
//   the design counts loads per FMA: 1/(4*NV) for A, 1/(8*ROWS) for B.
//   The subgroup size is read at run time, never assumed. Their window
//   modes (WINDOW != 0, below) are entry points of their own (`*_window`,
//   `*_window_s2`): lavapipe compiles everything an entry point calls, dead
//   branches included.

struct Params {
    n: u32, c_in: u32, h: u32, w: u32,
    c_out: u32, kh: u32, kw: u32, stride: u32,
    pad: u32, groups: u32, oh: u32, ow: u32,
    cin_g: u32, cout_g: u32, has_bias: u32, blocks: u32,   // blocks: channel blocks per group
    a_off: u32, a_stride: u32, b_off: u32, b_stride: u32,
    o_off: u32, o_stride: u32, v_off: u32, chunk: u32,     // chunk: pixels per split (dw)
    splits: u32, affine: u32, relu: u32, _p2: u32,      // affine, relu: forward epilogue
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<elem1>;
@group(0) @binding(2) var<storage, read_write> b: array<elem2>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<elem4>;

const WG: u32 = 64u;

// vec4 blocks of output columns per lane in the `_sg` kernels (1..8).
override NV: u32 = 4u;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// Lane t of a window-mode grid over `image_rows` rows of `width` pixels,
// ROWS adjacent pixels a lane: (its first pixel's index over all rows, that
// pixel's column, whether its row exists).
fn window_lane(t: u32, width: u32, image_rows: u32) -> vec3<u32> {
    let tiles = (width + ROWS - 1u) / ROWS;
    let image_row = qdiv(t, tiles);
    let x = (t - image_row * tiles) * ROWS;
    return vec3<u32>(image_row * width + x, x, u32(image_row < image_rows));
}

// a[i] where ok, else 0. An index out of range where !ok is harmless: WGSL
// keeps every access inside the buffer (bounds checks or robust access).
fn load_a(i: u32, ok: bool) -> f32 {
    return select(0.0, f32(a[i]), ok);
}

fn load_b(i: u32, ok: bool) -> f32 {
    return select(0.0, f32(b[select(0u, i, ok)]), ok);
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

// a / b and a % b for the `_sg` kernels' setup, where quotients stay below
// 2^22 (the host checks N*H and N*OH): CPUs divide integer vectors lane by
// lane, floats all at once; the float quotient is within 1 of the true one
// and is corrected.
fn qdiv(a: u32, b: u32) -> u32 {
    var q = u32(f32(a) / f32(b));
    q = select(q, q - 1u, q * b > a);
    return select(q, q + 1u, (q + 1u) * b <= a);
}

fn qmod(a: u32, b: u32) -> u32 {
    return a - qdiv(a, b) * b;
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
    for (var ci = 0u; ci < p.cin_g; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                let ok = u32(iy) < p.h && u32(ix) < p.w;
                let xv = load_a(xbase + ci * hw + u32(iy) * p.w + u32(ix), ok);
                acc += xv * f32(b[p.b_off + (k * p.cin_g + ci) * khw + ky * p.kw + kx]);
            }
        }
    }
    out[p.o_off + n * p.o_stride + k * ohw + q] = elem4(finish1(acc, k));
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
                acc += g_y * f32(b[p.b_off + (k * p.cin_g + ci) * khw + ky * p.kw + kx]);
            }
        }
    }
    let at = p.o_off + n * p.o_stride + c * hw + q;
    if (ACCUMULATE) { acc += f32(out[at]); }
    out[at] = elem4(acc);
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
                acc += xv * f32(b[dybase + oy * p.ow + ox]);
            }
        }
    }
    if (is_bias) {
        v[p.v_off + k] = acc;
    } else {
        out[p.o_off + k * r_len + r] = elem4(acc);
    }
}

// ---------------------------------------------------------------- subgroup
//
// B is first packed (`conv2d_pack_*`) into `bp` as [G * blocks][k][4*NV]
// columns, zero-padded, so a lane fetches its chunk entry with NV
// contiguous vec4 loads and no index arithmetic (1.3x faster on lavapipe
// than 4*NV strided scalar loads).

@group(0) @binding(5) var<storage, read_write> bp: array<vec4<f32>>;

// Per-invocation state of the `_sg` kernels, private so that the unrolled
// steps below can share small helpers. Each lane computes ROWS rows (1..8),
// so every B value it receives feeds ROWS FMAs, and 4*NV columns (NV 1..8).
// acc{row}{block}: row `row`, columns 4*block .. 4*block + 3. Only
// ROWS x NV of them are live (the rest are pruned with the overrides);
// the host keeps ROWS * NV <= 32.
// The unrolled parts (registers, steps, stores) are in conv2d_generated.wgsl,
// written by `cargo xtask codegen` (xtask/src/conv2d.rs) and appended to this
// file when the shader is loaded; each stands where a "(generated: ...)" line
// says.
// (generated: accumulators, in conv2d_generated.wgsl)
// This lane's entry of the current chunk of B, 4*NV columns.
// (generated: chunk registers, in conv2d_generated.wgsl)
// A of the lane's rows at the current step: rows 0..3 in av0, 4..7 in av1.
var<private> av0: vec4<f32>;
var<private> av1: vec4<f32>;

// The walk over k = (outer, mid, inner) of the next step, kept incremental
// so a step costs adds and selects, no multiplies, and shared by all lanes:
// - counters k_mid < mid_n, k_inner < inner_n;
// - k_off = outer*st_outer + mid*st_mid + inner*st_inner, the offset of A's
//   element from a row's origin (wrapping u32 arithmetic, so strides may be
//   negative);
// - (ry, rx) = (mid*ys, inner*xs): a row reads A at 2-D position
//   origin + (ry, rx), in range when below (lim_y, lim_x);
// - k_left, the steps left in the chunk (0 masks the unrolled steps past
//   the end of k).
struct Walk {
    mid_n: u32, inner_n: u32,
    st_outer: u32, st_mid: u32, st_inner: u32,
    ys: i32, xs: i32,
    lim_y: u32, lim_x: u32,
    // k_off steps when inner wraps (mid + 1) and when mid wraps (outer + 1).
    d_mid: u32, d_outer: u32,
}

fn walk(mid_n: u32, inner_n: u32, st_outer: u32, st_mid: u32, st_inner: u32,
        ys: i32, xs: i32, lim_y: u32, lim_x: u32) -> Walk {
    return Walk(mid_n, inner_n, st_outer, st_mid, st_inner, ys, xs, lim_y, lim_x,
                st_mid - inner_n * st_inner, st_outer - mid_n * st_mid);
}
var<private> wk: Walk;
var<private> k_mid: u32;
var<private> k_inner: u32;
var<private> k_off: u32;
var<private> k_left: u32;
var<private> ry: i32;
var<private> rx: i32;

// A row of a lane: where it reads A (index and 2-D origin of k = 0),
// whether it exists (else it reads zeros), whether it is a bias row (it
// reads ones), and where its first column goes (if it is stored).
struct Row {
    at: u32,
    y0: i32,
    x0: i32,
    live: bool,
    ones: bool,
    out_at: u32,
    store: bool,
}
var<private> row0: Row;
var<private> row1: Row;
var<private> row2: Row;
var<private> row3: Row;
var<private> row4: Row;
var<private> row5: Row;
var<private> row6: Row;
var<private> row7: Row;

// Lanes 0..CHUNK-1 share their chunk of B with constant-index broadcasts,
// which lavapipe turns into a register extract + splat (a dynamic-index
// shuffle becomes a loop over the lanes).
const CHUNK: u32 = 8u;

// 0: chunks of CHUNK lanes shared by broadcasts (the host sets it only
// where every subgroup has at least CHUNK lanes); n > 0: chunks of
// min(subgroup size, n) lanes shared by dynamic shuffles.
override SHUFFLE_CHUNK: u32 = 0u;

// Rows per lane (1..8), rows of a workgroup ROWS * WG.
override ROWS: u32 = 4u;

// acc{row}{block} += a[row] * (lane j's B entry, block), j dynamic.
// (generated: steps, in conv2d_generated.wgsl)

// Loads this lane's chunk entry of B from bp[at .. at + NV], zeros if !ok.
fn load_chunk(at: u32, ok: bool) {
    let i = select(0u, at, ok);
    bw0 = select(vec4<f32>(0.0), bp[i], ok);
    if (NV > 1u) { bw1 = select(vec4<f32>(0.0), bp[i + 1u], ok); }
    if (NV > 2u) { bw2 = select(vec4<f32>(0.0), bp[i + 2u], ok); }
    if (NV > 3u) { bw3 = select(vec4<f32>(0.0), bp[i + 3u], ok); }
    if (NV > 4u) { bw4 = select(vec4<f32>(0.0), bp[i + 4u], ok); }
    if (NV > 5u) { bw5 = select(vec4<f32>(0.0), bp[i + 5u], ok); }
    if (NV > 6u) { bw6 = select(vec4<f32>(0.0), bp[i + 6u], ok); }
    if (NV > 7u) { bw7 = select(vec4<f32>(0.0), bp[i + 7u], ok); }
}

// Points the walk at reduction index k (once per reduction: the divisions
// are done lane by lane on a CPU).
fn start_walk(k: u32) {
    let outer = qdiv(k, wk.mid_n * wk.inner_n);
    k_mid = qmod(qdiv(k, wk.inner_n), wk.mid_n);
    k_inner = qmod(k, wk.inner_n);
    k_off = outer * wk.st_outer + k_mid * wk.st_mid + k_inner * wk.st_inner;
    ry = i32(k_mid) * wk.ys;
    rx = i32(k_inner) * wk.xs;
}

// A of one row at the walk's position.
fn row_a(r: Row, in_range: bool) -> f32 {
    let ok = r.live && in_range && u32(r.y0 + ry) < wk.lim_y && u32(r.x0 + rx) < wk.lim_x;
    return select(load_a(r.at + k_off, ok), 1.0, r.ones && in_range);
}

// A of the lane's rows at the walk's position (into av0, av1), then one
// step on.
fn next_a() {
    let in_range = k_left > 0u;
    av0 = vec4<f32>(row_a(row0, in_range), 0.0, 0.0, 0.0);
    if (ROWS > 1u) { av0.y = row_a(row1, in_range); }
    if (ROWS > 2u) { av0.z = row_a(row2, in_range); }
    if (ROWS > 3u) { av0.w = row_a(row3, in_range); }
    if (ROWS > 4u) { av1 = vec4<f32>(row_a(row4, in_range), 0.0, 0.0, 0.0); }
    if (ROWS > 5u) { av1.y = row_a(row5, in_range); }
    if (ROWS > 6u) { av1.z = row_a(row6, in_range); }
    if (ROWS > 7u) { av1.w = row_a(row7, in_range); }

    k_left = select(0u, k_left - 1u, in_range);
    k_inner += 1u;
    k_off += wk.st_inner;
    rx += wk.xs;
    let wrap = k_inner == wk.inner_n;
    k_inner = select(k_inner, 0u, wrap);
    rx = select(rx, 0, wrap);
    k_mid = select(k_mid, k_mid + 1u, wrap);
    ry = select(ry, ry + wk.ys, wrap);
    k_off += select(0u, wk.d_mid, wrap);
    let wrap2 = k_mid == wk.mid_n;
    k_mid = select(k_mid, 0u, wrap2);
    ry = select(ry, 0, wrap2);
    k_off += select(0u, wk.d_outer, wrap2);
}

// The whole reduction: k in [first, end), B entries of k at bp[b_at + k*NV].
fn reduce(first: u32, end: u32, b_at: u32, lane: u32, sgs: u32) {
    // A subgroup whose rows all lie past the end has nothing to do.
    // (Rows past ROWS are never set: store is false.)
    if (subgroupAll(!row0.store && !row1.store && !row2.store && !row3.store && !row4.store && !row5.store && !row6.store && !row7.store)) { return; }
    let ch = select(min(sgs, SHUFFLE_CHUNK), CHUNK, SHUFFLE_CHUNK == 0u);
    start_walk(first);
    for (var k0 = first; k0 < end; k0 += ch) {
        load_chunk(b_at + (k0 + lane) * NV, lane < ch && k0 + lane < end);
        k_left = min(ch, end - k0);
        if (SHUFFLE_CHUNK == 0u) {
            next_a(); step0(); next_a(); step1(); next_a(); step2(); next_a(); step3();
            next_a(); step4(); next_a(); step5(); next_a(); step6(); next_a(); step7();
        } else {
            for (var j = 0u; j < ch; j++) { next_a(); step_shuffle(j); }
        }
    }
}

// ---------------------------------------------------------------- window mode
// KW = 3 and ROWS = 4, a lane's 4 rows adjacent pixels of one image row:
// - WINDOW = S = 1 or 2, the forward with stride S: at tap kx row r reads x
//   at column x0 + r*S + kx of one input row;
// - WINDOW = 3, the input gradient with stride 1: at tap mx row r reads dy
//   at column x0 + r - mx.
// - WINDOW = 4, the input gradient with stride 2 (ROWS = 8), lanes over the
//   input rows of one phase in y (wg.z % 2): of 8 adjacent pixels ix0 ..
//   ix0 + 7, taps kx = 0, 2 reach the four with ix + P even (rows 0..3) and
//   kx = 1 the four others (rows 4..7), all reading dy at the 5 columns
//   from floor((ix0 + P - 1) / 2) on: 5 loads for 12 multiply-adds a column.
// - With ROWS = 8 at stride 1 (WINDOW = 1, 3), 8 adjacent pixels read 10.
// So the three taps of the four rows read 6 (9 for S = 2) distinct values
// instead of 12. k runs over pairs (input channel, ky) of the forward or
// (output channel, my) of the input gradient, CHUNK to a chunk: lane j holds
// the B entries of the three taps of pair j (tw{kx}*); for each pair the
// lanes load its window once and run its three taps with lane j's entries
// broadcast. 0 is off.
override WINDOW: u32 = 0u;
const ZERO4 = vec4<f32>(0.0);
// (generated: tap registers, in conv2d_generated.wgsl)
// win{kx}: component r is row r's A at tap kx of the current pair.
var<private> win0: vec4<f32>;
var<private> win1: vec4<f32>;
var<private> win2: vec4<f32>;
// With 8 rows (WINDOW = 1 or 3): rows 4..7 at tap kx.
var<private> win0b: vec4<f32>;
var<private> win1b: vec4<f32>;
var<private> win2b: vec4<f32>;
// The next pair as the offset of its A row from a row's origin, and its
// ky (my); the pairs left in the current chunk.
var<private> pair_off: u32;
var<private> pair_ky: u32;
var<private> pair_left: u32;
// How pairs advance: a row reads A at y = y0 + y_sign*ky and x = x0 +
// x_shift + e (element e of the window), in range below (lim_y, lim_x);
// pair_off moves by st_ky per ky and by d_wrap more when ky wraps at kh
// (wrapping u32 arithmetic, so steps may be negative), and ky wraps at n_ky.
struct PairWalk {
    y_sign: i32, x_shift: i32,
    lim_y: u32, lim_x: u32,
    st_ky: u32, d_wrap: u32,
    n_ky: u32,
}
var<private> pw: PairWalk;

// This lane's B entries of its pair's three taps from bp[at ..], zeros if !ok.
// (generated: load taps, in conv2d_generated.wgsl)

// a as vec4s (the host binds the same buffer), for windows loaded whole.
@group(0) @binding(7) var<storage, read_write> a4: array<vec4<elem7>>;
// Where A's rows, planes and view are whole vec4s (the host checks), the
// offset of a window's first element in its vec4, the same for every lane;
// 4 is off (scalar loads). A window is then 2-5 vec4 loads instead of 5-17
// scalar ones: lavapipe runs a load lane by lane, and per pair the loads
// cost as much as the multiply-adds. A vec4 lies wholly inside or wholly
// outside a row, so one range check covers it.
override A4_SHIFT: u32 = 4u;
// The next pair's window as vec4s: wq[j] holds elements 4j - A4_SHIFT ..
var<private> wq: array<vec4<f32>, 5>;

// With A4_SHIFT < 4: the vec4s wholly inside the next pair's window of
// `len` elements. Elements in a vec4 that sticks out load as scalars: a
// vec4 costs lavapipe most of what its four scalars do.
fn load_window4(len: u32, ok_y: bool) {
    let first = row0.at + pair_off + u32(pw.x_shift) - A4_SHIFT;
    let x = row0.x0 + pw.x_shift - i32(A4_SHIFT);
    let w = pw.lim_x;
    if (whole_vec4(0u, len)) { wq[0] = row_vec4(first, x, ok_y, w); }
    if (whole_vec4(1u, len)) { wq[1] = row_vec4(first + 4u, x + 4, ok_y, w); }
    if (whole_vec4(2u, len)) { wq[2] = row_vec4(first + 8u, x + 8, ok_y, w); }
    if (whole_vec4(3u, len)) { wq[3] = row_vec4(first + 12u, x + 12, ok_y, w); }
    if (whole_vec4(4u, len)) { wq[4] = row_vec4(first + 16u, x + 16, ok_y, w); }
}

// Whether vec4 j (elements 4j - A4_SHIFT .. + 3) lies inside a window of
// `len` elements.
fn whole_vec4(j: u32, len: u32) -> bool {
    return 4u * j >= A4_SHIFT && 4u * j + 4u <= A4_SHIFT + len;
}

// The vec4 of A at element `at` (a multiple of 4), column x of its row of
// `width`; zeros outside the image.
fn row_vec4(at: u32, x: i32, ok_y: bool, width: u32) -> vec4<f32> {
    let ok = ok_y && u32(x) < width;
    return select(ZERO4, vec4<f32>(a4[select(0u, at / 4u, ok)]), ok);
}

// Element e of a window of `len` at element `at`, column x of its row of
// `width`: from the vec4s in `q` where A4_SHIFT < 4 and its vec4 is whole,
// else loaded.
fn window_element(q: ptr<private, array<vec4<f32>, 5>>, len: u32, e: u32, at: u32, x: i32,
                  ok_y: bool, width: u32) -> f32 {
    let k = A4_SHIFT + e;
    // Nested: a test of pipeline constants alone is cheaper for lavapipe to
    // drop where it is false than one joined to a call.
    if (A4_SHIFT < 4u) {
        if (whole_vec4(k / 4u, len)) {
            return (*q)[k / 4u][k % 4u];
        }
    }
    return load_a(at + e, ok_y && u32(x + i32(e)) < width);
}

// Element e of the next pair's window (after load_window4 where A4_SHIFT <
// 4).
fn window_value(e: i32, ok_y: bool) -> f32 {
    let at = row0.at + pair_off + u32(pw.x_shift);
    let x = row0.x0 + pw.x_shift;
    return window_element(&wq, window_len(), u32(e), at, x, ok_y, pw.lim_x);
}

// Elements in a pair's window: (pixels - 1) * stride + 3, or 5 for the
// stride-2 input gradient's 8 pixels.
fn window_len() -> u32 {
    if (WINDOW == 4u) { return 5u; }
    return (ROWS - 1u) * select(1u, 2u, WINDOW == 2u) + 3u;
}

// The window of the next pair into win0..win2 (zeros if !in_range), then
// one pair on.
fn next_window(in_range: bool) {
    let ok_y = row0.live && in_range && u32(row0.y0 + pw.y_sign * i32(pair_ky)) < pw.lim_y;
    if (A4_SHIFT < 4u) { load_window4(window_len(), ok_y); }
    let e0 = window_value(0, ok_y);
    let e1 = window_value(1, ok_y);
    let e2 = window_value(2, ok_y);
    let e3 = window_value(3, ok_y);
    let e4 = window_value(4, ok_y);
    if (WINDOW == 4u) {
        // 8 pixels: rows 0..3 at taps 0 and 2; rows 4..7 at tap 1 (win1).
        win0 = vec4<f32>(e1, e2, e3, e4);
        win2 = vec4<f32>(e0, e1, e2, e3);
        win1 = select(win0, win2, p.pad % 2u == 1u);
        advance_pair();
        return;
    }
    let e5 = window_value(5, ok_y);
    if (ROWS == 8u) {
        // 8 adjacent pixels, WINDOW = 1 or 3: 10 elements.
        let e6 = window_value(6, ok_y);
        let e7 = window_value(7, ok_y);
        let e8 = window_value(8, ok_y);
        let e9 = window_value(9, ok_y);
        if (WINDOW == 1u) {
            win0 = vec4<f32>(e0, e1, e2, e3);
            win0b = vec4<f32>(e4, e5, e6, e7);
            win1 = vec4<f32>(e1, e2, e3, e4);
            win1b = vec4<f32>(e5, e6, e7, e8);
            win2 = vec4<f32>(e2, e3, e4, e5);
            win2b = vec4<f32>(e6, e7, e8, e9);
        } else {
            win0 = vec4<f32>(e2, e3, e4, e5);
            win0b = vec4<f32>(e6, e7, e8, e9);
            win1 = vec4<f32>(e1, e2, e3, e4);
            win1b = vec4<f32>(e5, e6, e7, e8);
            win2 = vec4<f32>(e0, e1, e2, e3);
            win2b = vec4<f32>(e4, e5, e6, e7);
        }
    } else if (WINDOW == 1u) {
        win0 = vec4<f32>(e0, e1, e2, e3);
        win1 = vec4<f32>(e1, e2, e3, e4);
        win2 = vec4<f32>(e2, e3, e4, e5);
    } else if (WINDOW == 2u) {
        let e6 = window_value(6, ok_y);
        let e7 = window_value(7, ok_y);
        let e8 = window_value(8, ok_y);
        win0 = vec4<f32>(e0, e2, e4, e6);
        win1 = vec4<f32>(e1, e3, e5, e7);
        win2 = vec4<f32>(e2, e4, e6, e8);
    } else {
        // x_shift = -2: element e is at x0 + e - 2, row r's tap mx at e = r + 2 - mx.
        win0 = vec4<f32>(e2, e3, e4, e5);
        win1 = vec4<f32>(e1, e2, e3, e4);
        win2 = vec4<f32>(e0, e1, e2, e3);
    }
    advance_pair();
}

fn advance_pair() {
    pair_ky += 1u;
    pair_off += pw.st_ky;
    let wrap = pair_ky == pw.n_ky;
    pair_ky = select(pair_ky, 0u, wrap);
    pair_off += select(0u, pw.d_wrap, wrap);
}

// (generated: fma rows, in conv2d_generated.wgsl)

// (generated: window pairs, in conv2d_generated.wgsl)

// The reduction in window mode over `pairs` pairs; B entries of k = 3*pair
// + kx at bp[b_at + k*NV].
fn reduce_window(pairs: u32, b_at: u32, lane: u32) {
    // Row 0 holds the lane's window and is live when any of its pixels is.
    if (subgroupAll(!row0.live)) { return; }
    pair_off = 0u;
    pair_ky = 0u;
    for (var q0 = 0u; q0 < pairs; q0 += CHUNK) {
        load_taps(b_at + (q0 + lane) * 3u * NV, lane < CHUNK && q0 + lane < pairs);
        pair_left = min(CHUNK, pairs - q0);
        window_pair0(); window_pair1(); window_pair2(); window_pair3();
        window_pair4(); window_pair5(); window_pair6(); window_pair7();
    }
}

// ------------------------------------------------ weight-gradient window
// For 3-wide kernels at stride S = WINDOW (1 or 2), ROWS = 6, with chunks
// of up to CHUNK output pixels that stop at the end of an output row (the
// host splits the reduction at whole rows): a lane's rows are the taps kx = 0..2 of two pairs
// (ci, ky), rows 0..2 and 3..5, and at step j of a chunk tap kx reads x at
// column (ox0 + j)*S + kx - P of the pair's input row. Each pair's chunk
// is one window of (CHUNK - 1)*S + 3 values: 20 or 34 loads a chunk for
// the lane instead of 48.
// (generated: weight window registers, in conv2d_generated.wgsl)

// Where A4_SHIFT < 4 (x's rows whole vec4s; a chunk starts at a multiple
// of 8 output columns, so its windows all start at the same place in a
// vec4): the vec4s wholly inside the two pairs' windows, as in the forward.
var<private> wqa: array<vec4<f32>, 5>;
var<private> wqb: array<vec4<f32>, 5>;

// Elements in a chunk's window: (CHUNK - 1) * S + 3.
fn weight_window_len() -> u32 {
    return 7u * WINDOW + 3u;
}

fn load_weight_window4(at_a: u32, at_b: u32, x_s: i32, ya: bool, yb: bool) {
    let len = weight_window_len();
    let x = x_s - i32(A4_SHIFT);
    let fa = at_a - A4_SHIFT;
    let fb = at_b - A4_SHIFT;
    let w = p.w;
    if (whole_vec4(0u, len)) { wqa[0] = row_vec4(fa, x, ya, w); wqb[0] = row_vec4(fb, x, yb, w); }
    if (whole_vec4(1u, len)) { wqa[1] = row_vec4(fa + 4u, x + 4, ya, w); wqb[1] = row_vec4(fb + 4u, x + 4, yb, w); }
    if (whole_vec4(2u, len)) { wqa[2] = row_vec4(fa + 8u, x + 8, ya, w); wqb[2] = row_vec4(fb + 8u, x + 8, yb, w); }
    if (whole_vec4(3u, len)) { wqa[3] = row_vec4(fa + 12u, x + 12, ya, w); wqb[3] = row_vec4(fb + 12u, x + 12, yb, w); }
    if (whole_vec4(4u, len)) { wqa[4] = row_vec4(fa + 16u, x + 16, ya, w); wqb[4] = row_vec4(fb + 16u, x + 16, yb, w); }
}

// (generated: weight window loads, in conv2d_generated.wgsl)

// (generated: weight window steps, in conv2d_generated.wgsl)

// The weight gradient's reduction in window mode over output pixels
// [first, end); B entries (packed dy) of pixel k at bp[b_at + k*NV].
fn reduce_weight_window(first: u32, end: u32, b_at: u32, lane: u32) {
    if (subgroupAll(!row0.store && !row3.store)) { return; }
    let ohw = p.oh * p.ow;
    let s = i32(p.stride);
    var k0 = first;
    while (k0 < end) {
        let n = qdiv(k0, ohw);
        let q = k0 - n * ohw;
        let oy = qdiv(q, p.ow);
        let ox = q - oy * p.ow;
        // A chunk stops at the end of its output row: the pixels past it
        // get zeros for dy (and their window values multiply nothing).
        let stop = min(min(end, k0 + p.ow - ox), k0 + CHUNK);
        load_chunk(b_at + (k0 + lane) * NV, lane < CHUNK && k0 + lane < stop);
        let oy_s = i32(oy) * s;
        let ox_s = i32(ox) * s;
        load_weight_window(n * p.a_stride + u32(oy_s) * p.w + u32(ox_s), oy_s, ox_s);
        weight_window_step0(); step0(); weight_window_step1(); step1();
        weight_window_step2(); step2(); weight_window_step3(); step3();
        weight_window_step4(); step4(); weight_window_step5(); step5();
        weight_window_step6(); step6(); weight_window_step7(); step7();
        k0 = stop;
    }
}


// ------------------------------------------------------------ vec4 stores
// In window mode where the output's rows, planes and view are whole vec4s
// (W % 4 == 0 and so on; the host checks), a lane's 4 adjacent pixels of
// one channel are one vec4: a quarter of the store instructions, which
// weigh on lavapipe where a reduction is short (stride-2 phases, 1x1).
// out4 is the output buffer again, as vec4s.
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<elem6>>;
override STORE4: bool = false;

// The input gradient adds to what its output holds instead of overwriting
// it (`conv2d_backward_input_accumulate`): a value read by several nodes
// sums their gradients without a scratch buffer and an extra pass. A
// pipeline constant: a uniform flag tested at each of the hundreds of
// unrolled stores doubled lavapipe's compile time of every kernel.
override ACCUMULATE: bool = false;

// Column c < left of the 4 pixels (row c of the transpose) at base + c*step,
// through the epilogue with scale s[c] and shift b[c].
fn store_block4(m: mat4x4<f32>, base: u32, step: u32, left: u32, s: vec4<f32>, b: vec4<f32>) {
    let t = transpose(m);
    if (left > 0u) { store4(base, finish(t[0], vec4<f32>(s.x), vec4<f32>(b.x))); }
    if (left > 1u) { store4(base + step, finish(t[1], vec4<f32>(s.y), vec4<f32>(b.y))); }
    if (left > 2u) { store4(base + 2u * step, finish(t[2], vec4<f32>(s.z), vec4<f32>(b.z))); }
    if (left > 3u) { store4(base + 3u * step, finish(t[3], vec4<f32>(s.w), vec4<f32>(b.w))); }
}

fn store4(at: u32, val: vec4<f32>) {
    if (ACCUMULATE) {
        out4[at] = vec4<elem6>(vec4<f32>(out4[at]) + val);
    } else {
        out4[at] = vec4<elem6>(val);
    }
}

fn store1(at: u32, val: f32) {
    if (ACCUMULATE) {
        out[at] = elem4(f32(out[at]) + val);
    } else {
        out[at] = elem4(val);
    }
}

// The epilogue of 4 values: scale, shift, ReLU if p.relu.
fn finish(acc: vec4<f32>, s: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let y = acc * s + b;
    return select(y, max(y, ZERO4), p.relu != 0u);
}

// The epilogue of one output of channel k in the direct and tiled kernels.
fn finish1(acc: f32, k: u32) -> f32 {
    var y = acc;
    if (p.affine != 0u) {
        y = y * v[p.v_off + k] + v[p.v_off + p.c_out + k];
    } else if (p.has_bias != 0u) {
        y += v[p.v_off + k];
    }
    return select(y, max(y, 0.0), p.relu != 0u);
}

// v[at + c] for the first `left` c of 4, zeros after.
fn load_v4(at: u32, left: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < min(left, 4u); c++) {
        r[c] = v[at + c];
    }
    return r;
}

// out[base + c*step] = acc[c] (or += where ACCUMULATE) for the first `left` c.
fn store_cols(acc: vec4<f32>, base: u32, step: u32, left: u32) {
    if (left >= 4u) {
        // The usual case, unrolled.
        store1(base, acc.x);
        store1(base + step, acc.y);
        store1(base + 2u * step, acc.z);
        store1(base + 3u * step, acc.w);
        return;
    }
    for (var c = 0u; c < left; c++) {
        store1(base + c * step, acc[c]);
    }
}

// Column c of block gb = g * blocks + block: channel g*count + block*4*NV + c
// of a group of `count`, or none past the group's end.
fn packed_channel(gb: u32, c: u32, count: u32) -> vec2<u32> {
    let local = (gb % p.blocks) * 4u * NV + c;
    return vec2<u32>((gb / p.blocks) * count + local, u32(local < count));
}

// bp for the forward: [G*blocks][R][4*NV], column c = output channel.
@compute @workgroup_size(64)
fn conv2d_pack_forward_weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    let r_len = p.cin_g * p.kh * p.kw;
    let cols = 4u * NV;
    if (i >= p.groups * p.blocks * r_len * cols) { return; }
    let c = i % cols;
    let k = (i / cols) % r_len;
    let ch = packed_channel(i / (cols * r_len), c, p.cout_g);
    out[i] = elem4(load_b(p.b_off + ch.x * r_len + k, ch.y != 0u));
}

// How many t < len have t % S < phase (taps of the earlier phases in one
// dimension).
fn taps_below(phase: u32, len: u32) -> u32 {
    let s = p.stride;
    return qdiv(len, s) * phase + min(qmod(len, s), phase);
}

// Taps of the phases before (phy, phx), phases in row-major order.
fn taps_before(phy: u32, phx: u32) -> u32 {
    let rows_here = taps_below(phy + 1u, p.kh) - taps_below(phy, p.kh);
    return taps_below(phy, p.kh) * p.kw + rows_here * taps_below(phx, p.kw);
}

// bp for the input gradient: [G*blocks][phase][KG][my][mx][4*NV], column c
// = input channel; phase (ky % S, kx % S) holds taps (ky, kx) =
// (phy + S*my, phx + S*mx), so each phase's k runs contiguously.
@compute @workgroup_size(64)
fn conv2d_pack_backward_input_weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                      @builtin(local_invocation_index) lid: u32) {
    // One invocation per (gb, kg, ky, kx, c): where it goes in bp.
    let i = linear_index(wg, nwg, lid);
    let khw = p.kh * p.kw;
    let k_len = p.cout_g * khw;
    let cols = 4u * NV;
    if (i >= p.groups * p.blocks * k_len * cols) { return; }
    let c = i % cols;
    let kx = (i / cols) % p.kw;
    let ky = (i / (cols * p.kw)) % p.kh;
    let kg = (i / (cols * khw)) % p.cout_g;
    let gb = i / (cols * k_len);
    let ch = packed_channel(gb, c, p.cin_g);
    let k = (gb / p.blocks) * p.cout_g + kg;
    let s = p.stride;
    // WINDOW = 4 splits the taps into phases in y only.
    let sx = select(s, 1u, WINDOW == 4u);
    let phy = ky % s;
    let phx = kx % sx;
    let nty = (p.kh - phy + s - 1u) / s;
    let ntx = (p.kw - phx + sx - 1u) / sx;
    let at = gb * k_len + p.cout_g * taps_before(phy, phx) + (kg * nty + ky / s) * ntx + kx / sx;
    out[at * cols + c] = elem4(load_b(p.b_off + (k * p.cin_g + ch.x % p.cin_g) * khw + ky * p.kw + kx, ch.y != 0u));
}

// bp for the weight gradient: [G*blocks][N*OH*OW][4*NV], column c = output
// channel of dy, k = output pixel (grid x/y), G*blocks = grid z. Written as
// vec4s, one pixel per invocation.
@compute @workgroup_size(64)
fn conv2d_pack_dy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let k = linear_index(vec3<u32>(wg.x, wg.y, 0u), nwg, lid);
    let ohw = p.oh * p.ow;
    let pixels = p.n * ohw;
    if (k >= pixels) { return; }
    let n = qdiv(k, ohw);
    let src = p.b_off + n * p.b_stride + (k - n * ohw);
    let gb = wg.z;
    let c0 = (gb % p.blocks) * 4u * NV;
    let first = (gb / p.blocks) * p.cout_g + c0;
    let at = (gb * pixels + k) * NV;
    for (var vb = 0u; vb < NV; vb++) {
        bp[at + vb] = load_b4(src + (first + 4u * vb) * ohw, ohw, true, cols_left(c0, vb, p.cout_g));
    }
}

// Row i of the forward: output pixel i of N*OH*OW, for column c0 of group g.
fn forward_row(i: u32, g: u32, c0: u32) -> Row {
    let ohw = p.oh * p.ow;
    let pix = min(i, p.n * ohw - 1u);
    let n = qdiv(pix, ohw);
    let q = pix - n * ohw;
    let oy = qdiv(q, p.ow);
    let y0 = i32(oy * p.stride) - i32(p.pad);
    let x0 = i32((q - oy * p.ow) * p.stride) - i32(p.pad);
    let at = p.a_off + n * p.a_stride + g * p.cin_g * p.h * p.w + u32(y0) * p.w + u32(x0);
    let out_at = p.o_off + n * p.o_stride + (g * p.cout_g + c0) * ohw + q;
    let live = i < p.n * ohw;
    return Row(at, y0, x0, live, false, out_at, live);
}

// Rows: output pixels (n, oy, ox), ROWS per lane (lid, lid + WG, ... of
// the workgroup's ROWS*WG; 4 adjacent ones in window mode); columns: channels g*KG + c0 .. + 4*NV of block
// wg.z = g * blocks + block; k: (ci, ky, kx).
@compute @workgroup_size(64)
fn conv2d_forward_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32,
                     @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
    let g = wg.z / p.blocks;
    let c0 = (wg.z % p.blocks) * 4u * NV;
    let r_len = p.cin_g * p.kh * p.kw;
    let i0 = (wg.y * nwg.x + wg.x) * ROWS * WG + lid;
    row0 = forward_row(i0, g, c0);
    if (ROWS > 1u) { row1 = forward_row(i0 + 1u * WG, g, c0); }
    if (ROWS > 2u) { row2 = forward_row(i0 + 2u * WG, g, c0); }
    if (ROWS > 3u) { row3 = forward_row(i0 + 3u * WG, g, c0); }
    if (ROWS > 4u) { row4 = forward_row(i0 + 4u * WG, g, c0); }
    if (ROWS > 5u) { row5 = forward_row(i0 + 5u * WG, g, c0); }
    if (ROWS > 6u) { row6 = forward_row(i0 + 6u * WG, g, c0); }
    if (ROWS > 7u) { row7 = forward_row(i0 + 7u * WG, g, c0); }
    wk = walk(p.kh, p.kw, p.h * p.w, p.w, 1u, 1, 1, p.h, p.w);
    reduce(0u, r_len, wg.z * r_len * NV, lane, sgs);
    store_rows(p.oh * p.ow, c0, p.cout_g, p.has_bias + p.affine != 0u, p.v_off + g * p.cout_g + c0);
}

// The forward in window mode (WINDOW != 0). The window and the general
// kernels are entry points of their own: lavapipe compiles all the code an
// entry point calls, dead branches included, and with both in one the
// pipelines took twice as long to compile.
@compute @workgroup_size(64)
fn conv2d_forward_window(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32,
                         @builtin(subgroup_invocation_id) lane: u32) {
    let g = wg.z / p.blocks;
    let c0 = c0_of(wg.z);
    let r_len = p.cin_g * p.kh * p.kw;
    // Lane t: pixels ox .. ox + ROWS - 1 of image row (n, oy).
    let lp = window_lane(linear_index(wg, nwg, lid), p.ow, p.n * p.oh);
    let i = lp.x;
    let ox = lp.y;
    let live = lp.z != 0u;
    let none = 0xffffffffu;
    row0 = forward_row(select(none, i, live), g, c0);
    row1 = forward_row(select(none, i + 1u, live && ox + 1u < p.ow), g, c0);
    row2 = forward_row(select(none, i + 2u, live && ox + 2u < p.ow), g, c0);
    row3 = forward_row(select(none, i + 3u, live && ox + 3u < p.ow), g, c0);
    if (ROWS == 8u) {
        row4 = forward_row(select(none, i + 4u, live && ox + 4u < p.ow), g, c0);
        row5 = forward_row(select(none, i + 5u, live && ox + 5u < p.ow), g, c0);
        row6 = forward_row(select(none, i + 6u, live && ox + 6u < p.ow), g, c0);
        row7 = forward_row(select(none, i + 7u, live && ox + 7u < p.ow), g, c0);
    }
    // Wrapping u32 arithmetic: KH may exceed H where padding is large.
    pw = PairWalk(1, 0, p.h, p.w, p.w, p.h * p.w - p.kh * p.w, p.kh);
    reduce_window(p.cin_g * p.kh, wg.z * r_len * NV, lane);
    store_rows(p.oh * p.ow, c0, p.cout_g, p.has_bias + p.affine != 0u, p.v_off + g * p.cout_g + c0);
}

// Geometry of one phase (phy, phx) of the input gradient: first input
// row/column of the phase, rows/columns per phase, taps.
struct Phase {
    iy_first: u32, ix_first: u32,
    th: u32, tw: u32,
    nty: u32, ntx: u32,
    phy: u32, phx: u32,
}

fn phase_of(z: u32) -> Phase {
    let s = p.stride;
    let phy = qdiv(qmod(z, s * s), s);
    let phx = qmod(z, s);
    let pad = qmod(p.pad, s);
    return Phase(
        qmod(phy + s - pad, s), qmod(phx + s - pad, s),
        qdiv(p.h + s - 1u, s), qdiv(p.w + s - 1u, s),
        select(0u, qdiv(p.kh - phy + s - 1u, s), phy < p.kh),
        select(0u, qdiv(p.kw - phx + s - 1u, s), phx < p.kw),
        phy, phx);
}

// Input pixel i of a phase: (n, iy, ix) and whether it exists.
fn phase_pixel(ph: Phase, i: u32) -> vec4<u32> {
    let total = p.n * ph.th * ph.tw;
    let pix = min(i, total - 1u);
    let row = qdiv(pix, ph.tw);
    let n = qdiv(row, ph.th);
    let iy = ph.iy_first + p.stride * (row - n * ph.th);
    let ix = ph.ix_first + p.stride * (pix - row * ph.tw);
    return vec4<u32>(n, iy, ix, u32(i < total && iy < p.h && ix < p.w));
}

// Row of input pixel i of a phase, for input channel c0 of group g: it
// reads dy at (oy0 - my, ox0 - mx).
fn backward_input_row(ph: Phase, i: u32, g: u32, c0: u32) -> Row {
    let px = phase_pixel(ph, i);
    let oy0 = i32(qdiv(px.y + p.pad - ph.phy, p.stride));
    let ox0 = i32(qdiv(px.z + p.pad - ph.phx, p.stride));
    let at = p.a_off + px.x * p.a_stride + g * p.cout_g * p.oh * p.ow + u32(oy0) * p.ow + u32(ox0);
    let out_at = p.o_off + px.x * p.o_stride + (g * p.cin_g + c0) * p.h * p.w + px.y * p.w + px.z;
    return Row(at, oy0, ox0, px.w != 0u, false, out_at, px.w != 0u);
}

// Input pixel (n, iy, ix) of a WINDOW = 4 lane as a row that stores
// channel c0 of group g there (it reads nothing: row 0 holds the window).
fn input_pixel_row(n: u32, iy: u32, ix: u32, live: bool, g: u32, c0: u32) -> Row {
    let ok = live && ix < p.w;
    let out_at = p.o_off + n * p.o_stride + (g * p.cin_g + c0) * p.h * p.w + iy * p.w + ix;
    return Row(0u, 0, 0, ok, false, select(0u, out_at, ok), ok);
}

// The input gradient at stride 2 in window mode (WINDOW = 4): wg.z = gb * 2
// + phy, lanes over (n, iy) with iy = phy - P (mod 2) and 4 adjacent input
// columns; pairs (kg, my) with ky = phy + 2*my, the phase's taps in y.
@compute @workgroup_size(64)
fn conv2d_backward_input_window_s2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(local_invocation_index) lid: u32,
                                   @builtin(subgroup_invocation_id) lane: u32) {
    // Workgroups alternate between the y-phases, whose tap counts differ
    // (1 and 2 rows of a 3-tall kernel): with a phase per half of the
    // dispatch one of lavapipe's two threads idled (it appears to hand each
    // thread one contiguous range of workgroups; wall time was 20% above
    // CPU time / 2).
    let linear = wg.y * nwg.x + wg.x;
    let phy = linear % 2u;
    let gb = wg.z;
    let g = gb / p.blocks;
    let c0 = (gb % p.blocks) * 4u * NV;
    let odd = p.pad % 2u;
    let th = (p.h + 1u) / 2u;
    let t = (linear / 2u) * WG + lid;
    // A lane: 8 adjacent pixels. Every second one from ix0 + P % 2 has
    // ix + P even and takes taps kx = 0, 2 (rows 0..3); the others take
    // kx = 1 (rows 4..7).
    let tiles = (p.w + 7u) / 8u;
    let image_row = qdiv(t, tiles);
    let n = qdiv(image_row, th);
    let iy = (phy + 2u - odd) % 2u + 2u * (image_row - n * th);
    let ix0 = (t - image_row * tiles) * 8u;
    let live = image_row < p.n * th && iy < p.h;
    let a = ix0 + odd;
    let b = ix0 + 1u - odd;
    row0 = input_pixel_row(n, iy, a, live, g, c0);
    row1 = input_pixel_row(n, iy, a + 2u, live, g, c0);
    row2 = input_pixel_row(n, iy, a + 4u, live, g, c0);
    row3 = input_pixel_row(n, iy, a + 6u, live, g, c0);
    row4 = input_pixel_row(n, iy, b, live, g, c0);
    row5 = input_pixel_row(n, iy, b + 2u, live, g, c0);
    row6 = input_pixel_row(n, iy, b + 4u, live, g, c0);
    row7 = input_pixel_row(n, iy, b + 6u, live, g, c0);
    // Row 0 carries the window: dy rows oy0 - my, columns xb + e.
    let oy0 = (iy + p.pad - phy) / 2u;
    let xb = i32((ix0 + p.pad + 1u) / 2u) - 1;
    row0.at = p.a_off + n * p.a_stride + g * p.cout_g * p.oh * p.ow + oy0 * p.ow + u32(xb);
    row0.y0 = i32(oy0);
    row0.x0 = xb;
    row0.live = live;
    let nty = select(0u, (p.kh - phy + 1u) / 2u, phy < p.kh);
    let ohw = p.oh * p.ow;
    pw = PairWalk(-1, 0, p.oh, p.ow, 0xffffffffu * p.ow, ohw + nty * p.ow, max(nty, 1u));
    // bp: [gb][phy][kg][my][kx] (phases in y only, see the packing).
    let b_at = (gb * p.cout_g * p.kh * p.kw + p.cout_g * taps_below(phy, p.kh) * p.kw) * NV;
    reduce_window(p.cout_g * nty, b_at, lane);
    if (STORE4) {
        // The host checked W % 8 == 0: all 8 pixels exist, from ix0 on,
        // stored as two vec4s a channel (scalar stores took a quarter of
        // the pass).
        pixel_order_s2(odd == 1u);
        row0.out_at -= odd;
    }
    store_rows(p.h * p.w, c0, p.cin_g, false, 0u);
}


// The input gradient is a convolution of dy with the flipped kernel. With
// stride S only the taps ky = (iy + P) mod S (+ S*m) reach input row iy, so
// the input pixels are split into S*S phases (wg.z % (S*S)) whose lanes all
// share the same taps: no lane wastes FMAs on taps that miss its pixel.
// Rows: input pixels of one phase, ROWS per lane; columns: input channels
// of block (wg.z / (S*S)) = g * blocks + block; k: (kg, my, mx), the
// phase's taps.
@compute @workgroup_size(64)
fn conv2d_backward_input_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32,
                            @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
    let ph = phase_of(wg.z);
    let gb = wg.z / (p.stride * p.stride);
    let g = gb / p.blocks;
    let c0 = (gb % p.blocks) * 4u * NV;
    let neg = 0xffffffffu;
    // bp holds the taps of each phase together, phase after phase.
    let khw = p.kh * p.kw;
    let b_at = (gb * p.cout_g * khw + p.cout_g * taps_before(ph.phy, ph.phx)) * NV;
    let i0 = (wg.y * nwg.x + wg.x) * ROWS * WG + lid;
    row0 = backward_input_row(ph, i0, g, c0);
    if (ROWS > 1u) { row1 = backward_input_row(ph, i0 + 1u * WG, g, c0); }
    if (ROWS > 2u) { row2 = backward_input_row(ph, i0 + 2u * WG, g, c0); }
    if (ROWS > 3u) { row3 = backward_input_row(ph, i0 + 3u * WG, g, c0); }
    if (ROWS > 4u) { row4 = backward_input_row(ph, i0 + 4u * WG, g, c0); }
    if (ROWS > 5u) { row5 = backward_input_row(ph, i0 + 5u * WG, g, c0); }
    if (ROWS > 6u) { row6 = backward_input_row(ph, i0 + 6u * WG, g, c0); }
    if (ROWS > 7u) { row7 = backward_input_row(ph, i0 + 7u * WG, g, c0); }
    wk = walk(max(ph.nty, 1u), max(ph.ntx, 1u), p.oh * p.ow, neg * p.ow, neg, -1, -1, p.oh, p.ow);
    reduce(0u, p.cout_g * ph.nty * ph.ntx, b_at, lane, sgs);
    store_rows(p.h * p.w, c0, p.cin_g, false, 0u);
}

// The input gradient in window mode at stride 1 (WINDOW 1 or 3; stride 2
// is `conv2d_backward_input_window_s2`). An entry point of its own, as the
// forward's.
@compute @workgroup_size(64)
fn conv2d_backward_input_window(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32,
                                @builtin(subgroup_invocation_id) lane: u32) {
    // One phase at stride 1: wg.z is the column block.
    let ph = phase_of(wg.z);
    let g = wg.z / p.blocks;
    let c0 = c0_of(wg.z);
    let neg = 0xffffffffu;
    let b_at = wg.z * p.cout_g * p.kh * p.kw * NV;
    // Lane t: pixels ix .. ix + ROWS - 1 of image row (n, iy).
    let lp = window_lane(linear_index(wg, nwg, lid), p.w, p.n * p.h);
    let i = lp.x;
    let ix = lp.y;
    let live = lp.z != 0u;
    let none = 0xffffffffu;
    row0 = backward_input_row(ph, select(none, i, live), g, c0);
    row1 = backward_input_row(ph, select(none, i + 1u, live && ix + 1u < p.w), g, c0);
    row2 = backward_input_row(ph, select(none, i + 2u, live && ix + 2u < p.w), g, c0);
    row3 = backward_input_row(ph, select(none, i + 3u, live && ix + 3u < p.w), g, c0);
    if (ROWS == 8u) {
        row4 = backward_input_row(ph, select(none, i + 4u, live && ix + 4u < p.w), g, c0);
        row5 = backward_input_row(ph, select(none, i + 5u, live && ix + 5u < p.w), g, c0);
        row6 = backward_input_row(ph, select(none, i + 6u, live && ix + 6u < p.w), g, c0);
        row7 = backward_input_row(ph, select(none, i + 7u, live && ix + 7u < p.w), g, c0);
    }
    let ohw = p.oh * p.ow;
    pw = PairWalk(-1, -2, p.oh, p.ow, neg * p.ow, ohw + p.kh * p.ow, p.kh);
    reduce_window(p.cout_g * p.kh, b_at, lane);
    store_rows(p.h * p.w, c0, p.cin_g, false, 0u);
}

// Row r of the weight gradient: weight column r = (ci, ky, kx) of group g,
// or the bias row r = R; it reads x at (oy*S + ky - P, ox*S + kx - P) and
// writes partials[split, g*KG + c0 + c, r].
fn backward_weight_row(r: u32, g: u32, c0: u32, split: u32) -> Row {
    let khw = p.kh * p.kw;
    let r_len = p.cin_g * khw;
    let rr = min(r, r_len - 1u);
    let ci = qdiv(rr, khw);
    let ky = qdiv(rr - ci * khw, p.kw);
    let y0 = i32(ky) - i32(p.pad);
    let x0 = i32(rr - ci * khw - ky * p.kw) - i32(p.pad);
    let at = p.a_off + (g * p.cin_g + ci) * p.h * p.w + u32(y0) * p.w + u32(x0);
    let r1 = r_len + p.has_bias;
    let out_at = (split * p.c_out + g * p.cout_g + c0) * r1 + r;
    return Row(at, y0, x0, r < r_len, r == r_len && p.has_bias != 0u, out_at, r < r1);
}

// Pass 1 of the weight gradient. Rows: weight columns r = (ci, ky, kx) of
// the grid's x (ROWS per lane), plus r = R for the bias when there is one;
// columns: output // channels of block wg.y = g * blocks + block; k: the output pixels
// (n, oy, ox) of split wg.z (p.chunk of them). Writes partial sums
// partials[split, k, r] with R + has_bias entries per channel.
@compute @workgroup_size(64)
fn conv2d_backward_weight_sg(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32,
                             @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
    let first = weight_rows(wg, lid);
    let pixels = p.n * p.oh * p.ow;
    let s = i32(p.stride);
    wk = walk(p.oh, p.ow, p.a_stride, p.stride * p.w, p.stride, s, s, p.h, p.w);
    reduce(first, min(pixels, first + p.chunk), wg.y * pixels * NV, lane, sgs);
    store_rows(p.cin_g * p.kh * p.kw + p.has_bias, c0_of(wg.y), p.cout_g, false, 0u);
}

// The weight gradient in window mode (WINDOW = S), an entry point of its own
// as the forward's.
@compute @workgroup_size(64)
fn conv2d_backward_weight_window(@builtin(workgroup_id) wg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32,
                                 @builtin(subgroup_invocation_id) lane: u32) {
    let first = weight_rows(wg, lid);
    let pixels = p.n * p.oh * p.ow;
    reduce_weight_window(first, min(pixels, first + p.chunk), wg.y * pixels * NV, lane);
    store_rows(p.cin_g * p.kh * p.kw + p.has_bias, c0_of(wg.y), p.cout_g, false, 0u);
}

// First column of column block gb = g * blocks + block.
fn c0_of(gb: u32) -> u32 {
    return (gb % p.blocks) * 4u * NV;
}

// The rows of a weight-gradient lane; returns the first pixel of its split.
fn weight_rows(wg: vec3<u32>, lid: u32) -> u32 {
    // A lane's rows are consecutive, so the rows past R fill few subgroups
    // (which then skip the work).
    let r = (wg.x * WG + lid) * ROWS;
    let g = wg.y / p.blocks;
    let c0 = (wg.y % p.blocks) * 4u * NV;
    row0 = backward_weight_row(r, g, c0, wg.z);
    if (ROWS > 1u) { row1 = backward_weight_row(r + 1u, g, c0, wg.z); }
    if (ROWS > 2u) { row2 = backward_weight_row(r + 2u, g, c0, wg.z); }
    if (ROWS > 3u) { row3 = backward_weight_row(r + 3u, g, c0, wg.z); }
    if (ROWS > 4u) { row4 = backward_weight_row(r + 4u, g, c0, wg.z); }
    if (ROWS > 5u) { row5 = backward_weight_row(r + 5u, g, c0, wg.z); }
    if (ROWS > 6u) { row6 = backward_weight_row(r + 6u, g, c0, wg.z); }
    if (ROWS > 7u) { row7 = backward_weight_row(r + 7u, g, c0, wg.z); }
    return wg.z * p.chunk;
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
        acc += f32(a[sp * per_split + i]);
    }
    let k = qdiv(i, r1);
    let r = i - k * r1;
    if (r == r_len) {
        v[p.v_off + k] = acc;
    } else {
        out[p.o_off + k * r_len + r] = elem4(acc);
    }
}

// ---------------------------------------------------------------- tiled
//
// The forward as an implicit GEMM with workgroup-memory tiles, the usual
// winner on GPUs (it does not pay on lavapipe, where workgroup memory is as
// slow as storage). A workgroup of 256 computes a tile of TM output pixels
// (tile index from the grid's x/y) x TN channels of one group (wg.z =
// g * channel tiles + tile); each invocation holds 4 pixels x 4 channels.
// k = (ci, ky, kx) advances TK at a time through both tiles.

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<array<f32, TM>, TK>;
var<workgroup> tile_b: array<array<f32, TN>, TK>;

@compute @workgroup_size(256)
fn conv2d_forward_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) t: u32) {
    let ohw = p.oh * p.ow;
    let pixels = p.n * ohw;
    let m0 = (wg.y * nwg.x + wg.x) * TM;
    let g = wg.z / p.blocks;
    let n0 = (wg.z % p.blocks) * TN;
    let khw = p.kh * p.kw;
    let r_len = p.cin_g * khw;
    // The pixel this invocation loads into tile_a (column t % TM).
    let lm = m0 + t % TM;
    let lpix = min(lm, pixels - 1u);
    let ln = lpix / ohw;
    let lq = lpix % ohw;
    let iy0 = i32((lq / p.ow) * p.stride) - i32(p.pad);
    let ix0 = i32((lq % p.ow) * p.stride) - i32(p.pad);
    let xbase = p.a_off + ln * p.a_stride + g * p.cin_g * p.h * p.w;
    // The channel row this invocation loads into tile_b.
    let wrow = p.b_off + (g * p.cout_g + n0) * r_len;
    // This invocation's outputs: pixels cm*4 .. +3, channels cn*4 .. +3.
    let cm = t % 16u;
    let cn = t / 16u;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < r_len; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let kk = t / TM + 4u * i;
            let k = k0 + kk;
            let ci = k / khw;
            let ky = (k % khw) / p.kw;
            let kx = k % p.kw;
            let iy = iy0 + i32(ky);
            let ix = ix0 + i32(kx);
            let ok = lm < pixels && k < r_len && u32(iy) < p.h && u32(ix) < p.w;
            tile_a[kk][t % TM] = load_a(xbase + (ci * p.h + u32(iy)) * p.w + u32(ix), ok);
            let bk = t % TK;
            let bn = t / TK + 16u * i;
            let bok = k0 + bk < r_len && n0 + bn < p.cout_g;
            tile_b[bk][bn] = load_b(wrow + bn * r_len + k0 + bk, bok);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = vec4<f32>(tile_a[kk][cm * 4u], tile_a[kk][cm * 4u + 1u],
                               tile_a[kk][cm * 4u + 2u], tile_a[kk][cm * 4u + 3u]);
            let bv = vec4<f32>(tile_b[kk][cn * 4u], tile_b[kk][cn * 4u + 1u],
                               tile_b[kk][cn * 4u + 2u], tile_b[kk][cn * 4u + 3u]);
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let m = m0 + cm * 4u + j;
        if (m >= pixels) { break; }
        let n = m / ohw;
        let q = m % ohw;
        for (var c = 0u; c < 4u; c++) {
            let co = n0 + cn * 4u + c;
            if (co >= p.cout_g) { break; }
            var val = acc[j][c];
            val = finish1(val, g * p.cout_g + co);
            out[p.o_off + n * p.o_stride + (g * p.cout_g + co) * ohw + q] = elem4(val);
        }
    }
}
