// Element-wise ops: ReLU, residual add, gradient accumulation, scaling,
// sigmoid, highway gate.
//
// Shape legend: every operand is a view of N rows of PER contiguous elements
// (PER = C*H*W for an NCHW activation); row n of operand t starts at
// t_off + n * t_stride. The grid's y is the row n, and the x invocations
// stride along the row: no integer division per element (CPU adapters have
// no vector integer division). Forward and backward of each op sit side by side.
// Every operand is f32 or f16 (elemB, set per dispatch by the tensor bound at
// binding B); values are loaded into f32, computed in f32 and rounded once
// when stored.

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
@group(0) @binding(1) var<storage, read_write> a: array<elem1>;
@group(0) @binding(2) var<storage, read_write> b: array<elem2>;
@group(0) @binding(3) var<storage, read_write> c: array<elem3>;
@group(0) @binding(4) var<storage, read_write> d: array<elem4>;
@group(0) @binding(5) var<storage, read_write> e: array<elem5>;
@group(0) @binding(6) var<storage, read_write> f: array<elem6>;

// The same bindings seen as vec4s, for the `*4` entry points the host picks
// when every row length, offset and stride is a multiple of 4 (lavapipe
// moves a vec4 about as fast as a scalar). Their params are in vec4 units.
@group(0) @binding(1) var<storage, read_write> a4: array<vec4<elem1>>;
@group(0) @binding(2) var<storage, read_write> b4: array<vec4<elem2>>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<elem3>>;

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
        b[at(n, i, p.b_off, p.b_stride)] = elem2(max(f32(a[at(n, i, p.a_off, p.a_stride)]), 0.0));
    }
}

// dx(c) = dy(b) where y(a) > 0. Reads the output, so ReLU may run in place.
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let y = f32(a[at(n, i, p.a_off, p.a_stride)]);
        let dy = f32(b[at(n, i, p.b_off, p.b_stride)]);
        c[at(n, i, p.c_off, p.c_stride)] = elem3(select(0.0, dy, y > 0.0));
    }
}

// y(c) = x(a) + r(b). Its backward is the identity to both inputs, which the
// graph handles by sharing (or accumulating) the gradient.
@compute @workgroup_size(256)
fn add_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        c[at(n, i, p.c_off, p.c_stride)] = elem3(f32(a[at(n, i, p.a_off, p.a_stride)]) + f32(b[at(n, i, p.b_off, p.b_stride)]));
    }
}

// y(c) = max(x(a) + r(b), 0): the end of a basic residual unit.
@compute @workgroup_size(256)
fn add_relu_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        c[at(n, i, p.c_off, p.c_stride)] = elem3(max(f32(a[at(n, i, p.a_off, p.a_stride)]) + f32(b[at(n, i, p.b_off, p.b_stride)]), 0.0));
    }
}

// y(b) = scale * x(a): stochastic depth's test-time scaling of a branch.
@compute @workgroup_size(256)
fn scale_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        b[at(n, i, p.b_off, p.b_stride)] = elem2(p.scale * f32(a[at(n, i, p.a_off, p.a_stride)]));
    }
}

// y(b) += x(a): gradient accumulation for a value used twice.
@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let j = at(n, i, p.b_off, p.b_stride);
        b[j] = elem2(f32(b[j]) + f32(a[at(n, i, p.a_off, p.a_stride)]));
    }
}

// t(b) = 1 / (1 + exp(-z(a)))
@compute @workgroup_size(256)
fn sigmoid_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let z = f32(a[at(n, i, p.a_off, p.a_stride)]);
        // exp of a negative argument only, so large |z| neither overflows nor NaNs.
        let ez = exp(-abs(z));
        b[at(n, i, p.b_off, p.b_stride)] = elem2(select(ez / (1.0 + ez), 1.0 / (1.0 + ez), z >= 0.0));
    }
}

// dz(c) = dt(b) * t(a) * (1 - t(a)); reads the output t.
@compute @workgroup_size(256)
fn sigmoid_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let t = f32(a[at(n, i, p.a_off, p.a_stride)]);
        c[at(n, i, p.c_off, p.c_stride)] = elem3(f32(b[at(n, i, p.b_off, p.b_stride)]) * t * (1.0 - t));
    }
}

// Highway gate: y(d) = t(a) * h(b) + (1 - t(a)) * x(c)
@compute @workgroup_size(256)
fn highway_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let t = f32(a[at(n, i, p.a_off, p.a_stride)]);
        let x = f32(c[at(n, i, p.c_off, p.c_stride)]);
        d[at(n, i, p.d_off, p.d_stride)] = elem4(x + t * (f32(b[at(n, i, p.b_off, p.b_stride)]) - x));
    }
}

// dt(e) = dy(d) * (h(b) - x(c)); dh(f) = dy * t(a); dx(d, in place) = dy * (1 - t)
@compute @workgroup_size(256)
fn highway_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let t = f32(a[at(n, i, p.a_off, p.a_stride)]);
        let h = f32(b[at(n, i, p.b_off, p.b_stride)]);
        let x = f32(c[at(n, i, p.c_off, p.c_stride)]);
        let jd = at(n, i, p.d_off, p.d_stride);
        let dy = f32(d[jd]);
        e[at(n, i, p.e_off, p.e_stride)] = elem5(dy * (h - x));
        f[at(n, i, p.f_off, p.f_stride)] = elem6(dy * t);
        d[jd] = elem4(dy * (1.0 - t));
    }
}

// ---- vec4 twins of the hot entry points (same operands, vec4 units) ----

@compute @workgroup_size(256)
fn relu_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        b4[at(n, i, p.b_off, p.b_stride)] = vec4<elem2>(max(vec4<f32>(a4[at(n, i, p.a_off, p.a_stride)]), vec4<f32>(0.0)));
    }
}

@compute @workgroup_size(256)
fn relu_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let y = vec4<f32>(a4[at(n, i, p.a_off, p.a_stride)]);
        let dy = vec4<f32>(b4[at(n, i, p.b_off, p.b_stride)]);
        c4[at(n, i, p.c_off, p.c_stride)] = vec4<elem3>(select(vec4<f32>(0.0), dy, y > vec4<f32>(0.0)));
    }
}

@compute @workgroup_size(256)
fn add_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        c4[at(n, i, p.c_off, p.c_stride)] = vec4<elem3>(vec4<f32>(a4[at(n, i, p.a_off, p.a_stride)]) + vec4<f32>(b4[at(n, i, p.b_off, p.b_stride)]));
    }
}

@compute @workgroup_size(256)
fn add_relu_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let s = vec4<f32>(a4[at(n, i, p.a_off, p.a_stride)]) + vec4<f32>(b4[at(n, i, p.b_off, p.b_stride)]);
        c4[at(n, i, p.c_off, p.c_stride)] = vec4<elem3>(max(s, vec4<f32>(0.0)));
    }
}

@compute @workgroup_size(256)
fn scale_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        b4[at(n, i, p.b_off, p.b_stride)] = vec4<elem2>(p.scale * vec4<f32>(a4[at(n, i, p.a_off, p.a_stride)]));
    }
}

@compute @workgroup_size(256)
fn accumulate4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    for (var i = wg.x * WG + lid; i < p.per; i += nwg.x * WG) {
        let j = at(n, i, p.b_off, p.b_stride);
        b4[j] = vec4<elem2>(vec4<f32>(b4[j]) + vec4<f32>(a4[at(n, i, p.a_off, p.a_stride)]));
    }
}
