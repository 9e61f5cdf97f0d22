// Loops over a private array against named registers on lavapipe: one
// register-blocked subgroup GEMM written three ways, timed against each
// other by examples/loop_registers.rs.
//
// Shape legend: C = A B, A is M x K, B is K x N, C is M x N, N = 4 NV, f32.
//   a:  A stored k-major (A transposed, K x M row-major): A[i][k] = a[k * M + i]
//   b4: B row-major as vec4s:  B[k][4 blk + c] = b4[k * NV + blk][c], blk < NV
//   c4: C row-major as vec4s:  C[i][4 blk + c] = c4[i * NV + blk][c]
// A workgroup is 64 lanes (8 subgroups of 8 on lavapipe). Lane `lid` of
// workgroup x owns the ROWS rows i0 + 64 r (r < ROWS, i0 = 64 ROWS x + lid)
// and all NV vec4 column blocks: ROWS x NV vec4 accumulators. K is walked in
// chunks of 8: lane j loads row k0 + j of B (NV vec4s), and step j of the
// chunk loads A at k0 + j for the lane's rows and takes B's row from lane j
// with subgroupBroadcast(.., j). naga 30 wants that lane index to be a
// const-expression, so the 8 steps are written out in every variant.
// Grid: M / (64 ROWS) workgroups. Needs M % (64 ROWS) == 0, K % 8 == 0.
//
// named:         ROWS = NV = 4 only; named private registers, FMAs written out.
// loops:         a var<private> flat array of accumulators; loops bounded by
//                the override constants ROWS, NV (known when the pipeline is
//                made, so the compiler unrolls them and keeps the array in
//                registers); each step broadcasts block blk, then runs its
//                row loop.
// loops_runtime: the same code with the bounds read from the uniform buffer
//                (p.rows, p.nv, equal to ROWS, NV): the control, whose trip
//                counts and array indices are known only at run time.

struct Params {
    m: u32,
    k: u32,
    rows: u32,
    nv: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;

const WG: u32 = 64u;
const MAX: u32 = 4u;      // most rows, and most blocks, the arrays hold
override ROWS: u32 = 4u;  // 1..=MAX
override NV: u32 = 4u;    // 1..=MAX

// ---- named: 16 accumulators c<row><block>, this lane's row of B in the
// chunk (nb0..nb3), A at the lane's 4 rows (na.x..na.w).
var<private> c00: vec4<f32>; var<private> c01: vec4<f32>; var<private> c02: vec4<f32>; var<private> c03: vec4<f32>;
var<private> c10: vec4<f32>; var<private> c11: vec4<f32>; var<private> c12: vec4<f32>; var<private> c13: vec4<f32>;
var<private> c20: vec4<f32>; var<private> c21: vec4<f32>; var<private> c22: vec4<f32>; var<private> c23: vec4<f32>;
var<private> c30: vec4<f32>; var<private> c31: vec4<f32>; var<private> c32: vec4<f32>; var<private> c33: vec4<f32>;
var<private> nb0: vec4<f32>; var<private> nb1: vec4<f32>; var<private> nb2: vec4<f32>; var<private> nb3: vec4<f32>;
var<private> na: vec4<f32>;

fn n_load_a(at: u32) {
    na = vec4<f32>(a[at], a[at + WG], a[at + 2u * WG], a[at + 3u * WG]);
}
// One block of B's broadcast row into the 4 rows' accumulators.
fn n_blk0(x: vec4<f32>) { c00 += na.x * x; c10 += na.y * x; c20 += na.z * x; c30 += na.w * x; }
fn n_blk1(x: vec4<f32>) { c01 += na.x * x; c11 += na.y * x; c21 += na.z * x; c31 += na.w * x; }
fn n_blk2(x: vec4<f32>) { c02 += na.x * x; c12 += na.y * x; c22 += na.z * x; c32 += na.w * x; }
fn n_blk3(x: vec4<f32>) { c03 += na.x * x; c13 += na.y * x; c23 += na.z * x; c33 += na.w * x; }

@compute @workgroup_size(64)
fn named(@builtin(workgroup_id) wg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32,
         @builtin(subgroup_invocation_id) lane: u32) {
    let i0 = wg.x * 4u * WG + lid;
    for (var k0 = 0u; k0 < p.k; k0 += 8u) {
        let at = (k0 + lane) * 4u;
        nb0 = b4[at]; nb1 = b4[at + 1u]; nb2 = b4[at + 2u]; nb3 = b4[at + 3u];
        n_load_a(k0 * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 0u)); n_blk1(subgroupBroadcast(nb1, 0u));
        n_blk2(subgroupBroadcast(nb2, 0u)); n_blk3(subgroupBroadcast(nb3, 0u));
        n_load_a((k0 + 1u) * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 1u)); n_blk1(subgroupBroadcast(nb1, 1u));
        n_blk2(subgroupBroadcast(nb2, 1u)); n_blk3(subgroupBroadcast(nb3, 1u));
        n_load_a((k0 + 2u) * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 2u)); n_blk1(subgroupBroadcast(nb1, 2u));
        n_blk2(subgroupBroadcast(nb2, 2u)); n_blk3(subgroupBroadcast(nb3, 2u));
        n_load_a((k0 + 3u) * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 3u)); n_blk1(subgroupBroadcast(nb1, 3u));
        n_blk2(subgroupBroadcast(nb2, 3u)); n_blk3(subgroupBroadcast(nb3, 3u));
        n_load_a((k0 + 4u) * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 4u)); n_blk1(subgroupBroadcast(nb1, 4u));
        n_blk2(subgroupBroadcast(nb2, 4u)); n_blk3(subgroupBroadcast(nb3, 4u));
        n_load_a((k0 + 5u) * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 5u)); n_blk1(subgroupBroadcast(nb1, 5u));
        n_blk2(subgroupBroadcast(nb2, 5u)); n_blk3(subgroupBroadcast(nb3, 5u));
        n_load_a((k0 + 6u) * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 6u)); n_blk1(subgroupBroadcast(nb1, 6u));
        n_blk2(subgroupBroadcast(nb2, 6u)); n_blk3(subgroupBroadcast(nb3, 6u));
        n_load_a((k0 + 7u) * p.m + i0);
        n_blk0(subgroupBroadcast(nb0, 7u)); n_blk1(subgroupBroadcast(nb1, 7u));
        n_blk2(subgroupBroadcast(nb2, 7u)); n_blk3(subgroupBroadcast(nb3, 7u));
    }
    let o0 = i0 * 4u;
    let o1 = (i0 + WG) * 4u;
    let o2 = (i0 + 2u * WG) * 4u;
    let o3 = (i0 + 3u * WG) * 4u;
    c4[o0] = c00; c4[o0 + 1u] = c01; c4[o0 + 2u] = c02; c4[o0 + 3u] = c03;
    c4[o1] = c10; c4[o1 + 1u] = c11; c4[o1 + 2u] = c12; c4[o1 + 3u] = c13;
    c4[o2] = c20; c4[o2 + 1u] = c21; c4[o2 + 2u] = c22; c4[o2 + 3u] = c23;
    c4[o3] = c30; c4[o3 + 1u] = c31; c4[o3 + 2u] = c32; c4[o3 + 3u] = c33;
}

// ---- loops and loops_runtime: one body, l_gemm, whose loops run to
// `rows` and `nv`; the entry points differ only in where those come from.
var<private> acc: array<vec4<f32>, MAX * MAX>;  // [r * MAX + blk]
var<private> bw: array<vec4<f32>, MAX>;  // this lane's row of B in the chunk
var<private> av: array<f32, MAX>;        // A at the lane's rows, this step

fn l_load_a(at: u32, rows: u32) {
    for (var r = 0u; r < rows; r++) { av[r] = a[at + r * WG]; }
}
// Block blk of B's broadcast row into every row's accumulator.
fn l_blk(blk: u32, x: vec4<f32>, rows: u32) {
    for (var r = 0u; r < rows; r++) { acc[r * MAX + blk] += av[r] * x; }
}

fn l_gemm(x: u32, lid: u32, lane: u32, rows: u32, nv: u32) {
    let i0 = x * rows * WG + lid;
    for (var k0 = 0u; k0 < p.k; k0 += 8u) {
        let at = (k0 + lane) * nv;
        for (var blk = 0u; blk < nv; blk++) { bw[blk] = b4[at + blk]; }
        l_load_a(k0 * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 0u), rows); }
        l_load_a((k0 + 1u) * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 1u), rows); }
        l_load_a((k0 + 2u) * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 2u), rows); }
        l_load_a((k0 + 3u) * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 3u), rows); }
        l_load_a((k0 + 4u) * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 4u), rows); }
        l_load_a((k0 + 5u) * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 5u), rows); }
        l_load_a((k0 + 6u) * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 6u), rows); }
        l_load_a((k0 + 7u) * p.m + i0, rows);
        for (var blk = 0u; blk < nv; blk++) { l_blk(blk, subgroupBroadcast(bw[blk], 7u), rows); }
    }
    for (var r = 0u; r < rows; r++) {
        for (var blk = 0u; blk < nv; blk++) { c4[(i0 + r * WG) * nv + blk] = acc[r * MAX + blk]; }
    }
}

@compute @workgroup_size(64)
fn loops(@builtin(workgroup_id) wg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32,
         @builtin(subgroup_invocation_id) lane: u32) {
    l_gemm(wg.x, lid, lane, ROWS, NV);
}

@compute @workgroup_size(64)
fn loops_runtime(@builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
                 @builtin(subgroup_invocation_id) lane: u32) {
    l_gemm(wg.x, lid, lane, p.rows, p.nv);
}
