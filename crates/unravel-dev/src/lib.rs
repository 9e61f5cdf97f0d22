//! Unravel's development tools, not part of the library users link: the
//! timing examples (`cargo run --release -p unravel-dev --example
//! conv_speed`, `bn_speed`, `sgemm_speed`, `compile_time`, and
//! `loop_registers`, the measurement behind the generated shader code),
//! the SGEMM kernel
//! the kernel bench compares convolutions with, the CPU clock the timings
//! read, ResNet-20's convolution shapes, and the one-shot device check of
//! `gpu/`.

pub mod cpu_time;
pub mod resnet_shapes;
pub mod sgemm;
