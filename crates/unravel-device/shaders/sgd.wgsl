// SGD with momentum, optional Nesterov and weight decay, with the semantics
// of torch.optim.SGD (dampening 0) applied to a whole parameter arena.
//
// Shape legend: L elements in three flat arenas: params, grads, momentum
// (offsets p_off, g_off, m_off); the first D (decay_len) parameters get
// weight decay, the rest (BN scales and shifts, biases) do not.
//
// Per element i:  g = grad + wd * param   (i < D only)
//                 v = momentum * v + g    (v starts at 0, so step 1 gives
//                                          v = g, PyTorch's buffer = g.clone())
//                 u = g + momentum * v    if nesterov, else v
//                 param -= lr * u

struct Params {
    len: u32, decay_len: u32, nesterov: u32, _pad0: u32,
    lr: f32, momentum: f32, weight_decay: f32, _pad1: u32,
    p_off: u32, g_off: u32, m_off: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;
// The loss scaler's state (loss_scale.wgsl): [0] scale (f32 bits), [3] found_inf.
@group(0) @binding(4) var<storage, read_write> scaler: array<u32>;

const WG: u32 = 256u;

fn step(i: u32, grad: f32) {
    let w = params[p.p_off + i];
    var g = grad;
    if (i < p.decay_len) {
        g = g + p.weight_decay * w;
    }
    let v = p.momentum * velocity[p.m_off + i] + g;
    velocity[p.m_off + i] = v;
    let u = select(v, g + p.momentum * v, p.nesterov != 0u);
    params[p.p_off + i] = w - p.lr * u;
}

@compute @workgroup_size(256)
fn sgd_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.len) { return; }
    step(i, grads[p.g_off + i]);
}

// The same step on the gradients of a scaled loss (mixed precision): each
// gradient times 1 / scale (as GradScaler unscales), and no step at all,
// momentum included, when the gradients held an inf or a NaN.
@compute @workgroup_size(256)
fn sgd_update_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.len || scaler[3] != 0u) { return; }
    let inv_scale = 1.0 / bitcast<f32>(scaler[0]);
    step(i, grads[p.g_off + i] * inv_scale);
}
