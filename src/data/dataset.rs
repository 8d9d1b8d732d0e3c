//! The in-memory dataset every loader fills, and the words they share: which split, and how
//! integer pixels are stored.

/// Which half of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The test images.
    Test,
}

/// How integer (0..255) pixels are stored in a [`Dataset`]: scaled to `[0, 1]` (the default,
/// the reference models' convention) or raw, for models that scale their input themselves.
/// Float pixels (an `.npz` of floats) are kept as they are either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pixels {
    /// `v / 255`.
    #[default]
    Unit,
    /// `v` as it is.
    Raw,
}

impl Pixels {
    /// Byte pixels as f32.
    pub fn of_bytes(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Pixels::Unit => bytes.iter().map(|&p| p as f32 / 255.0).collect(),
            Pixels::Raw => bytes.iter().map(|&p| p as f32).collect(),
        }
    }
}

/// Images and labels in memory, images as f32 NHWC (integer pixels scaled as [`Pixels`] says).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Per-sample shape, e.g. `[28, 28, 1]`.
    pub sample_shape: Vec<usize>,
    /// All samples' pixels back to back, `len() × sample_len()` values, each sample NHWC
    /// row-major.
    pub images: Vec<f32>,
    /// One class index per sample, in `0..classes`.
    pub labels: Vec<i32>,
    /// The number of classes (10 for MNIST).
    pub classes: usize,
}

impl Dataset {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample: the product of `sample_shape` (784 for MNIST).
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Sample `i`'s pixels.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The first `n` samples (or all).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            sample_shape: self.sample_shape.clone(),
            images: self.images[..n * self.sample_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes,
        }
    }
}
