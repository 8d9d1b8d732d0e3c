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

    /// Every image resized to `[h, w]` (bilinear, pixel centers aligned as
    /// `tf.image.resize` does: output pixel `o` samples the input at `(o + 0.5)·in/out − 0.5`,
    /// clamped to the edges), for models built for another input size (`--image-size` on
    /// MNIST). Channels stay as they are; a dataset already of that size is returned as it is.
    pub fn resized(self, h: usize, w: usize) -> Dataset {
        let [ih, iw, c] = match self.sample_shape[..] {
            [ih, iw, c] => [ih, iw, c],
            [ih, iw] => [ih, iw, 1],
            _ => return self,
        };
        if (ih, iw) == (h, w) || h == 0 || w == 0 {
            return self;
        }
        // per output coordinate: the two input coordinates and the second one's weight
        let taps = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
            (0..out)
                .map(|o| {
                    let x = ((o as f32 + 0.5) * inp as f32 / out as f32 - 0.5).max(0.0);
                    let lo = (x.floor() as usize).min(inp - 1);
                    let hi = (lo + 1).min(inp - 1);
                    (lo, hi, x - lo as f32)
                })
                .collect()
        };
        let (ys, xs) = (taps(h, ih), taps(w, iw));
        let mut images = Vec::with_capacity(self.len() * h * w * c);
        for i in 0..self.len() {
            let img = self.image(i);
            let at = |y: usize, x: usize, ch: usize| img[(y * iw + x) * c + ch];
            for &(y0, y1, fy) in &ys {
                for &(x0, x1, fx) in &xs {
                    for ch in 0..c {
                        let top = at(y0, x0, ch) * (1.0 - fx) + at(y0, x1, ch) * fx;
                        let bottom = at(y1, x0, ch) * (1.0 - fx) + at(y1, x1, ch) * fx;
                        images.push(top * (1.0 - fy) + bottom * fy);
                    }
                }
            }
        }
        Dataset {
            sample_shape: vec![h, w, c],
            images,
            labels: self.labels,
            classes: self.classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_interpolates_between_pixel_centers() {
        // a 1x2 ramp [0, 1] widened to 1x4: centers at -0.25, 0.25, 0.75, 1.25 of the input
        let d = Dataset {
            sample_shape: vec![1, 2, 1],
            images: vec![0.0, 1.0],
            labels: vec![3],
            classes: 10,
        };
        let r = d.resized(1, 4);
        assert_eq!(r.sample_shape, [1, 4, 1]);
        assert_eq!(r.images, [0.0, 0.25, 0.75, 1.0]);
        assert_eq!(r.labels, [3]);
        // a constant image stays constant; the same size is a no-op
        let d = Dataset {
            sample_shape: vec![2, 2, 3],
            images: vec![0.5; 12],
            labels: vec![0],
            classes: 10,
        };
        assert!(d.clone().resized(5, 3).images.iter().all(|&v| v == 0.5));
        assert_eq!(d.clone().resized(2, 2).images, d.images);
    }
}
