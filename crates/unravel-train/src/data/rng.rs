//! The randomness of the data pipeline, as pure functions of a seed and
//! counters rather than a generator threaded through the run: epoch e's
//! order depends only on (seed, e), and a sample's augmentation only on
//! (seed, e, position in the epoch). A run resumed from a checkpoint
//! (which records the seed, epoch and batch index) therefore sees exactly
//! the data the uninterrupted run would have seen, and the background
//! thread needs no shared state.
//!
//! The generator is SplitMix64, written out here instead of taken from
//! `rand`, whose `StdRng` algorithm and range sampling may change between
//! releases: a dependency upgrade must not change the data order of a
//! checkpointed run.

/// Stream tags keep the different uses of one seed independent.
const STREAM_SHUFFLE: u64 = 0x5348_5546_464c_4531; // "SHUFFLE1"
const STREAM_AUGMENT: u64 = 0x4155_474d_454e_5431; // "AUGMENT1"
const STREAM_SUBSET: u64 = 0x5355_4253_4554_3031; // "SUBSET01"

/// SplitMix64's output function: a bijective, well-mixing hash of a u64.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of several words, order-sensitive.
pub fn key(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x243f_6a88_85a3_08d3, |h, &w| mix(h ^ mix(w)))
}

/// SplitMix64: a small, fast generator, good enough for shuffling.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// Shuffles `items` in place (Fisher-Yates).
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The order in which epoch `epoch` visits `n` samples: a permutation of
/// `0..n` that depends only on (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix64::new(key(&[seed, STREAM_SHUFFLE, epoch]));
    shuffle(&mut order, &mut rng);
    order
}

/// The random word behind the augmentation of the sample at `position`
/// of epoch `epoch`.
pub fn augment_word(seed: u64, epoch: u64, position: u64) -> u64 {
    key(&[seed, STREAM_AUGMENT, epoch, position])
}

/// `k` distinct indices of `0..n`, chosen uniformly from `seed` (partial
/// Fisher-Yates), in the order drawn.
pub fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<u32> {
    let k = k.min(n);
    let mut all: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix64::new(key(&[seed, STREAM_SUBSET]));
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(k);
    all
}
