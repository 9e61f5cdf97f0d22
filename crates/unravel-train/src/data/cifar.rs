//! The binary versions of CIFAR-10 and CIFAR-100: headerless files of
//! fixed-size records, a label byte (CIFAR-10) or a coarse and a fine label
//! byte (CIFAR-100, of which the fine one is kept) followed by a 3x32x32
//! image already in CHW order (1024 red, 1024 green, 1024 blue bytes, rows
//! top to bottom). With no header, the file length is the only check of
//! integrity: it must be a positive multiple of the record size.

use std::path::Path;

use super::{read_bytes, DataError};

/// Bytes of one 3x32x32 image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// One CIFAR file decoded: images (CHW, concatenated) and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CifarRecords {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

/// Reads one CIFAR binary file (gzip when the name ends in `.gz`).
/// `label_bytes` is 1 for CIFAR-10 and 2 for CIFAR-100; the last label
/// byte of each record is the one kept, and it must be below `classes`.
pub fn read_records(
    path: &Path,
    label_bytes: usize,
    classes: usize,
) -> Result<CifarRecords, DataError> {
    // The largest file of the format holds the 50 000 training images.
    let most = 50_000 * (label_bytes + IMAGE_BYTES) as u64;
    let bytes = read_bytes(path, 0, |_| most)?;
    if bytes.len() as u64 > most {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            limit: most,
        });
    }
    parse(path, &bytes, label_bytes, classes)
}

/// Decodes CIFAR records from `bytes` (already decompressed); `path` only
/// names the file in errors.
pub fn parse(
    path: &Path,
    bytes: &[u8],
    label_bytes: usize,
    classes: usize,
) -> Result<CifarRecords, DataError> {
    let record = label_bytes + IMAGE_BYTES;
    let found = bytes.len() as u64;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        let whole = (bytes.len() / record + 1) * record;
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: format!(
                "a whole number of {record}-byte records ({} full, then {} bytes)",
                bytes.len() / record,
                bytes.len() % record
            ),
            expected: whole as u64,
            found,
        });
    }
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_bytes - 1];
        if label as usize >= classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: label as u32,
                classes,
            });
        }
        labels.push(label);
        images.extend_from_slice(&rec[label_bytes..]);
    }
    Ok(CifarRecords { images, labels })
}
