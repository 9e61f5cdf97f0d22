//! The dataset layer: everything between the files on disk and the f32
//! batches a training step uploads to the GPU. All of it runs on the host.
//!
//! - Readers ([`idx`], [`cifar`]) decode the files as distributed (IDX for
//!   MNIST and Fashion-MNIST, the binary version of CIFAR-10/100), gzipped
//!   or not, into one [`Dataset`] per [`Split`]: u8 pixels in CHW order,
//!   which is what the network consumes, so batching is plain copying. Files
//!   are found by [`load`] under a folder (`--data-dir`), with the usual
//!   names and subfolders accepted, so a download can be used as extracted.
//! - Every defect of a file is a typed [`DataError`] naming the file, so a
//!   bad download is diagnosed from the message, never from a panic or a
//!   model that silently learns garbage.
//! - [`Dataset::first`] and [`Dataset::random_subset`] serve
//!   `--train-subset` / `--test-subset`: small, reproducible runs.
//! - [`Normalization`] holds per-channel statistics of the training set,
//!   so that inputs are centred and scaled alike for every model and split.
//! - [`Augment`] (pad-and-crop, horizontal flip) is the standard recipe for
//!   residual networks on these datasets; it is applied per sample as
//!   batches are built.
//! - [`Loader`] fixes the epoch's order and every random choice as pure
//!   functions of (seed, epoch, position) ([`rng`]), so a run resumed from a
//!   checkpoint sees exactly the batches the uninterrupted run would have,
//!   and [`Batches`] builds them on a background thread so the GPU does not
//!   wait on the host.

pub mod augment;
pub mod batches;
pub mod cifar;
mod error;
pub mod idx;
pub mod normalize;
pub mod rng;

use std::io::Read;
use std::path::{Path, PathBuf};

use unravel_graph::Shape;

use crate::DatasetKind;

pub use augment::{Augment, AugmentChoice};
pub use batches::{Batch, Batches, EpochPlan, LastBatch, Loader, LoaderConfig};
pub use error::DataError;
pub use normalize::Normalization;

/// Where the Debian package `dataset-fashion-mnist` installs its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The training or the test part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "training",
            Split::Test => "test",
        }
    }
}

/// One split of a dataset held in memory as bytes, as on disk.
///
/// Invariants (checked by the readers and [`Dataset::new`]):
/// `images.len() == n * shape.numel()`, `labels.len() == n`, and every
/// label is below `classes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// `n` images of `shape`, each in CHW order, one after the other.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub shape: Shape,
    pub classes: usize,
}

/// Both splits of a dataset.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

impl Dataset {
    /// Assembles a dataset from its parts, checking the invariants.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u8>,
        shape: Shape,
        classes: usize,
    ) -> Result<Dataset, DataError> {
        let n = labels.len();
        if images.len() != n * shape.numel() {
            return Err(DataError::Invalid(format!(
                "{} image bytes do not make {n} images of {}x{}x{}",
                images.len(),
                shape.c,
                shape.h,
                shape.w
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= classes)
        {
            return Err(DataError::Invalid(format!(
                "sample {i} has label {l}, but there are {classes} classes"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            n,
            shape,
            classes,
        })
    }

    /// Sample `i`'s pixels (CHW).
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.shape.numel();
        &self.images[i * len..(i + 1) * len]
    }

    /// The first `n` samples (all of them when `n >= self.n`): the cheap
    /// subset, fine for files that are not sorted by class, as none of
    /// the four datasets is.
    pub fn first(mut self, n: usize) -> Dataset {
        let n = n.min(self.n);
        self.images.truncate(n * self.shape.numel());
        self.labels.truncate(n);
        self.n = n;
        self
    }

    /// `n` samples chosen uniformly without replacement, a pure function
    /// of `seed`, kept in their original order (all of them when
    /// `n >= self.n`).
    pub fn random_subset(&self, n: usize, seed: u64) -> Dataset {
        let n = n.min(self.n);
        let mut picked = rng::sample_indices(self.n, n, seed);
        picked.sort_unstable();
        let len = self.shape.numel();
        let mut images = Vec::with_capacity(n * len);
        let mut labels = Vec::with_capacity(n);
        for &i in &picked {
            images.extend_from_slice(self.image(i as usize));
            labels.push(self.labels[i as usize]);
        }
        Dataset {
            images,
            labels,
            n,
            shape: self.shape,
            classes: self.classes,
        }
    }
}

/// The folder a dataset is read from when none is given: only
/// Fashion-MNIST has one (where its Debian package puts it).
pub fn default_data_dir(kind: DatasetKind) -> Option<&'static Path> {
    match kind {
        DatasetKind::FashionMnist => Some(Path::new(FASHION_MNIST_DIR)),
        _ => None,
    }
}

/// How to obtain a dataset, for error messages.
pub fn how_to_get(kind: DatasetKind) -> String {
    match kind {
        DatasetKind::FashionMnist => format!(
            "install it with `apt-get install dataset-fashion-mnist` (files land in \
             {FASHION_MNIST_DIR}), or download the four IDX files from \
             https://github.com/zalandoresearch/fashion-mnist and give their folder as the data folder"
        ),
        DatasetKind::Mnist => "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
             t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (from \
             https://yann.lecun.com/exdb/mnist/ or the mirror \
             https://ossci-datasets.s3.amazonaws.com/mnist/) into one folder and give it as the \
             data folder"
            .to_string(),
        DatasetKind::Cifar10 => "download the binary version, \
             https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extract it and give the \
             folder holding cifar-10-batches-bin/ or the .bin files as the data folder"
            .to_string(),
        DatasetKind::Cifar100 => "download the binary version, \
             https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz, extract it and give the \
             folder holding cifar-100-binary/ or the .bin files as the data folder"
            .to_string(),
    }
}

/// Loads both splits of `kind` from `data_dir`, or from the dataset's
/// default folder when `data_dir` is `None`.
pub fn load(kind: DatasetKind, data_dir: Option<&Path>) -> Result<Splits, DataError> {
    Ok(Splits {
        train: load_split(kind, data_dir, Split::Train)?,
        test: load_split(kind, data_dir, Split::Test)?,
    })
}

/// Loads one split of `kind` from `data_dir`, or from the dataset's
/// default folder when `data_dir` is `None`.
///
/// Each file is looked for under its usual name and with `.gz` appended;
/// for CIFAR also inside the folder the archive extracts to
/// (`cifar-10-batches-bin/`, `cifar-100-binary/`). IDX files may also use
/// the `train-images.idx3-ubyte` spelling of some mirrors.
pub fn load_split(
    kind: DatasetKind,
    data_dir: Option<&Path>,
    split: Split,
) -> Result<Dataset, DataError> {
    let dir = match data_dir.or_else(|| default_data_dir(kind)) {
        Some(d) => d,
        None => {
            return Err(DataError::NoDataDir {
                kind,
                hint: how_to_get(kind),
            })
        }
    };
    let shape = kind.input();
    let classes = kind.classes();
    match kind {
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let prefix = match split {
                Split::Train => "train",
                Split::Test => "t10k",
            };
            let dirs = [dir.to_path_buf()];
            let images_path = find(
                kind,
                &dirs,
                &[
                    &format!("{prefix}-images-idx3-ubyte"),
                    &format!("{prefix}-images.idx3-ubyte"),
                ],
                &format!("{} images", split.name()),
            )?;
            let labels_path = find(
                kind,
                &dirs,
                &[
                    &format!("{prefix}-labels-idx1-ubyte"),
                    &format!("{prefix}-labels.idx1-ubyte"),
                ],
                &format!("{} labels", split.name()),
            )?;
            read_idx_pair(&images_path, &labels_path, shape, classes)
        }
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let (sub, label_bytes, names): (&str, usize, Vec<String>) = match (kind, split) {
                (DatasetKind::Cifar10, Split::Train) => (
                    "cifar-10-batches-bin",
                    1,
                    (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
                ),
                (DatasetKind::Cifar10, Split::Test) => {
                    ("cifar-10-batches-bin", 1, vec!["test_batch.bin".into()])
                }
                (_, Split::Train) => ("cifar-100-binary", 2, vec!["train.bin".into()]),
                (_, Split::Test) => ("cifar-100-binary", 2, vec!["test.bin".into()]),
            };
            let dirs = [dir.to_path_buf(), dir.join(sub)];
            let mut paths = Vec::with_capacity(names.len());
            for name in &names {
                paths.push(find(kind, &dirs, &[name.as_str()], name)?);
            }
            read_cifar_files(&paths, label_bytes, classes)
        }
    }
}

/// Reads an IDX images file and its labels file into a dataset of 1-channel
/// images of `shape`, checking counts and label range.
pub fn read_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    shape: Shape,
    classes: usize,
) -> Result<Dataset, DataError> {
    if shape.c != 1 {
        return Err(DataError::Invalid(format!(
            "IDX images have one channel, not {}",
            shape.c
        )));
    }
    let images = idx::read_images(images_path, shape.h, shape.w)?;
    let labels = idx::read_labels(labels_path)?;
    let (ni, nl) = (images.dims[0] as usize, labels.dims[0] as usize);
    if ni != nl {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: ni,
            labels_path: labels_path.to_path_buf(),
            labels: nl,
        });
    }
    check_labels(labels_path, &labels.data, classes)?;
    Ok(Dataset {
        images: images.data,
        labels: labels.data,
        n: ni,
        shape,
        classes,
    })
}

/// Reads CIFAR binary files (1 label byte per record for CIFAR-10, 2 for
/// CIFAR-100) and concatenates them in the order given.
pub fn read_cifar_files(
    paths: &[PathBuf],
    label_bytes: usize,
    classes: usize,
) -> Result<Dataset, DataError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let part = cifar::read_records(path, label_bytes, classes)?;
        images.extend_from_slice(&part.images);
        labels.extend_from_slice(&part.labels);
    }
    Ok(Dataset {
        n: labels.len(),
        images,
        labels,
        shape: Shape::new(3, 32, 32),
        classes,
    })
}

fn check_labels(path: &Path, labels: &[u8], classes: usize) -> Result<(), DataError> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: labels[index] as u32,
            classes,
        }),
        None => Ok(()),
    }
}

/// The first regular file among `dirs` x `names` x {"", ".gz"}; when
/// there is none but something else stands at one of those paths (a
/// folder, a FIFO), that is the error.
fn find(
    kind: DatasetKind,
    dirs: &[PathBuf],
    names: &[&str],
    what: &str,
) -> Result<PathBuf, DataError> {
    let mut tried = Vec::new();
    let mut not_a_file = None;
    for dir in dirs {
        for name in names {
            for suffix in ["", ".gz"] {
                let path = dir.join(format!("{name}{suffix}"));
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => return Ok(path),
                    Ok(m) => {
                        not_a_file.get_or_insert((path.clone(), file_kind(&m.file_type())));
                    }
                    Err(_) => {}
                }
                tried.push(path);
            }
        }
    }
    if let Some((path, found)) = not_a_file {
        return Err(DataError::NotAFile { path, found });
    }
    Err(DataError::Missing {
        kind,
        what: what.to_string(),
        tried,
        hint: how_to_get(kind),
    })
}

/// What a path that is not a regular file is, in words.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// The most bytes a dataset file may decompress to (the largest file of
/// the datasets read here, CIFAR's 50 000 training images, is 154 MB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// A file's bytes, gunzipped when its name ends in `.gz` (the extension,
/// not the content, decides: a CIFAR record may well start with the gzip
/// magic bytes). The first `header` bytes are read, then at most
/// `limit(header bytes) + 1` in all, so a gzip bomb is stopped as soon as
/// it passes what its header or format allows (the caller sees one byte
/// too many); a limit above [`MAX_FILE_BYTES`] is an error at once.
pub fn read_bytes(
    path: &Path,
    header: usize,
    limit: impl FnOnce(&[u8]) -> u64,
) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if !metadata.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
            found: file_kind(&metadata.file_type()),
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let gzip = path.extension().is_some_and(|e| e == "gz");
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(file)
    };
    let read_error = |source| match gzip {
        true => DataError::Gzip {
            path: path.to_path_buf(),
            source,
        },
        false => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(header as u64)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let limit = limit(&bytes);
    // A plain file is bounded by its size: a short one is reported as
    // truncated by the parser.
    if limit > MAX_FILE_BYTES && (gzip || metadata.len() > MAX_FILE_BYTES) {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    let rest = (limit + 1).saturating_sub(bytes.len() as u64);
    reader
        .take(rest)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    Ok(bytes)
}
