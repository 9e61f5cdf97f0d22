// Option-A shortcut of the CIFAR ResNets (He et al. 2016, sec. 4.2): a
// parameter-free projection that subsamples by `stride` and zero-pads the
// channel axis, as in the common PyTorch code
// `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))`.
//
// Shape legend: x [N, CI, H, W], y [N, CO, HO, WO] with CO >= CI,
// HO = ceil(H / S), WO = ceil(W / S), S the stride. Input channel c lands on
// output channel c + LO, LO = (CO - CI) / 2 rounded down, so an odd number of
// padding channels puts the extra one after the copied range. Every operand
// is a view: row n of t starts at t_off + n * t_stride.

struct Params {
    n: u32, ci: u32, h: u32, w: u32,
    co: u32, ho: u32, wo: u32, stride: u32,
    lo: u32, total: u32,         // total: threads of this entry point
    a_off: u32, a_stride: u32,   // x (forward) or dy (backward)
    b_off: u32, b_stride: u32,   // y (forward) or dx (backward)
    _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<elem1>;
@group(0) @binding(2) var<storage, read_write> b: array<elem2>;

const WG: u32 = 256u;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// y(b)[n, c, i, j] = x(a)[n, c - LO, S*i, S*j] inside the copied channels,
// 0 in the padding channels. One invocation per output element.
@compute @workgroup_size(256)
fn shortcut_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let per = p.co * p.ho * p.wo;
    let n = idx / per;
    let r = idx % per;
    let c = r / (p.ho * p.wo);
    let ij = r % (p.ho * p.wo);
    let i = ij / p.wo;
    let j = ij % p.wo;
    var v = 0.0;
    // Unsigned wrap-around makes c < LO fail this test too.
    let cin = c - p.lo;
    if (c >= p.lo && cin < p.ci) {
        v = f32(a[p.a_off + n * p.a_stride + (cin * p.h + i * p.stride) * p.w + j * p.stride]);
    }
    b[p.b_off + n * p.b_stride + r] = elem2(v);
}

// dx(b)[n, c, h, w] = dy(a)[n, c + LO, h/S, w/S] where S divides h and w,
// 0 at the pixels the forward skipped. One invocation per input element, so
// dx is fully written without a separate clear.
@compute @workgroup_size(256)
fn shortcut_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let per = p.ci * p.h * p.w;
    let n = idx / per;
    let r = idx % per;
    let c = r / (p.h * p.w);
    let hw = r % (p.h * p.w);
    let h = hw / p.w;
    let w = hw % p.w;
    var v = 0.0;
    if (h % p.stride == 0u && w % p.stride == 0u) {
        let i = h / p.stride;
        let j = w / p.stride;
        v = f32(a[p.a_off + n * p.a_stride + ((c + p.lo) * p.ho + i) * p.wo + j]);
    }
    b[p.b_off + n * p.b_stride + r] = elem2(v);
}

// The same two ops four elements at a time, through vec4 views of the same
// buffers (bindings alias a and b; an entry point uses one pair or the
// other). On lavapipe a load or store costs about the same for a vec4 as for
// a scalar, so this runs 2-3x faster. The host picks these entry points only
// when S is 1 or 2 and W, WO, every offset and every row stride are
// multiples of 4, so each quad lies inside one image row. An entry point
// must not use both a scalar and a vec4 view of one binding.
@group(0) @binding(1) var<storage, read_write> a4: array<vec4<elem1>>;
@group(0) @binding(2) var<storage, read_write> b4: array<vec4<elem2>>;

// Invocation q writes y[n, c, i, 4k .. 4k+4] with q = ((n*CO + c)*HO + i)*WO/4 + k.
@compute @workgroup_size(256)
fn shortcut_forward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let q = linear_index(wg, nwg, lid);
    if (q >= p.total) { return; }
    let wq = p.wo / 4u;
    let per = p.co * p.ho * wq;
    let n = q / per;
    let r = q % per;
    let c = r / (p.ho * wq);
    let ik = r % (p.ho * wq);
    let i = ik / wq;
    let j = (ik % wq) * 4u;
    var v = vec4<f32>(0.0);
    let cin = c - p.lo;
    if (c >= p.lo && cin < p.ci) {
        let at = (p.a_off + n * p.a_stride + (cin * p.h + i * p.stride) * p.w + j * p.stride) / 4u;
        if (p.stride == 1u) {
            v = vec4<f32>(a4[at]);
        } else {
            let lo4 = vec4<f32>(a4[at]);
            let hi4 = vec4<f32>(a4[at + 1u]);
            v = vec4<f32>(lo4.x, lo4.z, hi4.x, hi4.z);
        }
    }
    b4[(p.b_off + n * p.b_stride) / 4u + r] = vec4<elem2>(v);
}

// Invocation q writes dx[n, c, h, 4k .. 4k+4] with q = ((n*CI + c)*H + h)*W/4 + k.
@compute @workgroup_size(256)
fn shortcut_backward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let q = linear_index(wg, nwg, lid);
    if (q >= p.total) { return; }
    let wq = p.w / 4u;
    let per = p.ci * p.h * wq;
    let n = q / per;
    let r = q % per;
    let c = r / (p.h * wq);
    let hk = r % (p.h * wq);
    let h = hk / wq;
    let w = (hk % wq) * 4u;
    var v = vec4<f32>(0.0);
    if (h % p.stride == 0u) {
        let at = p.a_off + n * p.a_stride + ((c + p.lo) * p.ho + h / p.stride) * p.wo + w / p.stride;
        if (p.stride == 1u) {
            v = vec4<f32>(a4[at / 4u]);
        } else {
            // w / 2 is even, so dy[at], dy[at + 1] share one quad, at its
            // start or its middle.
            let d = vec4<f32>(a4[at / 4u]);
            v = select(vec4<f32>(d.x, 0.0, d.y, 0.0), vec4<f32>(d.z, 0.0, d.w, 0.0), at % 4u == 2u);
        }
    }
    b4[(p.b_off + n * p.b_stride) / 4u + r] = vec4<elem2>(v);
}
