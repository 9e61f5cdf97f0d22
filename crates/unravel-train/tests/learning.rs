//! End to end on the GPU: SGD on a tiny ResNet drives the loss down and fits
//! a small synthetic problem (the real-data check is the trainer's).

use unravel_device::kernels::sgd::SgdConfig;
use unravel_device::Gpu;
use unravel_graph::{Mode, ModelState, Optimizer, Plan, Shape};
use unravel_train::models::{resnet_cifar_blocks, ModelConfig, ShortcutKind};

#[test]
fn sgd_fits_a_small_batch() {
    let gpu = Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)");
    let config = ModelConfig {
        input: Shape::new(1, 8, 8),
        classes: 4,
        shortcut: ShortcutKind::A,
    };
    let graph = resnet_cifar_blocks([1, 1, 1], &config).unwrap();
    let state = ModelState::new(&gpu, &graph, 1).unwrap();
    let batch = 8;
    let plan = Plan::compile(&gpu, &graph, &state, batch, Mode::Train).unwrap();
    let optimizer = Optimizer::new(
        &gpu,
        &state,
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: true,
        },
    )
    .unwrap();
    // Class c lights up quadrant c of the image.
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 4).collect();
    let images: Vec<f32> = labels
        .iter()
        .flat_map(|&c| {
            (0..64).map(move |p| {
                let quadrant = (p / 8 >= 4) as u32 * 2 + (p % 8 >= 4) as u32;
                if quadrant == c {
                    1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    let first = plan
        .train_step(&gpu, &images, &labels, &[], Some(&optimizer))
        .unwrap();
    let mut last = first;
    for _ in 0..40 {
        last = plan
            .train_step(&gpu, &images, &labels, &[], Some(&optimizer))
            .unwrap();
    }
    assert!(
        last.loss < 0.2 * first.loss,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    let eval = Plan::compile(&gpu, &graph, &state, batch, Mode::Train).unwrap();
    let stats = eval.eval_step(&gpu, &images, &labels, &[]).unwrap();
    assert_eq!(stats.correct, batch as u32);
}
