// Copy between two NCHW views of the same shape: the forward of a channel
// concatenation (each input copied into its channel slice of the output) and
// its backward, the split (each slice of dy copied out to its input's grad).
//
// Shape legend: both operands are N rows of PER = C*H*W contiguous elements;
// row n of src starts at src_off + n * src_stride, of dst at
// dst_off + n * dst_stride. Element i of the copy is row i / PER, column i % PER.
// Either side may be f32 or f16 (elem1, elem2: set per dispatch), so the same
// copy converts between them.

struct Params {
    total: u32,      // invocations: N * PER, or N * PER / 4 for copy_forward_vec4
    per: u32,        // PER (PER / 4 for copy_forward_vec4)
    src_off: u32, src_stride: u32,   // in elements (in quads for the vec4 entry)
    dst_off: u32, dst_stride: u32,
    _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> src: array<elem1>;
@group(0) @binding(2) var<storage, read_write> dst: array<elem2>;
// vec4 views of the same bindings: on lavapipe a vec4 load or store costs
// about as much as a scalar one. An entry point uses one pair or the other.
@group(0) @binding(1) var<storage, read_write> src4: array<vec4<elem1>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<elem2>>;

const WG: u32 = 256u;

// dst = src. The backward of a concat is this same copy with the roles
// swapped, so there is one entry point for both directions.
@compute @workgroup_size(256)
fn copy_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.total) { return; }
    let n = i / p.per;
    let k = i % p.per;
    dst[p.dst_off + n * p.dst_stride + k] = elem2(src[p.src_off + n * p.src_stride + k]);
}

// The same, four elements per invocation, when PER, the offsets and the
// strides are multiples of 4 (all counted in quads here).
@compute @workgroup_size(256)
fn copy_forward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.total) { return; }
    let n = i / p.per;
    let k = i % p.per;
    dst4[p.dst_off + n * p.dst_stride + k] = vec4<elem2>(src4[p.src_off + n * p.src_stride + k]);
}
