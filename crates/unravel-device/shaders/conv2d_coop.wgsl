// Convolutions as implicit GEMMs on cooperative matrices (tensor cores):
// f16 operand tiles, f32 accumulation. Each subgroup computes one T x T
// tile of the output matrix; for each step of T along the reduction, its
// lanes gather the two operand tiles into workgroup memory (im2col on the
// fly, converting to f16), load them as cooperative matrices and multiply-
// add into the accumulator. The host closes the tile: `const T`, and the
// aliases TileA (coop_mat TxT<f16, A>), TileB (<f16, B>) and TileC
// (<f32, C>), with `enable wgpu_cooperative_matrix;`.
//
// Shape legend as conv2d.wgsl: N batch, C input channels, H x W input,
// K output channels, KH x KW kernel, S stride, P padding, G groups,
// CG = C / G, KG = K / G, OH x OW output, R = CG*KH*KW. The GEMM of each
// pass, per group g and, for the weight gradient, per split of the pixels
// (both from the grid's z), is out[M x NC] = A[M x KD] * B[KD x NC]:
//   PASS 0, forward:         M = N*OH*OW output pixels, KD = R,        NC = KG
//   PASS 1, input gradient:  M = N*H*W input pixels,    KD = KG*KH*KW, NC = CG
//   PASS 2, weight gradient: M = KG output channels,    KD = pixels of the split,
//                            NC = R + 1 with a bias (a column of ones);
//                            written as partial sums [splits, K, R + has_bias]
//                            that conv2d.wgsl's reduce pass adds up.
// Bindings as conv2d.wgsl: a = x (0, 2) or dy (1); b = w (0, 1) or dy (2);
// v = the epilogue's vector (0); out = y, dx or the partial sums.
//
// A workgroup is 64 invocations: 1 or 2 subgroups (the host chooses this
// path only where subgroups have 32 lanes or more), each with its own tile
// and its own share of workgroup memory. Every subgroup runs the same
// number of steps (out-of-range rows and columns load zeros), so the
// barriers and cooperative operations stay in uniform control flow.

struct Params {
    n: u32, c_in: u32, h: u32, w: u32,
    c_out: u32, kh: u32, kw: u32, stride: u32,
    pad: u32, groups: u32, oh: u32, ow: u32,
    cin_g: u32, cout_g: u32, has_bias: u32, blocks: u32,   // blocks: column tiles per group
    a_off: u32, a_stride: u32, b_off: u32, b_stride: u32,
    o_off: u32, o_stride: u32, v_off: u32, chunk: u32,     // chunk: pixels per split (PASS 2)
    splits: u32, affine: u32, relu: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<elem1>;
@group(0) @binding(2) var<storage, read_write> b: array<elem2>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<elem4>;

override PASS: u32 = 0u;
// The input gradient adds to what dx holds (conv2d.wgsl's ACCUMULATE).
override ACCUMULATE: bool = false;

const WG: u32 = 64u;
const MAX_SUBGROUPS: u32 = 2u;

var<workgroup> tile_a: array<f16, MAX_SUBGROUPS * T * T>;
var<workgroup> tile_b: array<f16, MAX_SUBGROUPS * T * T>;
var<workgroup> tile_c: array<f32, MAX_SUBGROUPS * T * T>;

// The GEMM's extent (M, KD, NC) for this pass.
fn extent() -> vec3<u32> {
    let khw = p.kh * p.kw;
    switch PASS {
        case 0u: { return vec3<u32>(p.n * p.oh * p.ow, p.cin_g * khw, p.cout_g); }
        case 1u: { return vec3<u32>(p.n * p.h * p.w, p.cout_g * khw, p.cin_g); }
        default: { return vec3<u32>(p.cout_g, p.chunk, p.cin_g * khw + p.has_bias); }
    }
}

// x[n, g*CG + ci, iy, ix] with iy, ix possibly outside the image (then 0).
fn input_at(n: u32, g: u32, ci: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || ix < 0 || u32(iy) >= p.h || u32(ix) >= p.w) { return 0.0; }
    return f32(a[p.a_off + n * p.a_stride + ((g * p.cin_g + ci) * p.h + u32(iy)) * p.w + u32(ix)]);
}

// Column r of the weight matrix as (ci, ky, kx).
fn weight_col(r: u32) -> vec3<u32> {
    let khw = p.kh * p.kw;
    return vec3<u32>(r / khw, (r % khw) / p.kw, r % p.kw);
}

// Row i of operand A, column k (zero outside the GEMM).
fn load_a(i: u32, k: u32, g: u32, split: u32) -> f32 {
    let e = extent();
    if (i >= e.x || k >= e.y) { return 0.0; }
    switch PASS {
        case 0u: {
            // Output pixel i, weight column k: the im2col of x.
            let ohw = p.oh * p.ow;
            let n = i / ohw;
            let q = i % ohw;
            let c = weight_col(k);
            let iy = i32((q / p.ow) * p.stride + c.y) - i32(p.pad);
            let ix = i32((q % p.ow) * p.stride + c.z) - i32(p.pad);
            return input_at(n, g, c.x, iy, ix);
        }
        case 1u: {
            // Input pixel i, (co, ky, kx) = k: dy where the tap lands on an
            // output pixel, else 0.
            let hw = p.h * p.w;
            let n = i / hw;
            let q = i % hw;
            let khw = p.kh * p.kw;
            let co = k / khw;
            let ky = (k % khw) / p.kw;
            let kx = k % p.kw;
            let ty = i32(q / p.w) + i32(p.pad) - i32(ky);
            let tx = i32(q % p.w) + i32(p.pad) - i32(kx);
            if (ty < 0 || tx < 0 || u32(ty) % p.stride != 0u || u32(tx) % p.stride != 0u) { return 0.0; }
            let oy = u32(ty) / p.stride;
            let ox = u32(tx) / p.stride;
            if (oy >= p.oh || ox >= p.ow) { return 0.0; }
            return f32(a[p.a_off + n * p.a_stride + ((g * p.cout_g + co) * p.oh + oy) * p.ow + ox]);
        }
        default: {
            // Output channel i, pixel k of the split: dy (bound as b).
            let pixel = split * p.chunk + k;
            let ohw = p.oh * p.ow;
            if (pixel >= p.n * ohw) { return 0.0; }
            let n = pixel / ohw;
            return f32(b[p.b_off + n * p.b_stride + (g * p.cout_g + i) * ohw + pixel % ohw]);
        }
    }
}

// Row k of operand B, column j (zero outside the GEMM).
fn load_b(k: u32, j: u32, g: u32, split: u32) -> f32 {
    let e = extent();
    if (k >= e.y || j >= e.z) { return 0.0; }
    let khw = p.kh * p.kw;
    switch PASS {
        case 0u: {
            // w[g*KG + j, k] (weights are [K, R]).
            return f32(b[p.b_off + (g * p.cout_g + j) * p.cin_g * khw + k]);
        }
        case 1u: {
            // w[g*KG + co, ci = j, ky, kx] for (co, ky, kx) = k.
            let co = k / khw;
            return f32(b[p.b_off + ((g * p.cout_g + co) * p.cin_g + j) * khw + k % khw]);
        }
        default: {
            // Pixel k of the split, weight column j: the im2col of x; the
            // bias column is ones.
            let pixel = split * p.chunk + k;
            let ohw = p.oh * p.ow;
            if (pixel >= p.n * ohw) { return 0.0; }
            if (j == p.cin_g * khw) { return 1.0; }
            let q = pixel % ohw;
            let c = weight_col(j);
            let iy = i32((q / p.ow) * p.stride + c.y) - i32(p.pad);
            let ix = i32((q % p.ow) * p.stride + c.z) - i32(p.pad);
            return input_at(pixel / ohw, g, c.x, iy, ix);
        }
    }
}

// Stores element (i, j) of the output matrix: y through the forward's
// epilogue, dx written or added, or a partial sum of the weight gradient.
fn store(i: u32, j: u32, g: u32, split: u32, acc: f32) {
    let e = extent();
    if (i >= e.x || j >= e.z) { return; }
    switch PASS {
        case 0u: {
            let ohw = p.oh * p.ow;
            let k = g * p.cout_g + j;
            var y = acc;
            if (p.affine != 0u) {
                y = y * v[p.v_off + k] + v[p.v_off + p.c_out + k];
            } else if (p.has_bias != 0u) {
                y += v[p.v_off + k];
            }
            y = select(y, max(y, 0.0), p.relu != 0u);
            out[p.o_off + (i / ohw) * p.o_stride + k * ohw + i % ohw] = elem4(y);
        }
        case 1u: {
            let hw = p.h * p.w;
            let at = p.o_off + (i / hw) * p.o_stride + (g * p.cin_g + j) * hw + i % hw;
            var dx = acc;
            if (ACCUMULATE) { dx += f32(out[at]); }
            out[at] = elem4(dx);
        }
        default: {
            let r1 = p.cin_g * p.kh * p.kw + p.has_bias;
            out[split * p.c_out * r1 + (g * p.cout_g + i) * r1 + j] = elem4(acc);
        }
    }
}

// The grid's x and y count workgroups of tiles (row-major over the output
// matrix's tiles), z is g * splits + split.
@compute @workgroup_size(64)
fn conv2d_coop(@builtin(workgroup_id) wg: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(subgroup_id) sg: u32,
               @builtin(num_subgroups) sgs: u32,
               @builtin(subgroup_invocation_id) lane: u32,
               @builtin(subgroup_size) sg_size: u32) {
    let e = extent();
    let col_tiles = (e.z + T - 1u) / T;
    let tile = (wg.y * nwg.x + wg.x) * sgs + sg;
    let i0 = (tile / col_tiles) * T;
    let j0 = (tile % col_tiles) * T;
    let g = wg.z / p.splits;
    let split = wg.z % p.splits;
    let base = sg * T * T;
    for (var t = lane; t < T * T; t += sg_size) {
        tile_c[base + t] = 0.0;
    }
    workgroupBarrier();
    var acc = coopLoadT<TileC>(&tile_c[base], T);
    for (var k0 = 0u; k0 < e.y; k0 += T) {
        for (var t = lane; t < T * T; t += sg_size) {
            let r = t / T;
            let c = t % T;
            tile_a[base + t] = f16(load_a(i0 + r, k0 + c, g, split));
            tile_b[base + t] = f16(load_b(k0 + r, j0 + c, g, split));
        }
        workgroupBarrier();
        let ta = coopLoadT<TileA>(&tile_a[base], T);
        let tb = coopLoadT<TileB>(&tile_b[base], T);
        acc = coopMultiplyAdd(ta, tb, acc);
        workgroupBarrier();
    }
    coopStoreT(acc, &tile_c[base], T);
    workgroupBarrier();
    for (var t = lane; t < T * T; t += sg_size) {
        store(i0 + t / T, j0 + t % T, g, split, tile_c[base + t]);
    }
}
