//! What the trainer's tests share.
#![allow(dead_code)]

use unravel_graph::Graph;
use unravel_train::models::{build, ModelConfig, ShortcutKind};
use unravel_train::DatasetKind;

/// The graph of the tests' small runs: resnet8 for Fashion-MNIST, option A.
pub fn resnet8_fashion_mnist() -> Graph {
    let config = ModelConfig::for_dataset(DatasetKind::FashionMnist, ShortcutKind::A);
    build("resnet8", &config).unwrap()
}
