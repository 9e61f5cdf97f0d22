// Dense matrix multiply C = A * B, the ceiling the convolution kernels are
// measured against (and a building block for large linear layers).
//
// Shape legend: A is M x K, B is K x N, C is M x N, all row-major f32.
//
// Two variants, chosen once per device:
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
