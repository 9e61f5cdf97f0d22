//! Training-time augmentation as in the residual-network papers (He et al.
//! 2016 on CIFAR): pad the image by 4 pixels on each side, take a random
//! H x W crop of the padded image (a shift of up to 4 pixels each way),
//! and mirror it left-right with probability 1/2. It enlarges the training
//! set with plausible variants so deep networks overfit less.
//!
//! Flipping is on by default for CIFAR and off for MNIST and Fashion-MNIST
//! (a mirrored digit is not the same digit, and the usual Fashion-MNIST
//! recipes leave it out too); pad-and-crop is on for all four.
//!
//! Padding choice: the padding is applied to the *normalised* image with
//! zeros, i.e. the border takes the per-channel training mean, which is what
//! torchvision's `RandomCrop(padding=4)` does when applied to a tensor after
//! `Normalize`. The common PIL pipeline (crop before `ToTensor` and
//! `Normalize`) pads with black instead, which is `-mean/std` after
//! normalisation; the difference is a slightly brighter border and has no
//! measurable effect on accuracy.
//!
//! The random choices for a sample come from one 64-bit word (see
//! [`super::rng::augment_word`]), so they are a pure function of (seed,
//! epoch, position in the epoch).

use unravel_graph::Shape;

use crate::DatasetKind;

/// Which augmentations to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Augment {
    pub pad_crop: bool,
    pub flip: bool,
}

/// The random choices for one sample: the crop's top-left corner in the
/// padded image (`0..=2 * PAD` each way; `PAD` means no shift) and whether
/// to mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentChoice {
    pub dy: usize,
    pub dx: usize,
    pub flip: bool,
}

impl AugmentChoice {
    /// No shift, no flip: the image unchanged.
    pub const IDENTITY: AugmentChoice = AugmentChoice {
        dy: Augment::PAD,
        dx: Augment::PAD,
        flip: false,
    };
}

impl Augment {
    /// Zero-padding on each side before the random crop.
    pub const PAD: usize = 4;

    /// No augmentation (evaluation).
    pub const NONE: Augment = Augment {
        pad_crop: false,
        flip: false,
    };

    /// The default for `kind`: pad-and-crop for all, flip for CIFAR only.
    pub fn default_for(kind: DatasetKind) -> Augment {
        Augment {
            pad_crop: true,
            flip: matches!(kind, DatasetKind::Cifar10 | DatasetKind::Cifar100),
        }
    }

    pub fn is_none(self) -> bool {
        !self.pad_crop && !self.flip
    }

    /// The choices this setting makes from the random word `word`.
    pub fn choice(self, word: u64) -> AugmentChoice {
        let span = (2 * Self::PAD + 1) as u64;
        let (dy, dx) = if self.pad_crop {
            // The low 32 bits give both offsets; the bias of % 9 on 2^32
            // values is below 1e-8.
            let low = word & 0xffff_ffff;
            ((low % span) as usize, ((low / span) % span) as usize)
        } else {
            (Self::PAD, Self::PAD)
        };
        AugmentChoice {
            dy,
            dx,
            flip: self.flip && (word >> 63) == 1,
        }
    }
}

/// Writes `image` (normalised, CHW of `shape`) transformed by `choice` into
/// `out`: first the crop at (`dy`, `dx`) of the image zero-padded by
/// [`Augment::PAD`], then the mirror if `choice.flip`.
pub fn apply(image: &[f32], shape: Shape, choice: AugmentChoice, out: &mut [f32]) {
    let (h, w) = (shape.h, shape.w);
    let pad = Augment::PAD as isize;
    for (src, dst) in image
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(h * w))
        .take(shape.c)
    {
        for y in 0..h {
            let sy = y as isize + choice.dy as isize - pad;
            let row = &mut dst[y * w..(y + 1) * w];
            if sy < 0 || sy >= h as isize {
                row.fill(0.0);
                continue;
            }
            let src_row = &src[sy as usize * w..(sy as usize + 1) * w];
            for (x, d) in row.iter_mut().enumerate() {
                let cx = if choice.flip { w - 1 - x } else { x };
                let sx = cx as isize + choice.dx as isize - pad;
                *d = if sx < 0 || sx >= w as isize {
                    0.0
                } else {
                    src_row[sx as usize]
                };
            }
        }
    }
}
