//! The memory-efficient DenseNet layout: each layer writes straight into its
//! block's concatenation buffer, and the batch norm that reads the growing
//! buffer is recomputed in backward instead of kept, so planned training
//! memory grows linearly with depth (the naive layout grows quadratically).

use unravel_device::Gpu;
use unravel_graph::{Mode, ModelState, Plan};
use unravel_train::models::{densenet_layers, ModelConfig};

#[test]
fn densenet_training_memory_grows_linearly_with_depth() {
    let g = Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)");
    let bytes = |layers: usize| {
        let graph = densenet_layers(layers, 12, true, &ModelConfig::cifar10()).unwrap();
        let state = ModelState::new(&g, &graph, 0).unwrap();
        Plan::compile(&g, &graph, &state, 8, Mode::Train)
            .unwrap()
            .activation_bytes() as f64
    };
    let (b4, b8, b16) = (bytes(4), bytes(8), bytes(16));
    // Linear: doubling the depth again adds twice as much. Keeping every
    // layer's normalised input would add about 2.9x as much here.
    let ratio = (b16 - b8) / (b8 - b4);
    assert!(
        ratio < 2.2,
        "increments {} then {} (ratio {ratio:.2})",
        b8 - b4,
        b16 - b8
    );
}
