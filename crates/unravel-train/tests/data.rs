//! The dataset layer: readers on tiny files written here (gzip and raw),
//! every malformed-file error, normalisation, augmentation, deterministic
//! order, the background iterator and resume; plus the real Fashion-MNIST
//! when its Debian package is installed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use unravel_train::data::{
    self, augment, idx, rng, Augment, AugmentChoice, Batch, DataError, Dataset, LastBatch, Loader,
    LoaderConfig, Normalization, Split,
};
use unravel_train::graph::Shape;
use unravel_train::DatasetKind;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("unravel-data-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: usize, h: usize, w: usize, pixels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Pixels of `n` images of `len` bytes, each byte distinct from its
/// neighbours: `(31 * i + 7 * j + seed) % 256`.
fn pattern(n: usize, len: usize, seed: usize) -> Vec<u8> {
    (0..n * len)
        .map(|k| ((31 * (k / len) + 7 * (k % len) + seed) % 256) as u8)
        .collect()
}

fn cifar_records(labels: &[(u8, u8)], label_bytes: usize, seed: usize) -> (Vec<u8>, Vec<u8>) {
    let pixels = pattern(labels.len(), 3072, seed);
    let mut file = Vec::new();
    for (i, &(coarse, fine)) in labels.iter().enumerate() {
        if label_bytes == 2 {
            file.push(coarse);
        }
        file.push(fine);
        file.extend_from_slice(&pixels[i * 3072..(i + 1) * 3072]);
    }
    (file, pixels)
}

const MNIST: Shape = Shape::new(1, 28, 28);

/// Writes a small valid MNIST: 5 train (gz), 3 test (raw, dotted names).
fn write_mnist(dir: &TempDir) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let train_px = pattern(5, 784, 1);
    let train_lb = vec![3, 0, 9, 4, 7];
    let test_px = pattern(3, 784, 2);
    let test_lb = vec![1, 8, 2];
    dir.write(
        "train-images-idx3-ubyte.gz",
        &gz(&idx_images(5, 28, 28, &train_px)),
    );
    dir.write("train-labels-idx1-ubyte.gz", &gz(&idx_labels(&train_lb)));
    dir.write("t10k-images.idx3-ubyte", &idx_images(3, 28, 28, &test_px));
    dir.write("t10k-labels-idx1-ubyte", &idx_labels(&test_lb));
    (train_px, train_lb, test_px, test_lb)
}

#[test]
fn idx_gzip_and_raw_read_back_exactly() {
    let dir = TempDir::new("idx");
    let (train_px, train_lb, test_px, test_lb) = write_mnist(&dir);
    let splits = data::load(DatasetKind::Mnist, Some(&dir.0)).unwrap();
    assert_eq!(
        splits.train,
        Dataset {
            images: train_px,
            labels: train_lb,
            n: 5,
            shape: MNIST,
            classes: 10
        }
    );
    assert_eq!(splits.test.images, test_px);
    assert_eq!(splits.test.labels, test_lb);
    assert_eq!(splits.test.n, 3);
    // Fashion-MNIST reads the same files from a given folder.
    let fashion = data::load_split(DatasetKind::FashionMnist, Some(&dir.0), Split::Test).unwrap();
    assert_eq!(fashion, splits.test);
}

#[test]
fn cifar10_from_subfolder_concatenates_batches() {
    let dir = TempDir::new("cifar10");
    let mut want_px = Vec::new();
    let mut want_lb = Vec::new();
    for b in 1..=5u8 {
        let labels = [(0, b), (0, 9 - b)];
        let (file, px) = cifar_records(&labels, 1, b as usize);
        want_px.extend_from_slice(&px);
        want_lb.extend([b, 9 - b]);
        // Mix raw and gzipped batches.
        if b % 2 == 0 {
            dir.write(
                &format!("cifar-10-batches-bin/data_batch_{b}.bin.gz"),
                &gz(&file),
            );
        } else {
            dir.write(&format!("cifar-10-batches-bin/data_batch_{b}.bin"), &file);
        }
    }
    let (test_file, test_px) = cifar_records(&[(0, 5), (0, 0), (0, 9)], 1, 77);
    dir.write("cifar-10-batches-bin/test_batch.bin", &test_file);

    let splits = data::load(DatasetKind::Cifar10, Some(&dir.0)).unwrap();
    assert_eq!(splits.train.n, 10);
    assert_eq!(splits.train.shape, Shape::new(3, 32, 32));
    assert_eq!(splits.train.classes, 10);
    assert_eq!(splits.train.images, want_px);
    assert_eq!(splits.train.labels, want_lb);
    assert_eq!(splits.test.images, test_px);
    assert_eq!(splits.test.labels, vec![5, 0, 9]);
    // The first red, green and blue bytes of image 0 are CHW planes.
    let img = splits.train.image(0);
    assert_eq!(img.len(), 3072);
    assert_eq!(img[1024], want_px[1024]);
}

#[test]
fn cifar100_keeps_the_fine_label() {
    let dir = TempDir::new("cifar100");
    let (train, train_px) = cifar_records(&[(19, 99), (0, 42), (7, 0)], 2, 3);
    let (test, _) = cifar_records(&[(1, 17)], 2, 4);
    dir.write("train.bin.gz", &gz(&train));
    dir.write("test.bin", &test);
    let splits = data::load(DatasetKind::Cifar100, Some(&dir.0)).unwrap();
    assert_eq!(splits.train.labels, vec![99, 42, 0]);
    assert_eq!(splits.train.images, train_px);
    assert_eq!(splits.train.classes, 100);
    assert_eq!(splits.test.labels, vec![17]);
}

fn expect_err(result: Result<Dataset, DataError>) -> DataError {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn mnist_train(dir: &TempDir) -> DataError {
    expect_err(data::load_split(
        DatasetKind::Mnist,
        Some(&dir.0),
        Split::Train,
    ))
}

#[test]
fn missing_files_say_where_and_how_to_get_them() {
    let dir = TempDir::new("missing");
    let e = mnist_train(&dir);
    let msg = e.to_string();
    match &e {
        DataError::Missing { tried, .. } => {
            assert!(tried.contains(&dir.0.join("train-images-idx3-ubyte")));
            assert!(tried.contains(&dir.0.join("train-images-idx3-ubyte.gz")));
        }
        other => panic!("{other:?}"),
    }
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("data folder"), "{msg}");
    assert!(msg.contains("mnist"), "{msg}");

    let e = expect_err(data::load_split(
        DatasetKind::FashionMnist,
        Some(&dir.0),
        Split::Test,
    ));
    assert!(matches!(e, DataError::Missing { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
    assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");

    let e = expect_err(data::load_split(DatasetKind::Cifar10, None, Split::Train));
    assert!(matches!(e, DataError::NoDataDir { .. }), "{e:?}");
    assert!(e.to_string().contains("cifar-10-binary.tar.gz"), "{e}");

    // CIFAR-10 with one batch missing names that batch and the subfolder.
    let (file, _) = cifar_records(&[(0, 1)], 1, 0);
    for b in [1, 2, 4, 5] {
        dir.write(&format!("data_batch_{b}.bin"), &file);
    }
    let e = expect_err(data::load_split(
        DatasetKind::Cifar10,
        Some(&dir.0),
        Split::Train,
    ));
    let msg = e.to_string();
    assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
    assert!(
        msg.contains(
            &dir.0
                .join("cifar-10-batches-bin/data_batch_3.bin")
                .display()
                .to_string()
        ),
        "{msg}"
    );
    assert!(msg.contains("cifar-10-binary.tar.gz"), "{msg}");

    let e = expect_err(data::load_split(
        DatasetKind::Cifar100,
        Some(&dir.0),
        Split::Test,
    ));
    assert!(e.to_string().contains("cifar-100-binary"), "{e}");
}

/// Writes valid train labels (5 of them) and the given images file.
fn with_images(dir: &TempDir, images: &[u8]) -> PathBuf {
    dir.write("train-labels-idx1-ubyte", &idx_labels(&[0, 1, 2, 3, 4]));
    dir.write("train-images-idx3-ubyte", images)
}

#[test]
fn malformed_idx_files_give_specific_errors() {
    let dir = TempDir::new("badidx");
    let good = idx_images(5, 28, 28, &pattern(5, 784, 0));

    // Truncated body.
    let path = with_images(&dir, &good[..good.len() - 10]);
    match mnist_train(&dir) {
        DataError::Truncated {
            path: p,
            expected,
            found,
            ..
        } => {
            assert_eq!(p, path);
            assert_eq!(expected, good.len() as u64);
            assert_eq!(found, good.len() as u64 - 10);
        }
        other => panic!("{other:?}"),
    }
    assert!(mnist_train(&dir)
        .to_string()
        .contains(&path.display().to_string()));

    // Truncated header.
    with_images(&dir, &good[..10]);
    assert!(matches!(mnist_train(&dir), DataError::Truncated { .. }));
    with_images(&dir, &good[..2]);
    assert!(matches!(mnist_train(&dir), DataError::Truncated { .. }));

    // Trailing bytes.
    let mut long = good.clone();
    long.push(0);
    with_images(&dir, &long);
    assert!(matches!(
        mnist_train(&dir),
        DataError::TrailingBytes { found, expected, .. } if found == expected + 1
    ));

    // Wrong magic: a labels file where the images should be.
    with_images(&dir, &idx_labels(&[1, 2, 3, 4, 5]));
    match mnist_train(&dir) {
        DataError::BadMagic {
            expected, found, ..
        } => {
            assert_eq!(expected, idx::IMAGES_MAGIC);
            assert_eq!(found, idx::LABELS_MAGIC);
        }
        other => panic!("{other:?}"),
    }

    // Wrong dimensions: CIFAR-sized images in an MNIST file.
    with_images(&dir, &idx_images(5, 32, 32, &pattern(5, 1024, 0)));
    match mnist_train(&dir) {
        DataError::BadDimensions {
            expected, found, ..
        } => {
            assert_eq!(expected, vec![5, 28, 28]);
            assert_eq!(found, vec![5, 32, 32]);
        }
        other => panic!("{other:?}"),
    }

    // A header claiming a gigantic array: truncated, not an allocation.
    let mut huge = vec![0, 0, 8, 3];
    for d in [u32::MAX, 28, 28] {
        huge.extend_from_slice(&d.to_be_bytes());
    }
    with_images(&dir, &huge);
    assert!(matches!(mnist_train(&dir), DataError::Truncated { .. }));

    // Count mismatch.
    let images_path = with_images(&dir, &idx_images(4, 28, 28, &pattern(4, 784, 0)));
    match mnist_train(&dir) {
        DataError::CountMismatch {
            images_path: ip,
            images,
            labels,
            ..
        } => {
            assert_eq!(ip, images_path);
            assert_eq!((images, labels), (4, 5));
        }
        other => panic!("{other:?}"),
    }

    // Label out of range.
    with_images(&dir, &good);
    let labels_path = dir.write("train-labels-idx1-ubyte", &idx_labels(&[0, 1, 10, 3, 4]));
    match mnist_train(&dir) {
        DataError::LabelOutOfRange {
            path,
            index,
            label,
            classes,
        } => {
            assert_eq!(path, labels_path);
            assert_eq!((index, label, classes), (2, 10, 10));
        }
        other => panic!("{other:?}"),
    }

    // A folder given as the file is said to be one.
    let folder = dir.0.join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    assert!(matches!(
        idx::read_labels(&folder),
        Err(DataError::NotAFile {
            found: "a folder",
            ..
        })
    ));
}

#[test]
fn corrupt_gzip_is_an_error() {
    let dir = TempDir::new("badgz");
    dir.write("train-labels-idx1-ubyte.gz", &gz(&idx_labels(&[0, 1])));
    let images = gz(&idx_images(2, 28, 28, &pattern(2, 784, 0)));

    // Not gzip at all.
    let path = dir.write("train-images-idx3-ubyte.gz", b"this is not a gzip stream");
    match mnist_train(&dir) {
        DataError::Gzip { path: p, .. } => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    assert!(mnist_train(&dir).to_string().contains("corrupt gzip"));

    // Cut in the middle of the deflate stream.
    dir.write("train-images-idx3-ubyte.gz", &images[..images.len() / 2]);
    assert!(matches!(mnist_train(&dir), DataError::Gzip { .. }));

    // Damaged deflate data or CRC.
    let mut damaged = images.clone();
    let k = damaged.len() - 6;
    damaged[k] ^= 0xff;
    dir.write("train-images-idx3-ubyte.gz", &damaged);
    assert!(matches!(mnist_train(&dir), DataError::Gzip { .. }));

    // And the intact file reads.
    dir.write("train-images-idx3-ubyte.gz", &images);
    let d = data::load_split(DatasetKind::Mnist, Some(&dir.0), Split::Train).unwrap();
    assert_eq!(d.n, 2);
}

#[test]
fn malformed_cifar_files_give_specific_errors() {
    let dir = TempDir::new("badcifar");
    let (good, _) = cifar_records(&[(0, 1), (0, 2)], 2, 0);
    let read = || {
        expect_err(data::load_split(
            DatasetKind::Cifar100,
            Some(&dir.0),
            Split::Test,
        ))
    };

    let path = dir.write("test.bin", &good[..good.len() - 1]);
    match read() {
        DataError::Truncated {
            path: p,
            expected,
            found,
            ..
        } => {
            assert_eq!(p, path);
            assert_eq!((expected, found), (2 * 3074, 2 * 3074 - 1));
        }
        other => panic!("{other:?}"),
    }
    dir.write("test.bin", &[]);
    assert!(matches!(read(), DataError::Truncated { .. }));

    let (bad, _) = cifar_records(&[(0, 1), (0, 2), (3, 100)], 2, 0);
    dir.write("test.bin", &bad);
    match read() {
        DataError::LabelOutOfRange {
            index,
            label,
            classes,
            ..
        } => assert_eq!((index, label, classes), (2, 100, 100)),
        other => panic!("{other:?}"),
    }

    // CIFAR-10: label 10 is out of range.
    let (bad, _) = cifar_records(&[(0, 10)], 1, 0);
    dir.write("test_batch.bin.gz", &gz(&bad));
    let e = expect_err(data::load_split(
        DatasetKind::Cifar10,
        Some(&dir.0),
        Split::Test,
    ));
    assert!(
        matches!(e, DataError::LabelOutOfRange { label: 10, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("test_batch.bin.gz"), "{e}");
}

#[test]
fn subsets_are_first_n_or_deterministic() {
    let shape = Shape::new(1, 2, 2);
    let n = 20;
    let images = pattern(n, 4, 5);
    let labels: Vec<u8> = (0..n as u8).map(|i| i % 10).collect();
    let d = Dataset::new(images.clone(), labels.clone(), shape, 10).unwrap();

    let first = d.clone().first(7);
    assert_eq!(first.n, 7);
    assert_eq!(first.images, images[..28]);
    assert_eq!(first.labels, labels[..7]);
    assert_eq!(d.clone().first(100), d);

    let a = d.random_subset(6, 11);
    assert_eq!(a, d.random_subset(6, 11));
    assert_ne!(a, d.random_subset(6, 12));
    assert_eq!(a.n, 6);
    // Each chosen sample is intact, in original order, without repeats.
    let picked: Vec<usize> = (0..a.n)
        .map(|k| (0..n).find(|&i| d.image(i) == a.image(k)).unwrap())
        .collect();
    assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
    for (k, &i) in picked.iter().enumerate() {
        assert_eq!(a.labels[k], d.labels[i]);
    }
    assert_eq!(d.random_subset(50, 1), d);

    assert!(Dataset::new(vec![0; 7], vec![0, 1], shape, 10).is_err());
    assert!(Dataset::new(vec![0; 8], vec![0, 10], shape, 10).is_err());
}

#[test]
fn normalisation_matches_hand_computation() {
    // Two samples of 2 channels x 1 x 2.
    let images = vec![0, 255, 51, 51, 255, 255, 102, 204];
    let d = Dataset::new(images, vec![0, 1], Shape::new(2, 1, 2), 2).unwrap();
    let norm = Normalization::from_dataset(&d);
    // Channel 0: values 0, 1, 1, 1 -> mean 0.75, var 0.75 - 0.5625.
    // Channel 1: values 0.2, 0.2, 0.4, 0.8 -> mean 0.4, var 0.22 - 0.16.
    let want_mean = [0.75f32, 0.4];
    let want_std = [0.1875f64.sqrt() as f32, 0.06f64.sqrt() as f32];
    for c in 0..2 {
        assert!((norm.mean[c] - want_mean[c]).abs() < 1e-6, "{norm:?}");
        assert!((norm.std[c] - want_std[c]).abs() < 1e-6, "{norm:?}");
    }
    let mut out = [0f32; 4];
    norm.apply(d.image(1), &mut out);
    let want = [
        (1.0 - 0.75) / want_std[0],
        (1.0 - 0.75) / want_std[0],
        (0.4 - 0.4) / want_std[1],
        (0.8 - 0.4) / want_std[1],
    ];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-5, "{out:?} vs {want:?}");
    }

    // Eval batches carry exactly these values.
    let loader = Loader::new(
        Arc::new(d.clone()),
        norm.clone(),
        LoaderConfig::eval(2, LastBatch::Partial),
    )
    .unwrap();
    let batch = loader.plan(0).batch(0).unwrap();
    assert_eq!(batch.images[4..], out);
    assert_eq!(batch.labels, vec![0, 1]);

    // A channel without spread gets std 1 rather than a division by zero.
    let flat = Dataset::new(vec![9; 4], vec![0, 0], Shape::new(1, 1, 2), 1).unwrap();
    let n = Normalization::from_dataset(&flat);
    assert_eq!(n.std, vec![1.0]);
    assert!((n.mean[0] - 9.0 / 255.0).abs() < 1e-7);
}

/// A 2 x 6 x 5 image with value 100c + 10y + x (never 0 but at (0,0,0)).
fn ramp() -> (Vec<f32>, Shape) {
    let s = Shape::new(2, 6, 5);
    let v = (0..s.numel())
        .map(|k| {
            let (c, y, x) = (k / 30, (k / 5) % 6, k % 5);
            (100 * c + 10 * y + x) as f32 + 1.0
        })
        .collect();
    (v, s)
}

fn at(img: &[f32], s: Shape, c: usize, y: usize, x: usize) -> f32 {
    img[(c * s.h + y) * s.w + x]
}

#[test]
fn augmentation_flip_and_shift_are_exact() {
    let (img, s) = ramp();
    let mut out = vec![f32::NAN; img.len()];

    augment::apply(&img, s, AugmentChoice::IDENTITY, &mut out);
    assert_eq!(out, img);

    let flip = AugmentChoice {
        flip: true,
        ..AugmentChoice::IDENTITY
    };
    augment::apply(&img, s, flip, &mut out);
    for c in 0..2 {
        for y in 0..6 {
            for x in 0..5 {
                assert_eq!(at(&out, s, c, y, x), at(&img, s, c, y, 4 - x));
            }
        }
    }

    // Crop at (dy, dx) = (PAD + 1, PAD - 2): out(y, x) = in(y + 1, x - 2),
    // zero where that falls outside.
    let shift = AugmentChoice {
        dy: Augment::PAD + 1,
        dx: Augment::PAD - 2,
        flip: false,
    };
    augment::apply(&img, s, shift, &mut out);
    for c in 0..2 {
        for y in 0..6 {
            for x in 0..5 {
                let want = if y + 1 < 6 && x >= 2 {
                    at(&img, s, c, y + 1, x - 2)
                } else {
                    0.0
                };
                assert_eq!(at(&out, s, c, y, x), want, "c{c} y{y} x{x}");
            }
        }
    }
    // The bottom row and two left columns are zeros entering at the border.
    assert!((0..5).all(|x| at(&out, s, 1, 5, x) == 0.0));
    assert!((0..6).all(|y| at(&out, s, 0, y, 0) == 0.0 && at(&out, s, 0, y, 1) == 0.0));

    // Extreme corner: the top 4 rows and left 4 columns are padding.
    let corner = AugmentChoice {
        dy: 0,
        dx: 0,
        flip: false,
    };
    augment::apply(&img, s, corner, &mut out);
    let nonzero: Vec<(usize, usize)> = (0..6)
        .flat_map(|y| (0..5).map(move |x| (y, x)))
        .filter(|&(y, x)| at(&out, s, 0, y, x) != 0.0)
        .collect();
    assert_eq!(nonzero, vec![(4, 4), (5, 4)]);
    assert_eq!(at(&out, s, 0, 5, 4), at(&img, s, 0, 1, 0));

    // Shift then flip: out(y, x) = shifted(y, W - 1 - x).
    let both = AugmentChoice {
        flip: true,
        ..shift
    };
    let mut shifted = vec![0f32; img.len()];
    augment::apply(&img, s, shift, &mut shifted);
    augment::apply(&img, s, both, &mut out);
    for y in 0..6 {
        for x in 0..5 {
            assert_eq!(at(&out, s, 1, y, x), at(&shifted, s, 1, y, 4 - x));
        }
    }
}

#[test]
fn augmentation_defaults_and_choices() {
    for kind in DatasetKind::ALL {
        let a = Augment::default_for(kind);
        assert!(a.pad_crop);
        assert_eq!(
            a.flip,
            matches!(kind, DatasetKind::Cifar10 | DatasetKind::Cifar100)
        );
    }
    let all = Augment {
        pad_crop: true,
        flip: true,
    };
    let mut seen_dy = [false; 9];
    let mut seen_dx = [false; 9];
    let mut flips = 0;
    for p in 0..2000 {
        let c = all.choice(rng::augment_word(1, 2, p));
        seen_dy[c.dy] = true;
        seen_dx[c.dx] = true;
        flips += c.flip as usize;
        let none = Augment::NONE.choice(rng::augment_word(1, 2, p));
        assert_eq!(none, AugmentChoice::IDENTITY);
        let flip_only = Augment {
            pad_crop: false,
            flip: true,
        }
        .choice(rng::augment_word(1, 2, p));
        assert_eq!((flip_only.dy, flip_only.dx), (4, 4));
    }
    assert!(seen_dy.iter().all(|&b| b) && seen_dx.iter().all(|&b| b));
    assert!((800..1200).contains(&flips), "{flips}");
}

/// A synthetic 3 x 4 x 4 dataset of `n` samples with labels i % 7.
fn synthetic(n: usize) -> Arc<Dataset> {
    let shape = Shape::new(3, 4, 4);
    let labels = (0..n).map(|i| (i % 7) as u8).collect();
    Arc::new(Dataset::new(pattern(n, shape.numel(), 9), labels, shape, 7).unwrap())
}

fn train_loader(d: &Arc<Dataset>, batch: usize, seed: u64) -> Loader {
    let aug = Augment {
        pad_crop: true,
        flip: true,
    };
    Loader::new(
        d.clone(),
        Normalization::from_dataset(d),
        LoaderConfig::train(batch, seed, aug),
    )
    .unwrap()
}

fn sync_batches(loader: &Loader, epoch: u64) -> Vec<Batch> {
    let plan = loader.plan(epoch);
    (0..plan.len()).map(|i| plan.batch(i).unwrap()).collect()
}

#[test]
fn order_is_a_pure_function_of_seed_and_epoch() {
    let order = rng::epoch_order(1000, 42, 3);
    assert_eq!(order, rng::epoch_order(1000, 42, 3));
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    assert_ne!(order, rng::epoch_order(1000, 42, 4));
    assert_ne!(order, rng::epoch_order(1000, 43, 3));
    assert_ne!(order, (0..1000).collect::<Vec<u32>>());

    let d = synthetic(50);
    let a = train_loader(&d, 8, 5);
    let b = train_loader(&d, 8, 5);
    assert_eq!(sync_batches(&a, 2), sync_batches(&b, 2));
    assert_ne!(sync_batches(&a, 2), sync_batches(&a, 3));
    assert_ne!(
        sync_batches(&a, 2),
        sync_batches(&train_loader(&d, 8, 6), 2)
    );
    // Each sample appears at most once per epoch, with its label.
    let plan = a.plan(2);
    for (k, batch) in sync_batches(&a, 2).iter().enumerate() {
        for (slot, &label) in batch.labels.iter().enumerate() {
            let i = plan.order()[k * 8 + slot] as usize;
            assert_eq!(label, d.labels[i] as u32);
        }
    }
}

#[test]
fn background_batches_equal_synchronous_ones_and_resume_exactly() {
    let d = synthetic(103);
    let loader = train_loader(&d, 10, 77);
    assert_eq!(loader.batches_per_epoch(), 10); // drop_last
    for epoch in [0, 1, 7] {
        let sync = sync_batches(&loader, epoch);
        let background: Vec<Batch> = loader.batches(epoch, 0).collect();
        assert_eq!(background, sync);
        assert!(background.iter().all(|b| b.len() == 10 && b.valid == 10));
        for k in [1, 4, 9, 10, 15] {
            let resumed: Vec<Batch> = loader.batches(epoch, k).collect();
            let skipped: Vec<Batch> = loader.batches(epoch, 0).skip(k).collect();
            assert_eq!(resumed, skipped, "epoch {epoch} from {k}");
        }
    }
    let it = loader.batches(0, 3);
    assert_eq!(it.len(), 7);
    // Dropping an iterator that is mid-epoch stops its thread.
    let mut it = loader.batches(1, 0);
    assert_eq!(it.next().unwrap().index, 0);
    drop(it);
}

#[test]
fn last_batch_drop_partial_and_pad() {
    let d = synthetic(23);
    let norm = Normalization::from_dataset(&d);
    let make = |last| Loader::new(d.clone(), norm.clone(), LoaderConfig::eval(10, last)).unwrap();

    let drop_last = make(LastBatch::Drop);
    assert_eq!(drop_last.batches(0, 0).count(), 2);

    let partial: Vec<Batch> = make(LastBatch::Partial).batches(0, 0).collect();
    assert_eq!(partial.len(), 3);
    assert_eq!((partial[2].len(), partial[2].valid), (3, 3));
    assert_eq!(partial[2].images.len(), 3 * 48);

    let padded: Vec<Batch> = make(LastBatch::Pad).batches(0, 0).collect();
    assert_eq!(padded.len(), 3);
    let last = &padded[2];
    assert_eq!((last.len(), last.valid, last.index), (10, 3, 2));
    assert_eq!(last.images.len(), 10 * 48);
    assert_eq!(last.images[..3 * 48], partial[2].images[..]);
    assert_eq!(last.labels[..3], partial[2].labels[..]);
    assert!(last.images[3 * 48..].iter().all(|&v| v == 0.0));
    assert!(last.labels[3..].iter().all(|&l| l == 0));
    // Evaluation is in file order, unaugmented.
    assert_eq!(
        padded[0].labels,
        (0..10).map(|i| (i % 7) as u32).collect::<Vec<_>>()
    );
    let mut first = vec![0f32; 48];
    norm.apply(d.image(0), &mut first);
    assert_eq!(padded[0].images[..48], first[..]);

    assert!(Loader::new(
        d.clone(),
        norm.clone(),
        LoaderConfig::eval(0, LastBatch::Pad)
    )
    .is_err());
    assert!(Loader::new(
        d,
        Normalization::identity(1),
        LoaderConfig::eval(4, LastBatch::Pad)
    )
    .is_err());
}

#[test]
fn real_fashion_mnist() {
    // As the trainer's tests, this needs the Debian package (CI installs
    // it): without it the test fails and says so.
    let dir = Path::new(data::FASHION_MNIST_DIR);
    assert!(
        dir.is_dir(),
        "{} not found: apt-get install dataset-fashion-mnist",
        dir.display()
    );
    let splits = data::load(DatasetKind::FashionMnist, None).unwrap();
    for (d, n) in [(&splits.train, 60000), (&splits.test, 10000)] {
        assert_eq!(d.n, n);
        assert_eq!(d.shape, Shape::new(1, 28, 28));
        assert_eq!(d.images.len(), n * 784);
        let mut counts = [0usize; 10];
        for &l in &d.labels {
            counts[l as usize] += 1;
        }
        // Fashion-MNIST is balanced: n / 10 samples per class.
        assert!(counts.iter().all(|&c| c == n / 10), "{counts:?}");
    }
    let norm = Normalization::from_dataset(&splits.train);
    assert!((norm.mean[0] - 0.2860).abs() < 1e-3, "{norm:?}");
    assert!((norm.std[0] - 0.3530).abs() < 1e-3, "{norm:?}");
}

#[test]
fn a_folder_or_fifo_where_a_data_file_should_be_is_named_as_such() {
    let dir = TempDir::new("notafile");
    dir.write("train-labels-idx1-ubyte", &idx_labels(&[0, 1]));
    std::fs::create_dir_all(dir.0.join("train-images-idx3-ubyte")).unwrap();
    match mnist_train(&dir) {
        DataError::NotAFile { path, found } => {
            assert_eq!(path, dir.0.join("train-images-idx3-ubyte"));
            assert_eq!(found, "a folder");
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir(dir.0.join("train-images-idx3-ubyte")).unwrap();
    // A FIFO is reported without being opened (opening would block).
    let fifo = dir.0.join("train-images-idx3-ubyte");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let e = mnist_train(&dir);
    assert!(
        e.to_string()
            .ends_with("train-images-idx3-ubyte: is a FIFO, not a data file"),
        "{e}"
    );
}

#[test]
fn a_gzip_bomb_is_stopped_at_what_the_header_declares() {
    let dir = TempDir::new("bomb");
    dir.write("train-labels-idx1-ubyte", &idx_labels(&[0, 1]));
    // A header for two images, then 64 MiB of zeros (64 KiB compressed).
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&idx_images(2, 28, 28, &[])).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).unwrap();
    }
    dir.write("train-images-idx3-ubyte.gz", &encoder.finish().unwrap());
    match mnist_train(&dir) {
        DataError::TrailingBytes {
            expected, found, ..
        } => assert_eq!((expected, found), (16 + 2 * 784, 16 + 2 * 784 + 1)),
        other => panic!("{other:?}"),
    }
    // A header that declares more than a dataset file may hold is refused
    // before its body is read.
    dir.write(
        "train-images-idx3-ubyte.gz",
        &gz(&idx_images(u32::MAX as usize, 28, 28, &[])),
    );
    assert!(matches!(mnist_train(&dir), DataError::TooLarge { .. }));
}
