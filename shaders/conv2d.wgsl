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

// Rows: output pixels (n, oy, ox) of the grid's x/y; columns: channels
// g*KG + c0 .. + 4*NV of block wg.z = g * blocks + block; k: (ci, ky, kx).
@compute @workgroup_size(64)
fn conv2d_forward_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32,
                     @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    let i = linear_index(vec3<u32>(wg.x, wg.y, 0u), nwg, lid);
    let live = i < total;
    let pix = min(i, total - 1u);
    let n = pix / ohw;
    let q = pix % ohw;
    let iy0 = i32((q / p.ow) * p.stride) - i32(p.pad);
    let ix0 = i32((q % p.ow) * p.stride) - i32(p.pad);
    let g = wg.z / p.blocks;
    let c0 = (wg.z % p.blocks) * 4u * NV;
    let hw = p.h * p.w;
    let khw = p.kh * p.kw;
    let r_len = p.cin_g * khw;
    let xbase = p.a_off + n * p.a_stride + g * p.cin_g * hw;
    let wrow = p.b_off + (g * p.cout_g + c0) * r_len;
    let left0 = cols_left(c0, 0u, p.cout_g);
    let left1 = cols_left(c0, 1u, p.cout_g);
    let left2 = cols_left(c0, 2u, p.cout_g);
    let left3 = cols_left(c0, 3u, p.cout_g);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < r_len; k0 += sgs) {
        let kl = k0 + lane;
        let kin = kl < r_len;
        let w0 = load_b4(wrow + kl, r_len, kin, left0);
        var w1 = vec4<f32>(0.0);
        var w2 = vec4<f32>(0.0);
        var w3 = vec4<f32>(0.0);
        if (NV > 1u) { w1 = load_b4(wrow + 4u * r_len + kl, r_len, kin, left1); }
        if (NV > 2u) { w2 = load_b4(wrow + 8u * r_len + kl, r_len, kin, left2); }
        if (NV > 3u) { w3 = load_b4(wrow + 12u * r_len + kl, r_len, kin, left3); }
        let count = min(sgs, r_len - k0);
        var ci = k0 / khw;
        var ky = (k0 % khw) / p.kw;
        var kx = k0 % p.kw;
        for (var j = 0u; j < count; j++) {
            let iy = iy0 + i32(ky);
            let ix = ix0 + i32(kx);
            let ok = live && u32(iy) < p.h && u32(ix) < p.w;
            let xv = load_a(xbase + ci * hw + u32(iy) * p.w + u32(ix), ok);
            acc0 += xv * subgroupShuffle(w0, j);
            if (NV > 1u) { acc1 += xv * subgroupShuffle(w1, j); }
            if (NV > 2u) { acc2 += xv * subgroupShuffle(w2, j); }
            if (NV > 3u) { acc3 += xv * subgroupShuffle(w3, j); }
            kx += 1u;
            if (kx == p.kw) {
                kx = 0u;
                ky += 1u;
                if (ky == p.kh) { ky = 0u; ci += 1u; }
            }
        }
    }
    if (!live) { return; }
    let ybase = p.o_off + n * p.o_stride + (g * p.cout_g + c0) * ohw + q;
    let bbase = p.v_off + g * p.cout_g + c0;
    store_cols(acc0, ybase, ohw, left0, bbase);
    if (NV > 1u) { store_cols(acc1, ybase + 4u * ohw, ohw, left1, bbase + 4u); }
    if (NV > 2u) { store_cols(acc2, ybase + 8u * ohw, ohw, left2, bbase + 8u); }
    if (NV > 3u) { store_cols(acc3, ybase + 12u * ohw, ohw, left3, bbase + 12u); }
}

// out[base + c*step] = acc[c] (+ bias[bias_at + c]) for the first `left` c.
fn store_cols(acc: vec4<f32>, base: u32, step: u32, left: u32, bias_at: u32) {
    for (var c = 0u; c < min(left, 4u); c++) {
        var val = acc[c];
        if (p.has_bias != 0u) { val += v[bias_at + c]; }
        out[base + c * step] = val;
    }
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
    let live = i < total && iy < p.h && ix < p.w;
    // Output row of tap m: oy = oy0 - m.
    let oy0 = i32((iy_first + p.pad - phy) / s + ty);
    let ox0 = i32((ix_first + p.pad - phx) / s + tx);
    let nty = select(0u, (p.kh - phy + s - 1u) / s, phy < p.kh);
    let ntx = select(0u, (p.kw - phx + s - 1u) / s, phx < p.kw);
    let taps = nty * ntx;
    let r_len = p.cout_g * taps;
    let ohw = p.oh * p.ow;
    let khw = p.kh * p.kw;
    let dybase = p.a_off + n * p.a_stride + g * p.cout_g * ohw;
    let left0 = cols_left(c0, 0u, p.cin_g);
    let left1 = cols_left(c0, 1u, p.cin_g);
    let left2 = cols_left(c0, 2u, p.cin_g);
    let left3 = cols_left(c0, 3u, p.cin_g);
    let wstep = khw;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < r_len; k0 += sgs) {
        // This lane's k: weight w[g*KG + kg, c0 + c, phy + S*my, phx + S*mx].
        let kl = min(k0 + lane, r_len - 1u);
        let kin = k0 + lane < r_len;
        let lkg = kl / taps;
        let lmy = (kl % taps) / ntx;
        let lmx = kl % ntx;
        let wat = p.b_off + ((g * p.cout_g + lkg) * p.cin_g + c0) * khw
            + (phy + s * lmy) * p.kw + phx + s * lmx;
        let w0 = load_b4(wat, wstep, kin, left0);
        var w1 = vec4<f32>(0.0);
        var w2 = vec4<f32>(0.0);
        var w3 = vec4<f32>(0.0);
        if (NV > 1u) { w1 = load_b4(wat + 4u * wstep, wstep, kin, left1); }
        if (NV > 2u) { w2 = load_b4(wat + 8u * wstep, wstep, kin, left2); }
        if (NV > 3u) { w3 = load_b4(wat + 12u * wstep, wstep, kin, left3); }
        let count = min(sgs, r_len - k0);
        var kg = k0 / taps;
        var my = (k0 % taps) / ntx;
        var mx = k0 % ntx;
        for (var j = 0u; j < count; j++) {
            let oy = oy0 - i32(my);
            let ox = ox0 - i32(mx);
            let ok = live && u32(oy) < p.oh && u32(ox) < p.ow;
            let gv = load_a(dybase + kg * ohw + u32(oy) * p.ow + u32(ox), ok);
            acc0 += gv * subgroupShuffle(w0, j);
            if (NV > 1u) { acc1 += gv * subgroupShuffle(w1, j); }
            if (NV > 2u) { acc2 += gv * subgroupShuffle(w2, j); }
            if (NV > 3u) { acc3 += gv * subgroupShuffle(w3, j); }
            mx += 1u;
            if (mx == ntx) {
                mx = 0u;
                my += 1u;
                if (my == nty) { my = 0u; kg += 1u; }
            }
        }
    }
    if (!live) { return; }
    let hw = p.h * p.w;
    let xbase = p.o_off + n * p.o_stride + (g * p.cin_g + c0) * hw + iy * p.w + ix;
    store_plain(acc0, xbase, hw, left0);
    if (NV > 1u) { store_plain(acc1, xbase + 4u * hw, hw, left1); }
    if (NV > 2u) { store_plain(acc2, xbase + 8u * hw, hw, left2); }
    if (NV > 3u) { store_plain(acc3, xbase + 12u * hw, hw, left3); }
}

fn store_plain(acc: vec4<f32>, base: u32, step: u32, left: u32) {
    for (var c = 0u; c < min(left, 4u); c++) {
        out[base + c * step] = acc[c];
    }
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
    let live = r < r1;
    let is_bias = r == r_len;
    let rr = min(r, r_len - 1u);
    let ci = rr / khw;
    let ky = (rr % khw) / p.kw;
    let kx = rr % p.kw;
    let g = wg.y / p.blocks;
    let c0 = (wg.y % p.blocks) * 4u * NV;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let pixels = p.n * ohw;
    let first = wg.z * p.chunk;
    let end = min(pixels, first + p.chunk);
    let xplane = p.a_off + (g * p.cin_g + ci) * hw;
    let kyp = i32(ky) - i32(p.pad);
    let kxp = i32(kx) - i32(p.pad);
    let left0 = cols_left(c0, 0u, p.cout_g);
    let left1 = cols_left(c0, 1u, p.cout_g);
    let left2 = cols_left(c0, 2u, p.cout_g);
    let left3 = cols_left(c0, 3u, p.cout_g);
    let dych = (g * p.cout_g + c0) * ohw;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = first; k0 < end; k0 += sgs) {
        // This lane's pixel of dy, for the 4*NV channels.
        let pl = min(k0 + lane, end - 1u);
        let pin = k0 + lane < end;
        let dyat = p.b_off + (pl / ohw) * p.b_stride + dych + pl % ohw;
        let d0 = load_b4(dyat, ohw, pin, left0);
        var d1 = vec4<f32>(0.0);
        var d2 = vec4<f32>(0.0);
        var d3 = vec4<f32>(0.0);
        if (NV > 1u) { d1 = load_b4(dyat + 4u * ohw, ohw, pin, left1); }
        if (NV > 2u) { d2 = load_b4(dyat + 8u * ohw, ohw, pin, left2); }
        if (NV > 3u) { d3 = load_b4(dyat + 12u * ohw, ohw, pin, left3); }
        let count = min(sgs, end - k0);
        var n = k0 / ohw;
        var oy = (k0 % ohw) / p.ow;
        var ox = k0 % p.ow;
        for (var j = 0u; j < count; j++) {
            let iy = i32(oy * p.stride) + kyp;
            let ix = i32(ox * p.stride) + kxp;
            let ok = live && !is_bias && u32(iy) < p.h && u32(ix) < p.w;
            let xv = select(load_a(xplane + n * p.a_stride + u32(iy) * p.w + u32(ix), ok), 1.0, is_bias);
            acc0 += xv * subgroupShuffle(d0, j);
            if (NV > 1u) { acc1 += xv * subgroupShuffle(d1, j); }
            if (NV > 2u) { acc2 += xv * subgroupShuffle(d2, j); }
            if (NV > 3u) { acc3 += xv * subgroupShuffle(d3, j); }
            ox += 1u;
            if (ox == p.ow) {
                ox = 0u;
                oy += 1u;
                if (oy == p.oh) { oy = 0u; n += 1u; }
            }
        }
    }
    if (!live) { return; }
    let at = (wg.z * p.c_out + g * p.cout_g + c0) * r1 + r;
    store_plain(acc0, at, r1, left0);
    if (NV > 1u) { store_plain(acc1, at + 4u * r1, r1, left1); }
    if (NV > 2u) { store_plain(acc2, at + 8u * r1, r1, left2); }
    if (NV > 3u) { store_plain(acc3, at + 12u * r1, r1, left3); }
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
