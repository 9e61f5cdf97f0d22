//! The public convolution entry points: channel-slice views read and
//! written in place, typed errors for bad operands, the shape helpers, the
//! algorithms by name; and the CPU reference's backward passes against
//! finite differences of its forward. Every variant against the reference
//! on awkward geometries is in the crate's unit tests
//! (src/kernels/conv2d/tests).

mod common;

use common::*;
use unravel_device::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dAlgo, Conv2dShape,
    ForwardOptions, InputGradOptions, WeightGradOptions,
};
use unravel_device::reference::conv2d as reference;

/// f32 against f64 with reductions of a few hundred terms.
const TOL: f64 = 1e-4;

fn numel(shape: [usize; 4]) -> usize {
    shape.iter().product()
}

/// DenseNet's use: x is a channel prefix of the concatenation buffer and y
/// a slice of the same buffer; dy and dx are slices of another buffer.
#[test]
fn channel_slices_of_one_buffer_are_read_and_written_in_place() {
    // 7x9 planes, and 8x8 ones where window mode stores vec4s.
    channel_slices_in_place(7, 9);
    channel_slices_in_place(8, 8);
}

fn channel_slices_in_place(h: usize, w: usize) {
    let g = gpu();
    let s = conv_shape(3, (5, 4), (h, w), 3, 1, 1, 1);
    let total = [3, 12, h, w];
    let hw = h * w;
    for algo in [
        Conv2dAlgo::Direct,
        Conv2dAlgo::Tiled,
        Conv2dAlgo::for_adapter(g),
    ] {
        let concat_host = random(numel(total), 200);
        let concat = g.upload(&concat_host, &total).unwrap();
        let x = concat.channel_slice(0, 5).unwrap();
        let y = concat.channel_slice(8, 12).unwrap();
        let grads_host = random(numel(total), 201);
        let grads = g.upload(&grads_host, &total).unwrap();
        let dy = grads.channel_slice(8, 12).unwrap();
        let dx = grads.channel_slice(1, 6).unwrap();
        let w = random(numel(s.weight_shape()), 202);
        let tw = g.upload(&w, &s.weight_shape()).unwrap();
        let tdw = g.zeros(&s.weight_shape()).unwrap();

        let algo = Some(algo);
        let (forward, input_grad) = (
            ForwardOptions::with_algo(algo),
            InputGradOptions::with_algo(algo),
        );
        let weight_grad = WeightGradOptions { algo };
        let mut d = conv2d_forward(g, &s, &x, &tw, &y, &forward).unwrap();
        d.extend(conv2d_backward_weight(g, &s, &x, &dy, &tdw, None, &weight_grad).unwrap());
        d.extend(conv2d_backward_input(g, &s, &dy, &tw, &dx, &input_grad).unwrap());
        g.run(&d).unwrap();

        let channels = |host: &[f32], c0: usize, c1: usize| -> Vec<f64> {
            (0..3)
                .flat_map(|n| host[(n * 12 + c0) * hw..(n * 12 + c1) * hw].iter())
                .map(|&v| v as f64)
                .collect()
        };
        let x64 = channels(&concat_host, 0, 5);
        let dy64 = channels(&grads_host, 8, 12);
        let w64 = to_f64(&w);
        let want_y = reference::conv2d_forward(&s, &x64, &w64, None);
        let want_dx = reference::conv2d_backward_input(&s, &dy64, &w64);
        let (want_dw, _) = reference::conv2d_backward_weight(&s, &x64, &dy64);
        assert_close("y slice", &g.read(&y).unwrap(), &want_y, TOL);
        assert_close("dx slice", &g.read(&dx).unwrap(), &want_dx, TOL);
        assert_close("dw", &g.read(&tdw).unwrap(), &want_dw, TOL);

        // Everything outside the written slices is untouched.
        let got_concat = g.read(&concat).unwrap();
        let got_grads = g.read(&grads).unwrap();
        for n in 0..3 {
            for c in 0..12 {
                let range = (n * 12 + c) * hw..(n * 12 + c + 1) * hw;
                if !(8..12).contains(&c) {
                    assert_eq!(
                        got_concat[range.clone()],
                        concat_host[range.clone()],
                        "{algo:?} concat n={n} c={c}"
                    );
                }
                if !(1..6).contains(&c) {
                    assert_eq!(
                        got_grads[range.clone()],
                        grads_host[range],
                        "{algo:?} grads n={n} c={c}"
                    );
                }
            }
        }
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    for (s, seed) in [
        (conv_shape(2, (4, 6), (5, 7), 3, 2, 1, 2), 300),
        (conv_shape(1, (3, 3), (6, 5), 3, 1, 1, 3), 310),
        (conv_shape(1, (2, 3), (7, 7), 1, 2, 0, 1), 320),
    ] {
        let x = to_f64(&random(numel(s.input_shape()), seed));
        let w = to_f64(&random(numel(s.weight_shape()), seed + 1));
        let b = to_f64(&random(s.c_out, seed + 2));
        let dy = to_f64(&random(numel(s.output_shape()), seed + 3));
        let dx = reference::conv2d_backward_input(&s, &dy, &w);
        let (dw, db) = reference::conv2d_backward_weight(&s, &x, &dy);
        let loss_x = |x: &[f64]| dot(&reference::conv2d_forward(&s, x, &w, Some(&b)), &dy);
        assert_gradient_matches_fd("dx", &loss_x, &x, &dx, 1e-6);
        let loss_w = |w: &[f64]| dot(&reference::conv2d_forward(&s, &x, w, Some(&b)), &dy);
        assert_gradient_matches_fd("dw", &loss_w, &w, &dw, 1e-6);
        let loss_b = |b: &[f64]| dot(&reference::conv2d_forward(&s, &x, &w, Some(b)), &dy);
        assert_gradient_matches_fd("dbias", &loss_b, &b, &db, 1e-6);
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let s = conv_shape(1, (4, 6), (5, 5), 3, 1, 1, 2);
    let x = g.zeros(&s.input_shape()).unwrap();
    let w = g.zeros(&s.weight_shape()).unwrap();
    let y = g.zeros(&s.output_shape()).unwrap();
    let none = ForwardOptions::default();
    // Weights of the ungrouped conv.
    let w_dense = g.zeros(&[6, 4, 3, 3]).unwrap();
    let err = conv2d_forward(g, &s, &x, &w_dense, &y, &none).unwrap_err();
    assert!(err.to_string().contains("w must be a contiguous"), "{err}");
    // Output of the wrong size.
    let y_bad = g.zeros(&[1, 6, 4, 5]).unwrap();
    let err = conv2d_forward(g, &s, &x, &w, &y_bad, &none).unwrap_err();
    assert!(err.to_string().contains("y has shape"), "{err}");
    // Channels not divisible by the groups.
    let s_bad = Conv2dShape { groups: 3, ..s };
    let err = conv2d_forward(g, &s_bad, &x, &w, &y, &none).unwrap_err();
    assert!(err.to_string().contains("not divisible"), "{err}");
    // Kernel larger than the padded input.
    let s_bad = Conv2dShape { kh: 9, kw: 9, ..s };
    assert!(s_bad.validate().is_err());
    // A strided weight view.
    let big = g.zeros(&[6, 4, 3, 3]).unwrap();
    let strided = big.channel_slice(0, 2).unwrap();
    let err = conv2d_forward(g, &s, &x, &strided, &y, &none).unwrap_err();
    assert!(err.to_string().contains("strided"), "{err}");
}

#[test]
fn shape_helpers_follow_pytorch() {
    let s = conv_shape(64, (16, 32), (32, 32), 3, 2, 1, 1);
    assert_eq!(s.output_shape(), [64, 32, 16, 16]);
    assert_eq!(s.weight_shape(), [32, 16, 3, 3]);
    assert_eq!(s.macs(), 64 * 32 * 16 * 16 * 16 * 9);
    let s = conv_shape(1, (3, 8), (11, 13), 7, 2, 3, 1);
    assert_eq!((s.out_h(), s.out_w()), (6, 7));
}

#[test]
fn the_algorithm_can_be_chosen_by_name_for_an_adapter() {
    assert_eq!("tiled".parse::<Conv2dAlgo>(), Ok(Conv2dAlgo::Tiled));
    assert_eq!("Subgroup".parse::<Conv2dAlgo>(), Ok(Conv2dAlgo::Subgroup));
    assert_eq!(
        "subgroup-wide".parse::<Conv2dAlgo>(),
        Ok(Conv2dAlgo::SubgroupWide)
    );
    assert_eq!(
        "coop-matrix".parse::<Conv2dAlgo>(),
        Ok(Conv2dAlgo::CoopMatrix)
    );
    // The shuffle path is not a choice: it is what narrow subgroups get.
    assert!("subgroup-shuffle".parse::<Conv2dAlgo>().is_err());
    let err = "winograd".parse::<Conv2dAlgo>().unwrap_err();
    assert!(err.contains("unknown convolution algorithm"), "{err}");
    // Without a choice, lavapipe (a CPU adapter with subgroups) gets the
    // wide lanes, a GPU tiles.
    let g = gpu();
    let expected = if g.is_cpu() {
        Conv2dAlgo::SubgroupWide
    } else {
        Conv2dAlgo::Tiled
    };
    assert_eq!(Conv2dAlgo::for_adapter(g), expected);
}

/// A device opened without SUBGROUP (as on adapters that lack it): the
/// adapter's choice falls back to the direct kernels, and asking for the
/// subgroup kernels names the missing feature.
#[test]
fn an_algorithm_the_adapter_cannot_run_is_a_missing_feature() {
    let options = unravel_device::AdapterOptions {
        disabled_features: wgpu::Features::SUBGROUP,
        ..Default::default()
    };
    let g = &unravel_device::Gpu::new(&options).unwrap();
    assert!(!g.features().contains(wgpu::Features::SUBGROUP));
    if g.is_cpu() {
        assert_eq!(Conv2dAlgo::for_adapter(g), Conv2dAlgo::Direct);
    }
    let s = conv_shape(1, (4, 6), (5, 5), 3, 1, 1, 1);
    let x = g.zeros(&s.input_shape()).unwrap();
    let w = g.zeros(&s.weight_shape()).unwrap();
    let y = g.zeros(&s.output_shape()).unwrap();
    let options = ForwardOptions {
        algo: Some(Conv2dAlgo::Subgroup),
        ..Default::default()
    };
    let err = conv2d_forward(g, &s, &x, &w, &y, &options).unwrap_err();
    assert!(
        matches!(
            err,
            unravel_device::DeviceError::MissingFeature {
                feature: "SUBGROUP",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("SUBGROUP"), "{err}");
    // Tensor cores (cooperative matrices): lavapipe has none.
    if g.is_cpu() {
        let options = ForwardOptions {
            algo: Some(Conv2dAlgo::CoopMatrix),
            ..Default::default()
        };
        let err = conv2d_forward(g, &s, &x, &w, &y, &options).unwrap_err();
        assert!(
            err.to_string().contains("EXPERIMENTAL_COOPERATIVE_MATRIX"),
            "{err}"
        );
    }
}
