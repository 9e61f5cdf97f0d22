//! Every way reading a dataset can fail, each naming the file at fault and
//! what is wrong with it, so that a bad download is diagnosed from the
//! message alone instead of from a panic or a silently wrong model.

use std::path::PathBuf;

use crate::DatasetKind;

/// An error from the dataset layer. The readers never panic on file
/// contents: anything unexpected in a file ends up here.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No folder was given and the dataset has none by default.
    #[error("{kind}: no data folder given and {kind} has no default; {hint}")]
    NoDataDir { kind: DatasetKind, hint: String },

    /// A file of the dataset is in none of the places looked at.
    #[error(
        "{kind}: cannot find the {what} file; looked for {}; {hint}",
        list(tried)
    )]
    Missing {
        kind: DatasetKind,
        /// Which file this is, in words ("training images", "test_batch.bin").
        what: String,
        /// Every path tried, in order.
        tried: Vec<PathBuf>,
        hint: String,
    },

    /// Something other than a regular file stands where a data file
    /// should be.
    #[error("{}: is {found}, not a data file", path.display())]
    NotAFile { path: PathBuf, found: &'static str },

    /// More data than the file's header or format allows, or than a
    /// dataset file may hold ([`super::MAX_FILE_BYTES`]); reading stopped
    /// at `limit` bytes.
    #[error(
        "{}: more data than its header or format allows; reading stopped at {limit} bytes",
        path.display()
    )]
    TooLarge { path: PathBuf, limit: u64 },

    /// The operating system refused to read the file.
    #[error("{}: cannot read", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A `.gz` file whose gzip stream does not decode (bad header, bad
    /// deflate data, CRC mismatch or a stream cut short).
    #[error("{}: corrupt gzip stream", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The (decompressed) file is shorter than its header or format says.
    #[error(
        "{}: truncated: {what} needs {expected} bytes but the file has {found}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        expected: u64,
        found: u64,
    },

    /// The (decompressed) file is longer than its header says (reading
    /// stops one byte past it, so `found` is a lower bound).
    #[error(
        "{}: more than the {expected} bytes the header describes (read {found} before stopping)",
        path.display()
    )]
    TrailingBytes {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    /// An IDX file whose magic number is not the one expected (e.g. a
    /// label file given where images are wanted, or not an IDX file).
    #[error(
        "{}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({what})",
        path.display()
    )]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
        what: &'static str,
    },

    /// Image dimensions that are not those of the dataset.
    #[error(
        "{}: wrong dimensions {found:?}, expected {expected:?}",
        path.display()
    )]
    BadDimensions {
        path: PathBuf,
        expected: Vec<u64>,
        found: Vec<u64>,
    },

    /// The image and label files of a split disagree on the sample count.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        images_path.display(), labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },

    /// A label that is not a class of the dataset.
    #[error(
        "{}: sample {index} has label {label}, but the dataset has {classes} classes",
        path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u32,
        classes: usize,
    },

    /// A dataset assembled in memory whose parts do not fit together, or a
    /// loader setting that cannot work (batch size 0).
    #[error("{0}")]
    Invalid(String),
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
