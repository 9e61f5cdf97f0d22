// Element-wise ops: ReLU, residual add, gradient accumulation, scaling,
// sigmoid, highway gate.
//
// Shape legend: every operand is a view of N rows of PER contiguous elements
// (PER = C*H*W for an NCHW activation); row n of operand t starts at
// t_off + n * t_stride. The grid's y is the row n, and the x invocations
// stride along the row: no integer division per element (CPU adapters have
// no vector integer division). Forward and backward of each op sit side by side.

struct Params {
    rows: u32,       // N
    per: u32,        // PER
    scale: f32,      // scale_forward only
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

// The same bindings seen as vec4s, for the `*4` entry points the host picks
// when every row length, offset and stride is a multiple of 4 (lavapipe
// moves a vec4 about as fast as a scalar). Their params are in vec4 units.
@group(0) @binding(1) var<storage, read_write> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;

const WG: u32 = 256u;

// Element j of row n of a view.
fn at(n: u32, j: u32, off: u32, stride: u32) -> u32 {
    return off + n * stride + j;
}

// y(b) = max(x(a), 0)
@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        b[at(n, i, p.b_off, p.b_stride)] = max(a[at(n, i, p.a_off, p.a_stride)], 0.0);
    }
}

// dx(c) = dy(b) where y(a) > 0. Reads the output, so ReLU may run in place.
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let y = a[at(n, i, p.a_off, p.a_stride)];
        let dy = b[at(n, i, p.b_off, p.b_stride)];
        c[at(n, i, p.c_off, p.c_stride)] = select(0.0, dy, y > 0.0);
    }
}

// y(c) = x(a) + r(b). Its backward is the identity to both inputs, which the
// graph handles by sharing (or accumulating) the gradient.
@compute @workgroup_size(256)
fn add_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        c[at(n, i, p.c_off, p.c_stride)] = a[at(n, i, p.a_off, p.a_stride)] + b[at(n, i, p.b_off, p.b_stride)];
    }
}

// y(c) = max(x(a) + r(b), 0): the end of a basic residual unit.
@compute @workgroup_size(256)
fn add_relu_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        c[at(n, i, p.c_off, p.c_stride)] = max(a[at(n, i, p.a_off, p.a_stride)] + b[at(n, i, p.b_off, p.b_stride)], 0.0);
    }
}

// y(b) = scale * x(a): stochastic depth's test-time scaling of a branch.
@compute @workgroup_size(256)
fn scale_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        b[at(n, i, p.b_off, p.b_stride)] = p.scale * a[at(n, i, p.a_off, p.a_stride)];
    }
}

// y(b) += x(a): gradient accumulation for a value used twice.
@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let j = at(n, i, p.b_off, p.b_stride);
        b[j] = b[j] + a[at(n, i, p.a_off, p.a_stride)];
    }
}

// t(b) = 1 / (1 + exp(-z(a)))
@compute @workgroup_size(256)
fn sigmoid_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let z = a[at(n, i, p.a_off, p.a_stride)];
        // exp of a negative argument only, so large |z| neither overflows nor NaNs.
        let ez = exp(-abs(z));
        b[at(n, i, p.b_off, p.b_stride)] = select(ez / (1.0 + ez), 1.0 / (1.0 + ez), z >= 0.0);
    }
}

// dz(c) = dt(b) * t(a) * (1 - t(a)); reads the output t.
@compute @workgroup_size(256)
fn sigmoid_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let t = a[at(n, i, p.a_off, p.a_stride)];
        c[at(n, i, p.c_off, p.c_stride)] = b[at(n, i, p.b_off, p.b_stride)] * t * (1.0 - t);
    }
}

// Highway gate: y(d) = t(a) * h(b) + (1 - t(a)) * x(c)
@compute @workgroup_size(256)
fn highway_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let t = a[at(n, i, p.a_off, p.a_stride)];
        let x = c[at(n, i, p.c_off, p.c_stride)];
        d[at(n, i, p.d_off, p.d_stride)] = x + t * (b[at(n, i, p.b_off, p.b_stride)] - x);
    }
}

// dt(e) = dy(d) * (h(b) - x(c)); dh(f) = dy * t(a); dx(d, in place) = dy * (1 - t)
@compute @workgroup_size(256)
fn highway_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let t = a[at(n, i, p.a_off, p.a_stride)];
        let h = b[at(n, i, p.b_off, p.b_stride)];
        let x = c[at(n, i, p.c_off, p.c_stride)];
        let jd = at(n, i, p.d_off, p.d_stride);
        let dy = d[jd];
        e[at(n, i, p.e_off, p.e_stride)] = dy * (h - x);
        f[at(n, i, p.f_off, p.f_stride)] = dy * t;
        d[jd] = dy * (1.0 - t);
    }
}

// ---- vec4 twins of the hot entry points (same operands, vec4 units) ----

@compute @workgroup_size(256)
fn relu_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        b4[at(n, i, p.b_off, p.b_stride)] = max(a4[at(n, i, p.a_off, p.a_stride)], vec4<f32>(0.0));
    }
}

@compute @workgroup_size(256)
fn relu_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let y = a4[at(n, i, p.a_off, p.a_stride)];
        let dy = b4[at(n, i, p.b_off, p.b_stride)];
        c4[at(n, i, p.c_off, p.c_stride)] = select(vec4<f32>(0.0), dy, y > vec4<f32>(0.0));
    }
}

@compute @workgroup_size(256)
fn add_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        c4[at(n, i, p.c_off, p.c_stride)] = a4[at(n, i, p.a_off, p.a_stride)] + b4[at(n, i, p.b_off, p.b_stride)];
    }
}

@compute @workgroup_size(256)
fn add_relu_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let s = a4[at(n, i, p.a_off, p.a_stride)] + b4[at(n, i, p.b_off, p.b_stride)];
        c4[at(n, i, p.c_off, p.c_stride)] = max(s, vec4<f32>(0.0));
    }
}

@compute @workgroup_size(256)
fn scale_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        b4[at(n, i, p.b_off, p.b_stride)] = p.scale * a4[at(n, i, p.a_off, p.a_stride)];
    }
}

@compute @workgroup_size(256)
fn accumulate4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let j = at(n, i, p.b_off, p.b_stride);
        b4[j] = b4[j] + a4[at(n, i, p.a_off, p.a_stride)];
    }
}
