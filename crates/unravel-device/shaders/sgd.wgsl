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

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn sgd_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.len) { return; }
    let w = params[p.p_off + i];
    var g = grads[p.g_off + i];
    if (i < p.decay_len) {
        g = g + p.weight_decay * w;
    }
    let v = p.momentum * velocity[p.m_off + i] + g;
    velocity[p.m_off + i] = v;
    let u = select(v, g + p.momentum * v, p.nesterov != 0u);
    params[p.p_off + i] = w - p.lr * u;
}
