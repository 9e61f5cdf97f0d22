// Element-wise ops: ReLU, residual add, scaling, sigmoid, highway gate.
//
// Shape legend: every operand is a view of N rows of PER contiguous elements
// (PER = C*H*W for an NCHW activation); row n of operand t starts at
// t_off + n * t_stride. Element i of the op is row i / PER, column i % PER.
// Forward and backward of each op sit next to each other.

struct Params {
    total: u32,      // N * PER
    per: u32,        // PER
    scale: f32,      // scale_forward / scale_backward only
    _pad: u32,
    a_off: u32, a_stride: u32,
    b_off: u32, b_stride: u32,
    c_off: u32, c_stride: u32,
    d_off: u32, d_stride: u32,
    e_off: u32, e_stride: u32,
    f_off: u32, f_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> d: array<f32>;
@group(0) @binding(5) var<storage, read_write> e: array<f32>;
@group(0) @binding(6) var<storage, read_write> f: array<f32>;

const WG: u32 = 256u;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn at(i: u32, off: u32, stride: u32) -> u32 {
    return off + (i / p.per) * stride + i % p.per;
}

// y(b) = max(x(a), 0)
@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    b[at(i, p.b_off, p.b_stride)] = max(a[at(i, p.a_off, p.a_stride)], 0.0);
}

// dx(c) = dy(b) where y(a) > 0. Reads the output, so ReLU may run in place.
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let y = a[at(i, p.a_off, p.a_stride)];
    let dy = b[at(i, p.b_off, p.b_stride)];
    c[at(i, p.c_off, p.c_stride)] = select(0.0, dy, y > 0.0);
}

// y(c) = x(a) + r(b). Its backward is the identity to both inputs, which the
// graph handles by sharing (or accumulating) the gradient.
@compute @workgroup_size(256)
fn add_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    c[at(i, p.c_off, p.c_stride)] = a[at(i, p.a_off, p.a_stride)] + b[at(i, p.b_off, p.b_stride)];
}

// y(c) = max(x(a) + r(b), 0): the end of a basic residual unit.
@compute @workgroup_size(256)
fn add_relu_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    c[at(i, p.c_off, p.c_stride)] = max(a[at(i, p.a_off, p.a_stride)] + b[at(i, p.b_off, p.b_stride)], 0.0);
}

// y(b) = scale * x(a): stochastic depth's test-time scaling of a branch.
@compute @workgroup_size(256)
fn scale_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    b[at(i, p.b_off, p.b_stride)] = p.scale * a[at(i, p.a_off, p.a_stride)];
}

// dx(b) = scale * dy(a)
@compute @workgroup_size(256)
fn scale_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    b[at(i, p.b_off, p.b_stride)] = p.scale * a[at(i, p.a_off, p.a_stride)];
}

// y(b) += x(a): gradient accumulation for a value used twice.
@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let j = at(i, p.b_off, p.b_stride);
    b[j] = b[j] + a[at(i, p.a_off, p.a_stride)];
}

// t(b) = 1 / (1 + exp(-z(a)))
@compute @workgroup_size(256)
fn sigmoid_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let z = a[at(i, p.a_off, p.a_stride)];
    // exp of a negative argument only, so large |z| neither overflows nor NaNs.
    let ez = exp(-abs(z));
    b[at(i, p.b_off, p.b_stride)] = select(ez / (1.0 + ez), 1.0 / (1.0 + ez), z >= 0.0);
}

// dz(c) = dt(b) * t(a) * (1 - t(a)); reads the output t.
@compute @workgroup_size(256)
fn sigmoid_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let t = a[at(i, p.a_off, p.a_stride)];
    c[at(i, p.c_off, p.c_stride)] = b[at(i, p.b_off, p.b_stride)] * t * (1.0 - t);
}

// y(c) = u(a) * v(b)
@compute @workgroup_size(256)
fn mul_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    c[at(i, p.c_off, p.c_stride)] = a[at(i, p.a_off, p.a_stride)] * b[at(i, p.b_off, p.b_stride)];
}

// du(d) = dy(c) * v(b), dv(e) = dy(c) * u(a)
@compute @workgroup_size(256)
fn mul_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let dy = c[at(i, p.c_off, p.c_stride)];
    d[at(i, p.d_off, p.d_stride)] = dy * b[at(i, p.b_off, p.b_stride)];
    e[at(i, p.e_off, p.e_stride)] = dy * a[at(i, p.a_off, p.a_stride)];
}

// Highway gate: y(d) = t(a) * h(b) + (1 - t(a)) * x(c)
@compute @workgroup_size(256)
fn highway_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let t = a[at(i, p.a_off, p.a_stride)];
    let x = c[at(i, p.c_off, p.c_stride)];
    d[at(i, p.d_off, p.d_stride)] = x + t * (b[at(i, p.b_off, p.b_stride)] - x);
}

// dt(e) = dy(d) * (h(b) - x(c)); dh(f) = dy * t(a); dx(d, in place) = dy * (1 - t)
@compute @workgroup_size(256)
fn highway_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.total) { return; }
    let t = a[at(i, p.a_off, p.a_stride)];
    let h = b[at(i, p.b_off, p.b_stride)];
    let x = c[at(i, p.c_off, p.c_stride)];
    let jd = at(i, p.d_off, p.d_stride);
    let dy = d[jd];
    e[at(i, p.e_off, p.e_stride)] = dy * (h - x);
    f[at(i, p.f_off, p.f_stride)] = dy * t;
    d[jd] = dy * (1.0 - t);
}
