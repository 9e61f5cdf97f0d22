//! The convolution shapes of ResNet-20 on CIFAR at batch 64, for the timing
//! examples and the kernel bench. Shape legend: C in, K out channels, H = W
//! input, S stride.

use unravel_device::kernels::conv2d::Conv2dShape;

/// A 3x3 convolution with padding 1 and no groups at batch 64.
pub fn shape(c_in: usize, c_out: usize, hw: usize, stride: usize) -> Conv2dShape {
    Conv2dShape {
        n: 64,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: 3,
        kw: 3,
        stride,
        pad: 1,
        groups: 1,
    }
}

/// ResNet-20's 3x3 convolutions in stage order: the three stages' stride-1
/// convs and the two stride-2 transitions.
pub fn resnet20_convs() -> [Conv2dShape; 5] {
    [
        shape(16, 16, 32, 1),
        shape(16, 32, 32, 2),
        shape(32, 32, 16, 1),
        shape(32, 64, 16, 2),
        shape(64, 64, 8, 1),
    ]
}
