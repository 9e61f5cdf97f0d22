//! Parameter counts of the named models against closed forms derived from
//! the architectures (and, where the papers print them, their figures).

use unravel_graph::Shape;
use unravel_train::models::{build, ModelConfig, ShortcutKind};

fn count(name: &str) -> usize {
    build(name, &ModelConfig::cifar10())
        .unwrap()
        .parameter_count()
}

fn conv(c_in: usize, c_out: usize, k: usize) -> usize {
    c_in * c_out * k * k
}

/// BN has a weight and a bias per channel.
fn bn(c: usize) -> usize {
    2 * c
}

/// CIFAR ResNet-(6n+2), option A, 3 input channels, `classes` outputs:
/// stem conv3x3(3->16) + BN; per stage of width w (16, 32, 64) n basic
/// blocks of two conv3x3 + two BN, the first block of stages 2 and 3 taking
/// w/2 input channels; fc 64 -> classes with bias. Option A adds nothing.
fn resnet_cifar_closed_form(n: usize, c_in: usize, classes: usize) -> usize {
    let mut total = conv(c_in, 16, 3) + bn(16);
    for (s, w) in [16usize, 32, 64].into_iter().enumerate() {
        let first_in = if s == 0 { 16 } else { w / 2 };
        total += conv(first_in, w, 3) + conv(w, w, 3) + 2 * bn(w);
        total += (n - 1) * (2 * conv(w, w, 3) + 2 * bn(w));
    }
    total + 64 * classes + classes
}

#[test]
fn cifar_resnets_match_the_closed_form_and_the_paper() {
    for (depth, paper_millions) in [
        (20, 0.27),
        (32, 0.46),
        (44, 0.66),
        (56, 0.85),
        (110, 1.7),
        (1202, 19.4),
    ] {
        let n = (depth - 2) / 6;
        let got = count(&format!("resnet{depth}"));
        assert_eq!(got, resnet_cifar_closed_form(n, 3, 10), "resnet{depth}");
        let m = got as f64 / 1e6;
        assert!(
            (m - paper_millions).abs() / paper_millions < 0.03,
            "resnet{depth}: {m}M"
        );
    }
    assert_eq!(count("resnet20"), 269_722);
    // The plain baseline has the same layers without shortcuts.
    assert_eq!(count("plain20"), 269_722);
    assert_eq!(count("plain56"), resnet_cifar_closed_form(9, 3, 10));
}

#[test]
fn input_channels_and_classes_follow_the_dataset() {
    let fashion = ModelConfig {
        input: Shape::new(1, 28, 28),
        classes: 10,
        shortcut: ShortcutKind::A,
    };
    let g = build("resnet20", &fashion).unwrap();
    assert_eq!(g.parameter_count(), resnet_cifar_closed_form(3, 1, 10));
    let cifar100 = ModelConfig {
        classes: 100,
        ..ModelConfig::cifar10()
    };
    let g = build("resnet56", &cifar100).unwrap();
    assert_eq!(g.parameter_count(), resnet_cifar_closed_form(9, 3, 100));
}

#[test]
fn option_b_adds_two_projections_and_highway_adds_gates() {
    let base = resnet_cifar_closed_form(3, 3, 10);
    // Option B: at the first block of stages 2 and 3, a 1x1 conv (w/2 -> w)
    // and a BN of w channels.
    let b = ModelConfig {
        shortcut: ShortcutKind::B,
        ..ModelConfig::cifar10()
    };
    let projections = conv(16, 32, 1) + bn(32) + conv(32, 64, 1) + bn(64);
    assert_eq!(
        build("resnet20", &b).unwrap().parameter_count(),
        base + projections
    );
    // Highway: every block gets a 1x1 gate conv w -> w with bias.
    let h = ModelConfig {
        shortcut: ShortcutKind::Highway,
        ..ModelConfig::cifar10()
    };
    let gates: usize = [16usize, 32, 64]
        .iter()
        .map(|&w| 3 * (conv(w, w, 1) + w))
        .sum();
    assert_eq!(
        build("resnet20", &h).unwrap().parameter_count(),
        base + gates
    );
}

/// torchvision's ResNets: stem conv7x7(3->64) + BN; stages of widths 64..512;
/// basic blocks (two conv3x3) or bottlenecks (1x1 w, 3x3 w, 1x1 4w), each
/// conv followed by BN; a projection (1x1 conv + BN) where the shape changes;
/// fc 512*expansion -> classes.
fn resnet_imagenet_closed_form(blocks: [usize; 4], bottleneck: bool, classes: usize) -> usize {
    let e = if bottleneck { 4 } else { 1 };
    let mut total = conv(3, 64, 7) + bn(64);
    let mut c = 64;
    for (s, &count) in blocks.iter().enumerate() {
        let w = 64 << s;
        for _ in 0..count {
            total += if bottleneck {
                conv(c, w, 1) + bn(w) + conv(w, w, 3) + bn(w) + conv(w, 4 * w, 1) + bn(4 * w)
            } else {
                conv(c, w, 3) + bn(w) + conv(w, w, 3) + bn(w)
            };
            if c != w * e {
                total += conv(c, w * e, 1) + bn(w * e);
            }
            c = w * e;
        }
    }
    total + c * classes + classes
}

#[test]
fn imagenet_resnets_match_the_closed_form_and_torchvision() {
    let cases = [
        (18, [2, 2, 2, 2], false),
        (34, [3, 4, 6, 3], false),
        (50, [3, 4, 6, 3], true),
        (101, [3, 4, 23, 3], true),
        (152, [3, 8, 36, 3], true),
    ];
    for (depth, blocks, bottleneck) in cases {
        let got = count(&format!("resnet{depth}"));
        assert_eq!(
            got,
            resnet_imagenet_closed_form(blocks, bottleneck, 10),
            "resnet{depth}"
        );
    }
    // torchvision's published counts for 1000 classes.
    let imagenet = ModelConfig {
        input: Shape::new(3, 224, 224),
        classes: 1000,
        shortcut: ShortcutKind::B,
    };
    assert_eq!(
        build("resnet18", &imagenet).unwrap().parameter_count(),
        11_689_512
    );
    assert_eq!(
        build("resnet50", &imagenet).unwrap().parameter_count(),
        25_557_032
    );
}

/// Pre-activation ResNet: stem conv3x3(3->16); units BN-ReLU-conv; basic
/// units as the CIFAR ResNet, bottleneck units 1x1 w, 3x3 w, 1x1 4w with
/// three BNs (one before each conv) and a 1x1 projection (no BN) where the
/// shape changes; a final BN; fc.
fn preact_closed_form(n: usize, bottleneck: bool) -> usize {
    let mut total = conv(3, 16, 3);
    let mut c = 16;
    for w in [16usize, 32, 64] {
        for _ in 0..n {
            if bottleneck {
                total += bn(c) + conv(c, w, 1) + bn(w) + conv(w, w, 3) + bn(w) + conv(w, 4 * w, 1);
                if c != 4 * w {
                    total += conv(c, 4 * w, 1);
                }
                c = 4 * w;
            } else {
                total += bn(c) + conv(c, w, 3) + bn(w) + conv(w, w, 3);
                c = w;
            }
        }
    }
    total + bn(c) + c * 10 + 10
}

#[test]
fn preact_resnets_match_the_closed_form_and_the_paper() {
    assert_eq!(count("preact-resnet110"), preact_closed_form(18, false));
    assert_eq!(count("preact-resnet164"), preact_closed_form(18, true));
    assert_eq!(count("preact-resnet1001"), preact_closed_form(111, true));
    // He et al. 2016, Table 2: 1.7M for 164 layers, 10.2M for 1001.
    assert!((count("preact-resnet164") as f64 / 1e6 - 1.7).abs() < 0.05);
    assert!((count("preact-resnet1001") as f64 / 1e6 - 10.2).abs() < 0.15);
}

/// ResNeXt-29 CxWd: stem conv3x3(3->64) + BN; stage s (0..3) of 3 blocks with
/// inner width D = C*W*2^s and output 256*2^s: conv1x1(c->D), grouped
/// conv3x3 (D->D, C groups: D*D/C*9), conv1x1(D->out), three BNs, and a
/// projection (1x1 + BN) at each stage's first block; fc 1024 -> 10.
fn resnext_closed_form(card: usize, width: usize) -> usize {
    let mut total = conv(3, 64, 3) + bn(64);
    let mut c = 64;
    for s in 0..3 {
        let d = (card * width) << s;
        let out = 256 << s;
        for i in 0..3 {
            total += conv(c, d, 1) + bn(d) + d * (d / card) * 9 + bn(d) + conv(d, out, 1) + bn(out);
            if i == 0 {
                total += conv(c, out, 1) + bn(out);
            }
            c = out;
        }
    }
    total + 1024 * 10 + 10
}

#[test]
fn resnext_matches_the_closed_form_and_the_paper() {
    assert_eq!(count("resnext29-8x64d"), resnext_closed_form(8, 64));
    assert_eq!(count("resnext29-16x64d"), resnext_closed_form(16, 64));
    assert_eq!(count("resnext29-2x4d"), resnext_closed_form(2, 4));
    // Xie et al. 2017, Table 7: 34.4M and 68.1M.
    assert!((count("resnext29-8x64d") as f64 / 1e6 - 34.4).abs() < 0.1);
    assert!((count("resnext29-16x64d") as f64 / 1e6 - 68.1).abs() < 0.1);
}

/// DenseNet: stem conv3x3(3 -> 16, or 2k for BC); per block n layers, the
/// i-th reading c + i*k channels: BN(c_i) + conv3x3(c_i -> k), or for BC
/// BN(c_i) + conv1x1(c_i -> 4k) + BN(4k) + conv3x3(4k -> k); transitions
/// BN(c) + conv1x1(c -> c, or floor(c/2) for BC); final BN; fc.
fn densenet_closed_form(depth: usize, k: usize, bc: bool) -> usize {
    let n = (depth - 4) / if bc { 6 } else { 3 };
    let mut c = if bc { 2 * k } else { 16 };
    let mut total = conv(3, c, 3);
    for block in 0..3 {
        for _ in 0..n {
            total += if bc {
                bn(c) + conv(c, 4 * k, 1) + bn(4 * k) + conv(4 * k, k, 3)
            } else {
                bn(c) + conv(c, k, 3)
            };
            c += k;
        }
        if block < 2 {
            let out = if bc { c / 2 } else { c };
            total += bn(c) + conv(c, out, 1);
            c = out;
        }
    }
    total + bn(c) + c * 10 + 10
}

#[test]
fn densenets_match_the_closed_form_and_the_paper() {
    for (name, depth, k, bc, paper) in [
        ("densenet40-k12", 40, 12, false, 1.0),
        ("densenet100-k12", 100, 12, false, 7.0),
        ("densenet-bc100-k12", 100, 12, true, 0.8),
        ("densenet-bc250-k24", 250, 24, true, 15.3),
        ("densenet-bc190-k40", 190, 40, true, 25.6),
    ] {
        let got = count(name);
        assert_eq!(got, densenet_closed_form(depth, k, bc), "{name}");
        assert!(
            (got as f64 / 1e6 - paper).abs() / paper < 0.05,
            "{name}: {got}"
        );
    }
}

#[test]
fn unknown_and_malformed_names_are_clear_errors() {
    let cfg = ModelConfig::cifar10();
    for bad in [
        "resnet21",
        "resnet-x",
        "densenet41-k12",
        "resnext29-8x",
        "vgg16",
        "preact-resnet21",
    ] {
        let err = build(bad, &cfg).unwrap_err().to_string();
        assert!(!err.is_empty(), "{bad}");
    }
    let err = build("vgg16", &cfg).unwrap_err().to_string();
    assert!(err.contains("NAMED_MODELS"), "{err}");
}
