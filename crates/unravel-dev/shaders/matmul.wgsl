// Dense matrix multiply C = A * B, the ceiling the convolution kernels are
// measured against (and a building block for large linear layers).
//
// Shape legend: A is M x K, B is K x N, C is M x N, all row-major f32.
//
// Three variants, chosen once per device and shape:
// - matmul_subgroup8_wide for CPU adapters with 8-lane subgroups (lavapipe)
//   where N % 64 == 0 and K % 4 == 0: as matmul_subgroup8 below, but each
//   lane loads A four k's at a time as one vec4 (a vec4 load costs lavapipe
//   much less than four scalar ones) and owns 16 rows x 8 columns (two vec4
//   blocks of B, 32 columns apart), so each A value broadcast feeds two
//   vec4 FMAs. 22 -> 36 GFLOP/s at 1024^3 on lavapipe. Tile: 16 rows x 64
//   columns a subgroup.
// - matmul_subgroup8 for CPU adapters with 8-lane subgroups (lavapipe): each
//   lane loads one element of A per row block and shares it with its 7
//   neighbours through subgroupBroadcast, so every load feeds 16..64 FMAs.
//   Lavapipe performs storage and workgroup loads lane by lane, so cutting
//   loads per FMA is what pays there. Tile: 16 rows x 32 columns a subgroup,
//   16 x 4 outputs a lane. Needs M % 16 == 0, N % 32 == 0.
// - matmul_tiled for GPUs: 64 x 64 tiles staged in workgroup memory, 4 x 4
//   outputs an invocation. Any M, N, K.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> b: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> a4: array<vec4<f32>>;

// Workgroup of 64 lanes = 8 subgroups of 8 on lavapipe; each subgroup owns a
// 16 x 32 tile of C. Grid: x over N / 32, y over M / (16 * 8).
@compute @workgroup_size(64)
fn matmul_subgroup8(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let sub = lid / 8u;
    let row0 = (wg.y * 8u + sub) * 16u;
    let col4 = wg.x * 8u + lane;          // column block of 4 this lane owns
    if (row0 >= p.m) { return; }
    let n4 = p.n / 4u;
    // Zero-initialised; indexed only by constants so it stays in registers.
    var acc: array<vec4<f32>, 16>;
    let a_lo = (row0 + lane) * p.k;
    let a_hi = (row0 + 8u + lane) * p.k;
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = b4[kk * n4 + col4];
        let lo = a[a_lo + kk];
        let hi = a[a_hi + kk];
        acc[0] += subgroupBroadcast(lo, 0u) * bv;
        acc[1] += subgroupBroadcast(lo, 1u) * bv;
        acc[2] += subgroupBroadcast(lo, 2u) * bv;
        acc[3] += subgroupBroadcast(lo, 3u) * bv;
        acc[4] += subgroupBroadcast(lo, 4u) * bv;
        acc[5] += subgroupBroadcast(lo, 5u) * bv;
        acc[6] += subgroupBroadcast(lo, 6u) * bv;
        acc[7] += subgroupBroadcast(lo, 7u) * bv;
        acc[8] += subgroupBroadcast(hi, 0u) * bv;
        acc[9] += subgroupBroadcast(hi, 1u) * bv;
        acc[10] += subgroupBroadcast(hi, 2u) * bv;
        acc[11] += subgroupBroadcast(hi, 3u) * bv;
        acc[12] += subgroupBroadcast(hi, 4u) * bv;
        acc[13] += subgroupBroadcast(hi, 5u) * bv;
        acc[14] += subgroupBroadcast(hi, 6u) * bv;
        acc[15] += subgroupBroadcast(hi, 7u) * bv;
    }
    let out = row0 * n4 + col4;
    c4[out] = acc[0];
    c4[out + n4] = acc[1];
    c4[out + 2u * n4] = acc[2];
    c4[out + 3u * n4] = acc[3];
    c4[out + 4u * n4] = acc[4];
    c4[out + 5u * n4] = acc[5];
    c4[out + 6u * n4] = acc[6];
    c4[out + 7u * n4] = acc[7];
    c4[out + 8u * n4] = acc[8];
    c4[out + 9u * n4] = acc[9];
    c4[out + 10u * n4] = acc[10];
    c4[out + 11u * n4] = acc[11];
    c4[out + 12u * n4] = acc[12];
    c4[out + 13u * n4] = acc[13];
    c4[out + 14u * n4] = acc[14];
    c4[out + 15u * n4] = acc[15];
}

// Workgroup of 64 lanes = 8 subgroups of 8; each subgroup owns a 16 x 64
// tile of C, lane l columns 4l..4l+3 and 32+4l..32+4l+3. A is read as vec4s
// along k (a4, the same buffer as a). Grid: x over N / 64, y over M / 128.
@compute @workgroup_size(64)
fn matmul_subgroup8_wide(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32,
                         @builtin(subgroup_invocation_id) lane: u32) {
    let sub = lid / 8u;
    let row0 = (wg.y * 8u + sub) * 16u;
    let col4 = wg.x * 16u + lane;
    if (row0 >= p.m) { return; }
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    // Zero-initialised; indexed only by constants so they stay in registers.
    var acc: array<vec4<f32>, 16>;
    var accw: array<vec4<f32>, 16>;
    let a_lo = (row0 + lane) * k4;
    let a_hi = (row0 + 8u + lane) * k4;
    for (var kq = 0u; kq < k4; kq++) {
        let row_b = kq * 4u * n4 + col4;
        let bx = b4[row_b + 0u * n4];
        let wx = b4[row_b + 0u * n4 + 8u];
        let by = b4[row_b + 1u * n4];
        let wy = b4[row_b + 1u * n4 + 8u];
        let bz = b4[row_b + 2u * n4];
        let wz = b4[row_b + 2u * n4 + 8u];
        let bw = b4[row_b + 3u * n4];
        let ww = b4[row_b + 3u * n4 + 8u];
        let lo = a4[a_lo + kq];
        let hi = a4[a_hi + kq];
        acc[0] += subgroupBroadcast(lo.x, 0u) * bx;
        accw[0] += subgroupBroadcast(lo.x, 0u) * wx;
        acc[1] += subgroupBroadcast(lo.x, 1u) * bx;
        accw[1] += subgroupBroadcast(lo.x, 1u) * wx;
        acc[2] += subgroupBroadcast(lo.x, 2u) * bx;
        accw[2] += subgroupBroadcast(lo.x, 2u) * wx;
        acc[3] += subgroupBroadcast(lo.x, 3u) * bx;
        accw[3] += subgroupBroadcast(lo.x, 3u) * wx;
        acc[4] += subgroupBroadcast(lo.x, 4u) * bx;
        accw[4] += subgroupBroadcast(lo.x, 4u) * wx;
        acc[5] += subgroupBroadcast(lo.x, 5u) * bx;
        accw[5] += subgroupBroadcast(lo.x, 5u) * wx;
        acc[6] += subgroupBroadcast(lo.x, 6u) * bx;
        accw[6] += subgroupBroadcast(lo.x, 6u) * wx;
        acc[7] += subgroupBroadcast(lo.x, 7u) * bx;
        accw[7] += subgroupBroadcast(lo.x, 7u) * wx;
        acc[8] += subgroupBroadcast(hi.x, 0u) * bx;
        accw[8] += subgroupBroadcast(hi.x, 0u) * wx;
        acc[9] += subgroupBroadcast(hi.x, 1u) * bx;
        accw[9] += subgroupBroadcast(hi.x, 1u) * wx;
        acc[10] += subgroupBroadcast(hi.x, 2u) * bx;
        accw[10] += subgroupBroadcast(hi.x, 2u) * wx;
        acc[11] += subgroupBroadcast(hi.x, 3u) * bx;
        accw[11] += subgroupBroadcast(hi.x, 3u) * wx;
        acc[12] += subgroupBroadcast(hi.x, 4u) * bx;
        accw[12] += subgroupBroadcast(hi.x, 4u) * wx;
        acc[13] += subgroupBroadcast(hi.x, 5u) * bx;
        accw[13] += subgroupBroadcast(hi.x, 5u) * wx;
        acc[14] += subgroupBroadcast(hi.x, 6u) * bx;
        accw[14] += subgroupBroadcast(hi.x, 6u) * wx;
        acc[15] += subgroupBroadcast(hi.x, 7u) * bx;
        accw[15] += subgroupBroadcast(hi.x, 7u) * wx;
        acc[0] += subgroupBroadcast(lo.y, 0u) * by;
        accw[0] += subgroupBroadcast(lo.y, 0u) * wy;
        acc[1] += subgroupBroadcast(lo.y, 1u) * by;
        accw[1] += subgroupBroadcast(lo.y, 1u) * wy;
        acc[2] += subgroupBroadcast(lo.y, 2u) * by;
        accw[2] += subgroupBroadcast(lo.y, 2u) * wy;
        acc[3] += subgroupBroadcast(lo.y, 3u) * by;
        accw[3] += subgroupBroadcast(lo.y, 3u) * wy;
        acc[4] += subgroupBroadcast(lo.y, 4u) * by;
        accw[4] += subgroupBroadcast(lo.y, 4u) * wy;
        acc[5] += subgroupBroadcast(lo.y, 5u) * by;
        accw[5] += subgroupBroadcast(lo.y, 5u) * wy;
        acc[6] += subgroupBroadcast(lo.y, 6u) * by;
        accw[6] += subgroupBroadcast(lo.y, 6u) * wy;
        acc[7] += subgroupBroadcast(lo.y, 7u) * by;
        accw[7] += subgroupBroadcast(lo.y, 7u) * wy;
        acc[8] += subgroupBroadcast(hi.y, 0u) * by;
        accw[8] += subgroupBroadcast(hi.y, 0u) * wy;
        acc[9] += subgroupBroadcast(hi.y, 1u) * by;
        accw[9] += subgroupBroadcast(hi.y, 1u) * wy;
        acc[10] += subgroupBroadcast(hi.y, 2u) * by;
        accw[10] += subgroupBroadcast(hi.y, 2u) * wy;
        acc[11] += subgroupBroadcast(hi.y, 3u) * by;
        accw[11] += subgroupBroadcast(hi.y, 3u) * wy;
        acc[12] += subgroupBroadcast(hi.y, 4u) * by;
        accw[12] += subgroupBroadcast(hi.y, 4u) * wy;
        acc[13] += subgroupBroadcast(hi.y, 5u) * by;
        accw[13] += subgroupBroadcast(hi.y, 5u) * wy;
        acc[14] += subgroupBroadcast(hi.y, 6u) * by;
        accw[14] += subgroupBroadcast(hi.y, 6u) * wy;
        acc[15] += subgroupBroadcast(hi.y, 7u) * by;
        accw[15] += subgroupBroadcast(hi.y, 7u) * wy;
        acc[0] += subgroupBroadcast(lo.z, 0u) * bz;
        accw[0] += subgroupBroadcast(lo.z, 0u) * wz;
        acc[1] += subgroupBroadcast(lo.z, 1u) * bz;
        accw[1] += subgroupBroadcast(lo.z, 1u) * wz;
        acc[2] += subgroupBroadcast(lo.z, 2u) * bz;
        accw[2] += subgroupBroadcast(lo.z, 2u) * wz;
        acc[3] += subgroupBroadcast(lo.z, 3u) * bz;
        accw[3] += subgroupBroadcast(lo.z, 3u) * wz;
        acc[4] += subgroupBroadcast(lo.z, 4u) * bz;
        accw[4] += subgroupBroadcast(lo.z, 4u) * wz;
        acc[5] += subgroupBroadcast(lo.z, 5u) * bz;
        accw[5] += subgroupBroadcast(lo.z, 5u) * wz;
        acc[6] += subgroupBroadcast(lo.z, 6u) * bz;
        accw[6] += subgroupBroadcast(lo.z, 6u) * wz;
        acc[7] += subgroupBroadcast(lo.z, 7u) * bz;
        accw[7] += subgroupBroadcast(lo.z, 7u) * wz;
        acc[8] += subgroupBroadcast(hi.z, 0u) * bz;
        accw[8] += subgroupBroadcast(hi.z, 0u) * wz;
        acc[9] += subgroupBroadcast(hi.z, 1u) * bz;
        accw[9] += subgroupBroadcast(hi.z, 1u) * wz;
        acc[10] += subgroupBroadcast(hi.z, 2u) * bz;
        accw[10] += subgroupBroadcast(hi.z, 2u) * wz;
        acc[11] += subgroupBroadcast(hi.z, 3u) * bz;
        accw[11] += subgroupBroadcast(hi.z, 3u) * wz;
        acc[12] += subgroupBroadcast(hi.z, 4u) * bz;
        accw[12] += subgroupBroadcast(hi.z, 4u) * wz;
        acc[13] += subgroupBroadcast(hi.z, 5u) * bz;
        accw[13] += subgroupBroadcast(hi.z, 5u) * wz;
        acc[14] += subgroupBroadcast(hi.z, 6u) * bz;
        accw[14] += subgroupBroadcast(hi.z, 6u) * wz;
        acc[15] += subgroupBroadcast(hi.z, 7u) * bz;
        accw[15] += subgroupBroadcast(hi.z, 7u) * wz;
        acc[0] += subgroupBroadcast(lo.w, 0u) * bw;
        accw[0] += subgroupBroadcast(lo.w, 0u) * ww;
        acc[1] += subgroupBroadcast(lo.w, 1u) * bw;
        accw[1] += subgroupBroadcast(lo.w, 1u) * ww;
        acc[2] += subgroupBroadcast(lo.w, 2u) * bw;
        accw[2] += subgroupBroadcast(lo.w, 2u) * ww;
        acc[3] += subgroupBroadcast(lo.w, 3u) * bw;
        accw[3] += subgroupBroadcast(lo.w, 3u) * ww;
        acc[4] += subgroupBroadcast(lo.w, 4u) * bw;
        accw[4] += subgroupBroadcast(lo.w, 4u) * ww;
        acc[5] += subgroupBroadcast(lo.w, 5u) * bw;
        accw[5] += subgroupBroadcast(lo.w, 5u) * ww;
        acc[6] += subgroupBroadcast(lo.w, 6u) * bw;
        accw[6] += subgroupBroadcast(lo.w, 6u) * ww;
        acc[7] += subgroupBroadcast(lo.w, 7u) * bw;
        accw[7] += subgroupBroadcast(lo.w, 7u) * ww;
        acc[8] += subgroupBroadcast(hi.w, 0u) * bw;
        accw[8] += subgroupBroadcast(hi.w, 0u) * ww;
        acc[9] += subgroupBroadcast(hi.w, 1u) * bw;
        accw[9] += subgroupBroadcast(hi.w, 1u) * ww;
        acc[10] += subgroupBroadcast(hi.w, 2u) * bw;
        accw[10] += subgroupBroadcast(hi.w, 2u) * ww;
        acc[11] += subgroupBroadcast(hi.w, 3u) * bw;
        accw[11] += subgroupBroadcast(hi.w, 3u) * ww;
        acc[12] += subgroupBroadcast(hi.w, 4u) * bw;
        accw[12] += subgroupBroadcast(hi.w, 4u) * ww;
        acc[13] += subgroupBroadcast(hi.w, 5u) * bw;
        accw[13] += subgroupBroadcast(hi.w, 5u) * ww;
        acc[14] += subgroupBroadcast(hi.w, 6u) * bw;
        accw[14] += subgroupBroadcast(hi.w, 6u) * ww;
        acc[15] += subgroupBroadcast(hi.w, 7u) * bw;
        accw[15] += subgroupBroadcast(hi.w, 7u) * ww;
    }
    let out = row0 * n4 + col4;
    c4[out + 0u * n4] = acc[0];
    c4[out + 0u * n4 + 8u] = accw[0];
    c4[out + 1u * n4] = acc[1];
    c4[out + 1u * n4 + 8u] = accw[1];
    c4[out + 2u * n4] = acc[2];
    c4[out + 2u * n4 + 8u] = accw[2];
    c4[out + 3u * n4] = acc[3];
    c4[out + 3u * n4 + 8u] = accw[3];
    c4[out + 4u * n4] = acc[4];
    c4[out + 4u * n4 + 8u] = accw[4];
    c4[out + 5u * n4] = acc[5];
    c4[out + 5u * n4 + 8u] = accw[5];
    c4[out + 6u * n4] = acc[6];
    c4[out + 6u * n4 + 8u] = accw[6];
    c4[out + 7u * n4] = acc[7];
    c4[out + 7u * n4 + 8u] = accw[7];
    c4[out + 8u * n4] = acc[8];
    c4[out + 8u * n4 + 8u] = accw[8];
    c4[out + 9u * n4] = acc[9];
    c4[out + 9u * n4 + 8u] = accw[9];
    c4[out + 10u * n4] = acc[10];
    c4[out + 10u * n4 + 8u] = accw[10];
    c4[out + 11u * n4] = acc[11];
    c4[out + 11u * n4 + 8u] = accw[11];
    c4[out + 12u * n4] = acc[12];
    c4[out + 12u * n4 + 8u] = accw[12];
    c4[out + 13u * n4] = acc[13];
    c4[out + 13u * n4 + 8u] = accw[13];
    c4[out + 14u * n4] = acc[14];
    c4[out + 14u * n4 + 8u] = accw[14];
    c4[out + 15u * n4] = acc[15];
    c4[out + 15u * n4 + 8u] = accw[15];
}

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a: array<array<f32, 64>, 16>;   // [k][row]
var<workgroup> tile_b: array<array<f32, 64>, 16>;   // [k][col]

// 16 x 16 invocations, each 4 x 4 outputs of a 64 x 64 tile.
// Grid: x over ceil(N / 64), y over ceil(M / 64).
@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let row_base = wg.y * TILE;
    let col_base = wg.x * TILE;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] = 0.0; } }
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 256 invocations stage 64 x 16 of A and 16 x 64 of B, 4 each.
        for (var e = 0u; e < 4u; e++) {
            let idx = li * 4u + e;          // 0..1023
            let r = idx / TK;
            let kk = idx % TK;
            let ar = row_base + r;
            let ak = k0 + kk;
            tile_a[kk][r] = select(0.0, a[ar * p.k + ak], ar < p.m && ak < p.k);
            let bk = k0 + idx / TILE;
            let bc = col_base + idx % TILE;
            tile_b[idx / TILE][idx % TILE] = select(0.0, b[bk * p.n + bc], bk < p.k && bc < p.n);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk][lid.y * 4u + i];
                bv[i] = tile_b[kk][lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row_base + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col_base + lid.x * 4u + j;
            if (r < p.m && col < p.n) { c[r * p.n + col] = acc[i][j]; }
        }
    }
}
