// Dynamic loss scaling for mixed precision, PyTorch's GradScaler on the GPU:
// the loss gradient is multiplied by the scale before backward so small
// gradients survive f16; the optimiser divides it out (sgd.wgsl,
// sgd_update_scaled). A step whose gradients hold an inf or a NaN is
// skipped and the scale halved; after INTERVAL clean steps in a row it is
// doubled. The host never waits for any of it.
//
// Shape legend: L values at `off` (the logits' gradient, N x classes, or the
// parameter-gradient arena). state: 4 words, [0] the scale (f32 bits),
// [1] clean steps since the scale last changed, [2] steps skipped so far,
// [3] found_inf (nonzero: this step's gradients are not finite).

struct Params {
    len: u32, off: u32, interval: u32, _pad0: u32,
    growth: f32, backoff: f32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;
// The same words, for the flag that many invocations may raise at once.
@group(0) @binding(2) var<storage, read_write> flags: array<atomic<u32>>;

const WG: u32 = 256u;
const SCALE: u32 = 0u;
const CLEAN: u32 = 1u;
const SKIPPED: u32 = 2u;
const FOUND_INF: u32 = 3u;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// values *= scale: the loss gradient, before backward.
@compute @workgroup_size(256)
fn loss_scale_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.len) { return; }
    values[p.off + i] *= bitcast<f32>(state[SCALE]);
}

// Raises found_inf if any value is an inf or a NaN. Tested on the bits (an
// exponent of all ones), which no compiler's fast-math assumptions remove.
@compute @workgroup_size(256)
fn loss_scale_check(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.len) { return; }
    if ((bitcast<u32>(values[p.off + i]) & 0x7f800000u) == 0x7f800000u) {
        atomicOr(&flags[FOUND_INF], 1u);
    }
}

// After the optimiser: halve the scale on a skipped step, double it after
// INTERVAL clean ones, and clear the flag for the next step.
@compute @workgroup_size(1)
fn loss_scale_update() {
    var scale = bitcast<f32>(state[SCALE]);
    if (state[FOUND_INF] != 0u) {
        scale *= p.backoff;
        state[CLEAN] = 0u;
        state[SKIPPED] += 1u;
    } else {
        state[CLEAN] += 1u;
        if (state[CLEAN] >= p.interval) {
            scale *= p.growth;
            state[CLEAN] = 0u;
        }
    }
    state[SCALE] = bitcast<u32>(scale);
    state[FOUND_INF] = 0u;
}
