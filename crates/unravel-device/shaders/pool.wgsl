// Pooling: 2x2 average (stride 2, DenseNet transitions), 3x3 max with
// stride 2 and padding 1 (ImageNet stem), global average; forward and
// backward of each side by side. PyTorch semantics throughout.
//
// Shape legend: `full` is the NCHW side [N, C, H, W] (x forward, dx
// backward); `pooled` is [N, C, HO, WO] (y forward, dy backward; [N, C] for
// the global pool, HO = WO = 1). Both are views: image n starts at
// off + n * stride. argmax: [N, C, HO, WO] contiguous u32, h * W + w of the
// chosen input pixel within its plane.
//
// Every backward writes each dx element exactly once by gathering from the
// outputs whose windows contain it, so overlapping windows need no atomics.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    ho: u32, wo: u32, total: u32, _pad0: u32,
    full_off: u32, full_stride: u32,
    pooled_off: u32, pooled_stride: u32,
    // 1 / (rows, cols) of the entry's thread space per plane, and 1 / C.
    inv_rows: f32, inv_cols: f32, inv_c: f32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> full: array<elem1>;
// `full` seen as vec4s, for the `*4` entry points (W % 4 == 0 and the view's
// offset and stride multiples of 4): lavapipe loads a vec4 per lane about as
// fast as a scalar, so these move 4x the data per load.
@group(0) @binding(1) var<storage, read_write> full4: array<vec4<elem1>>;
@group(0) @binding(2) var<storage, read_write> pooled: array<elem2>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

const WG: u32 = 256u;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// (a / b, a % b). lavapipe turns a u32 division by a non-constant into one
// scalar divide per lane, slower than the loads of these kernels; below 2^24
// an f32 reciprocal (1 / b in `inv`) is off by at most one, which one
// correction fixes. Larger a take the exact division.
fn divmod(a: u32, b: u32, inv: f32) -> vec2<u32> {
    if (a >= 16777216u) {
        return vec2<u32>(a / b, a % b);
    }
    var q = u32(f32(a) * inv);
    var r = i32(a) - i32(q * b);
    if (r < 0) {
        q -= 1u;
        r += i32(b);
    } else if (r >= i32(b)) {
        q += 1u;
        r -= i32(b);
    }
    return vec2<u32>(q, u32(r));
}

// (n, c, row, col) of element i of an [N, C, rows, cols] tensor.
fn split(i: u32, rows: u32, cols: u32) -> vec4<u32> {
    let a = divmod(i, cols, p.inv_cols);
    let b = divmod(a.x, rows, p.inv_rows);
    let d = divmod(b.x, p.c, p.inv_c);
    return vec4<u32>(d.x, d.y, b.y, a.y);
}

// Start of plane (n, c) in `full`.
fn full_plane(q: vec4<u32>) -> u32 {
    return p.full_off + q.x * p.full_stride + q.y * p.h * p.w;
}

fn pooled_at(q: vec4<u32>, oh: u32, ow: u32) -> u32 {
    return p.pooled_off + q.x * p.pooled_stride + (q.y * p.ho + oh) * p.wo + ow;
}

// ---- 2x2 average, stride 2 (HO = H / 2, WO = W / 2, floor) ----------------

// One invocation per output.
@compute @workgroup_size(256)
fn avg_pool2x2_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, p.ho, p.wo);
    let a = full_plane(q) + 2u * q.z * p.w + 2u * q.w;
    let s = f32(full[a]) + f32(full[a + 1u]) + f32(full[a + p.w]) + f32(full[a + p.w + 1u]);
    pooled[pooled_at(q, q.z, q.w)] = elem2(0.25 * s);
}

// One invocation per input pixel; rows/columns that floor dropped get 0.
@compute @workgroup_size(256)
fn avg_pool2x2_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, p.h, p.w);
    let oh = q.z / 2u;
    let ow = q.w / 2u;
    var g = 0.0;
    if (oh < p.ho && ow < p.wo) {
        g = 0.25 * f32(pooled[pooled_at(q, oh, ow)]);
    }
    full[full_plane(q) + q.z * p.w + q.w] = elem1(g);
}

// One invocation per output pair (2g, 2g + 1) of a row: two vec4 loads.
// Thread space [N, C, HO, W / 4].
@compute @workgroup_size(256)
fn avg_pool2x2_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, p.ho, p.w / 4u);
    let a = (full_plane(q) + 2u * q.z * p.w) / 4u + q.w;
    let s = vec4<f32>(full4[a]) + vec4<f32>(full4[a + p.w / 4u]);
    let o = pooled_at(q, q.z, 2u * q.w);
    pooled[o] = elem2(0.25 * (s.x + s.y));
    pooled[o + 1u] = elem2(0.25 * (s.z + s.w));
}

// One invocation per 4 pixels of a row: one vec4 store.
// Thread space [N, C, H, W / 4].
@compute @workgroup_size(256)
fn avg_pool2x2_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, p.h, p.w / 4u);
    let oh = q.z / 2u;
    var g = vec4<f32>(0.0);
    if (oh < p.ho) {
        let o = pooled_at(q, oh, 2u * q.w);
        let g0 = 0.25 * f32(pooled[o]);
        let g1 = 0.25 * f32(pooled[o + 1u]);
        g = vec4<f32>(g0, g0, g1, g1);
    }
    full4[(full_plane(q) + q.z * p.w) / 4u + q.w] = vec4<elem1>(g);
}

// ---- 3x3 max, stride 2, padding 1 (HO = (H - 1) / 2 + 1) -------------------

// One invocation per output. Padding is -inf, so only in-image pixels
// compete; ties keep the first in row-major order and NaN wins, as PyTorch.
@compute @workgroup_size(256)
fn max_pool3x3s2_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, p.ho, p.wo);
    let plane = full_plane(q);
    // Window rows 2*oh-1 ..= 2*oh+1 clipped to the image (never empty).
    let h0 = max(2u * q.z, 1u) - 1u;
    let h1 = min(2u * q.z + 2u, p.h);
    let w0 = max(2u * q.w, 1u) - 1u;
    let w1 = min(2u * q.w + 2u, p.w);
    var best = f32(full[plane + h0 * p.w + w0]);
    var at = h0 * p.w + w0;
    for (var hh = h0; hh < h1; hh++) {
        for (var ww = w0; ww < w1; ww++) {
            let v = f32(full[plane + hh * p.w + ww]);
            if (v > best || v != v) {
                best = v;
                at = hh * p.w + ww;
            }
        }
    }
    pooled[pooled_at(q, q.z, q.w)] = elem2(best);
    argmax[i] = at;
}

// One invocation per 2x2 input quad (2k..2k+1, 2m..2m+1): the windows that
// contain any of its pixels are (k..k+1, m..m+1), so their four argmax and
// dy values are loaded once for four pixels (HO = ceil(H / 2), so the
// quads are indexed like the outputs). A window whose argmax is not a
// pixel contributes nothing to it, which also skips windows not containing it.
@compute @workgroup_size(256)
fn max_pool3x3s2_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, p.ho, p.wo);
    // Clamped neighbours; their gradient is zeroed when they do not exist.
    let k1 = min(q.z + 1u, p.ho - 1u);
    let m1 = min(q.w + 1u, p.wo - 1u);
    let has_r = q.z + 1u < p.ho;
    let has_c = q.w + 1u < p.wo;
    let a = i - q.w - q.z * p.wo;
    let a00 = argmax[a + q.z * p.wo + q.w];
    let a01 = argmax[a + q.z * p.wo + m1];
    let a10 = argmax[a + k1 * p.wo + q.w];
    let a11 = argmax[a + k1 * p.wo + m1];
    let g00 = f32(pooled[pooled_at(q, q.z, q.w)]);
    let g01 = select(0.0, f32(pooled[pooled_at(q, q.z, m1)]), has_c);
    let g10 = select(0.0, f32(pooled[pooled_at(q, k1, q.w)]), has_r);
    let g11 = select(0.0, f32(pooled[pooled_at(q, k1, m1)]), has_r && has_c);
    let plane = full_plane(q);
    for (var dh = 0u; dh < 2u; dh++) {
        for (var dw = 0u; dw < 2u; dw++) {
            let hh = 2u * q.z + dh;
            let ww = 2u * q.w + dw;
            if (hh < p.h && ww < p.w) {
                let me = hh * p.w + ww;
                full[plane + me] = elem1(select(0.0, g00, a00 == me) + select(0.0, g01, a01 == me)
                    + select(0.0, g10, a10 == me) + select(0.0, g11, a11 == me));
            }
        }
    }
}

// ---- global average: [N, C, H, W] -> [N, C] --------------------------------

// One invocation per (n, c).
@compute @workgroup_size(256)
fn global_avg_pool_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, 1u, 1u);
    let plane = full_plane(q);
    let hw = p.h * p.w;
    var s = 0.0;
    for (var k = 0u; k < hw; k++) {
        s += f32(full[plane + k]);
    }
    pooled[pooled_at(q, 0u, 0u)] = elem2(s / f32(hw));
}

@compute @workgroup_size(256)
fn global_avg_pool_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, 1u, 1u);
    let plane = full_plane(q) / 4u;
    let hw4 = p.h * p.w / 4u;
    var s = vec4<f32>(0.0);
    for (var k = 0u; k < hw4; k++) {
        s += vec4<f32>(full4[plane + k]);
    }
    pooled[pooled_at(q, 0u, 0u)] = elem2((s.x + s.y + s.z + s.w) / f32(p.h * p.w));
}

// One invocation per input element: dx = dy / (H * W).
@compute @workgroup_size(256)
fn global_avg_pool_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, p.h, p.w);
    full[full_plane(q) + q.z * p.w + q.w] = elem1(f32(pooled[pooled_at(q, 0u, 0u)]) / f32(p.h * p.w));
}

// One invocation per 4 input elements. Thread space [N, C, 1, H * W / 4].
@compute @workgroup_size(256)
fn global_avg_pool_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let q = split(i, 1u, p.h * p.w / 4u);
    full4[full_plane(q) / 4u + q.w] = vec4<elem1>(vec4<f32>(f32(pooled[pooled_at(q, 0u, 0u)]) / f32(p.h * p.w)));
}
