//! The IDX format of MNIST and Fashion-MNIST: a big-endian header (two zero
//! bytes, a type byte, the number of dimensions, then one u32 per
//! dimension) followed by the array itself. Only the unsigned-byte type the
//! two datasets use is accepted; every size is checked against the actual
//! file length before any indexing, so a damaged file is an error, never a
//! panic or an out-of-bounds read.

use std::path::Path;

use super::{read_bytes, DataError};

/// Magic number of an unsigned-byte 3-D IDX array (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an unsigned-byte 1-D IDX array (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// A decoded IDX array: its dimensions and its bytes in row-major order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<u64>,
    pub data: Vec<u8>,
}

/// Reads an IDX images file (gzip when the name ends in `.gz`) and checks
/// that each image is `h` x `w`.
pub fn read_images(path: &Path, h: usize, w: usize) -> Result<IdxArray, DataError> {
    let array = parse(path, &read_idx(path, IMAGES_MAGIC)?, IMAGES_MAGIC)?;
    if array.dims[1] != h as u64 || array.dims[2] != w as u64 {
        return Err(DataError::BadDimensions {
            path: path.to_path_buf(),
            expected: vec![array.dims[0], h as u64, w as u64],
            found: array.dims,
        });
    }
    Ok(array)
}

/// Reads an IDX labels file (gzip when the name ends in `.gz`).
pub fn read_labels(path: &Path) -> Result<IdxArray, DataError> {
    parse(path, &read_idx(path, LABELS_MAGIC)?, LABELS_MAGIC)
}

/// The file's bytes, read no further than one byte past what its header
/// declares (a damaged header is left for [`parse`] to report).
fn read_idx(path: &Path, magic: u32) -> Result<Vec<u8>, DataError> {
    let header = 4 + 4 * (magic & 0xff) as usize;
    read_bytes(path, header, |h| {
        if h.len() < header || h[..4] != magic.to_be_bytes() {
            return h.len() as u64;
        }
        h[4..]
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64)
            .fold(1u64, |a, d| a.saturating_mul(d))
            .saturating_add(header as u64)
    })
}

/// Decodes an IDX array from `bytes` (already decompressed); `path` only
/// names the file in errors.
pub fn parse(path: &Path, bytes: &[u8], magic: u32) -> Result<IdxArray, DataError> {
    let what = if magic == IMAGES_MAGIC {
        "IDX unsigned-byte 3-D array: images"
    } else {
        "IDX unsigned-byte 1-D array: labels"
    };
    let truncated = |what: &str, expected: u64| DataError::Truncated {
        path: path.to_path_buf(),
        what: what.to_string(),
        expected,
        found: bytes.len() as u64,
    };
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);

    if bytes.len() < 4 {
        return Err(truncated("the IDX magic number", 4));
    }
    let found = word(0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
            what,
        });
    }
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(truncated("the IDX header", header as u64));
    }
    let dims: Vec<u64> = (0..ndims).map(|d| word(4 + 4 * d) as u64).collect();
    // At most 2^96 for three u32 dimensions: saturate rather than overflow.
    let body = dims.iter().fold(1u64, |a, &d| a.saturating_mul(d));
    let expected = body.saturating_add(header as u64);
    let found = bytes.len() as u64;
    if found < expected {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        return Err(truncated(
            &format!("an array of {}", shape.join("x")),
            expected,
        ));
    }
    if found > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}
