// Fully connected layer: y = x W^T + b, PyTorch's nn.Linear layout.
//
// Shape legend: x [N, I] (N rows of I, e.g. a pooled [N, C, 1, 1] with
// I = C), W [O, I] row-major, b [O], y [N, O]. Row n of a batch operand
// starts at t_off + n * t_stride; W, b, dW, db are contiguous from their
// offset. One invocation per output element; the sizes of a classifier head
// (I, O <= ~1000) leave nothing to gain from tiling.
//
// Binding roles per entry point (the host passes tensors in this order):
//   forward:          a = x,  b = W,  c = y,  d = bias
//   backward_input:   a = dy, b = W,  c = dx
//   backward_weight:  a = x,  b = dy, c = dW, d = db

struct Params {
    n: u32, fin: u32, fout: u32, total: u32,  // fin = I, fout = O
    a_off: u32, a_stride: u32,
    b_off: u32, b_stride: u32,
    c_off: u32, c_stride: u32,
    d_off: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<elem1>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<elem3>;
@group(0) @binding(4) var<storage, read_write> d: array<f32>;

const WG: u32 = 256u;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// sum_i x[n, i] * W[o, i]
fn dot_row(n: u32, o: u32) -> f32 {
    let xr = p.a_off + n * p.a_stride;
    let wr = p.b_off + o * p.fin;
    var acc = 0.0;
    for (var i = 0u; i < p.fin; i++) {
        acc = fma(f32(a[xr + i]), b[wr + i], acc);
    }
    return acc;
}

// y(c)[n, o] = x(a)[n, :] . W(b)[o, :] + bias(d)[o]
@compute @workgroup_size(256)
fn linear_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let n = idx / p.fout;
    let o = idx % p.fout;
    c[p.c_off + n * p.c_stride + o] = elem3(dot_row(n, o) + d[p.d_off + o]);
}

// y(c)[n, o] = x(a)[n, :] . W(b)[o, :]
@compute @workgroup_size(256)
fn linear_forward_no_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let n = idx / p.fout;
    let o = idx % p.fout;
    c[p.c_off + n * p.c_stride + o] = elem3(dot_row(n, o));
}

// dx(c)[n, i] = sum_o dy(a)[n, o] * W(b)[o, i]
@compute @workgroup_size(256)
fn linear_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let n = idx / p.fin;
    let i = idx % p.fin;
    let dyr = p.a_off + n * p.a_stride;
    var acc = 0.0;
    for (var o = 0u; o < p.fout; o++) {
        acc = fma(f32(a[dyr + o]), b[p.b_off + o * p.fin + i], acc);
    }
    c[p.c_off + n * p.c_stride + i] = elem3(acc);
}

// dW(c)[o, i] = sum_n dy(b)[n, o] * x(a)[n, i]
fn weight_grad(idx: u32) {
    let o = idx / p.fin;
    let i = idx % p.fin;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        acc = fma(b[p.b_off + n * p.b_stride + o], f32(a[p.a_off + n * p.a_stride + i]), acc);
    }
    c[p.c_off + idx] = elem3(acc);
}

// Invocations 0 .. O*I compute dW; the O after them compute
// db(d)[o] = sum_n dy(b)[n, o], so both gradients take one dispatch.
@compute @workgroup_size(256)
fn linear_backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wg, nwg, lid);
    if (idx >= p.total) { return; }
    let weights = p.fout * p.fin;
    if (idx < weights) {
        weight_grad(idx);
        return;
    }
    let o = idx - weights;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        acc += b[p.b_off + n * p.b_stride + o];
    }
    d[p.d_off + o] = acc;
}

// dW only (a layer without bias).
@compute @workgroup_size(256)
fn linear_backward_weight_no_bias(@builtin(workgroup_id) wg: vec3<u32>,
                                  @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wg, nwg, lid);
    if (idx >= p.total) { return; }
    weight_grad(idx);
}
