//! Training-time augmentation for small images: a random crop after zero padding and a
//! horizontal flip, drawn per sample from `(seed, epoch, sample index)` so the same seed gives
//! the same batches (and the same model bytes) on every run.

use crate::error::{Error, Result};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to apply to each training image (NHWC); nothing by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Pad by this many zero pixels on every side, then crop back to the original size at a
    /// random offset (0: no crop).
    pub crop: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// Parses `crop:4,flip` (either part may be left out; `none` is nothing).
    pub fn parse(s: &str) -> Result<Augment> {
        let mut a = Augment::default();
        for part in s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "none")
        {
            match part.split_once(':') {
                Some(("crop", n)) => {
                    a.crop = n.parse().ok().filter(|&n: &usize| n <= 64).ok_or_else(|| {
                        Error::Usage(format!("augment `{part}`: crop takes 0..=64 pixels"))
                    })?
                }
                None if part == "flip" => a.flip = true,
                _ => {
                    return Err(Error::Usage(format!(
                        "augment `{part}`: expected crop:N and/or flip (as in crop:4,flip)"
                    )))
                }
            }
        }
        Ok(a)
    }

    /// Whether it changes anything.
    pub fn is_none(&self) -> bool {
        *self == Augment::default()
    }

    /// Augments one image `[h, w, c]` in place; `sample` is its index in the dataset.
    pub fn apply(
        &self,
        image: &mut [f32],
        shape: &[usize],
        seed: u64,
        epoch: usize,
        sample: usize,
    ) {
        let [h, w, c] = shape else { return };
        let (h, w, c) = (*h, *w, *c);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6175_676d_656e_7400);
        rng.set_stream(((epoch as u64) << 40) ^ sample as u64);
        let p = self.crop as isize;
        let (dy, dx) = if p > 0 {
            (
                rng.random_range(0..=2 * p as i64) as isize - p,
                rng.random_range(0..=2 * p as i64) as isize - p,
            )
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.random_range(0..2u32) == 1;
        if dy == 0 && dx == 0 && !flip {
            return;
        }
        let src = image.to_vec();
        for y in 0..h {
            for x in 0..w {
                let sy = y as isize + dy;
                let sx0 = if flip { w - 1 - x } else { x } as isize + dx;
                let out = &mut image[(y * w + x) * c..(y * w + x + 1) * c];
                if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx0) {
                    let at = (sy as usize * w + sx0 as usize) * c;
                    out.copy_from_slice(&src[at..at + c]);
                } else {
                    out.fill(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_by_name() {
        assert_eq!(
            Augment::parse("crop:4,flip").unwrap(),
            Augment {
                crop: 4,
                flip: true
            }
        );
        assert_eq!(Augment::parse("none").unwrap(), Augment::default());
        assert!(Augment::parse("rotate:10")
            .unwrap_err()
            .to_string()
            .contains("rotate"));
    }

    #[test]
    fn seeded_per_sample_and_epoch_and_pixel_preserving() {
        let a = Augment {
            crop: 2,
            flip: true,
        };
        let img: Vec<f32> = (0..6 * 5 * 2).map(|i| i as f32 + 1.0).collect();
        let run = |epoch, sample| {
            let mut x = img.clone();
            a.apply(&mut x, &[6, 5, 2], 7, epoch, sample);
            x
        };
        assert_eq!(run(0, 3), run(0, 3));
        let variants: std::collections::HashSet<Vec<u32>> = (0..20)
            .map(|s| run(0, s).iter().map(|v| v.to_bits()).collect())
            .collect();
        assert!(
            variants.len() > 5,
            "{} distinct augmentations",
            variants.len()
        );
        // every value is a source pixel or padding
        for v in run(1, 4) {
            assert!(v == 0.0 || img.contains(&v));
        }
        // a flip alone mirrors each row
        let f = Augment {
            crop: 0,
            flip: true,
        };
        let flipped = (0..50)
            .map(|s| {
                let mut x = img.clone();
                f.apply(&mut x, &[6, 5, 2], 1, 0, s);
                x
            })
            .find(|x| *x != img)
            .unwrap();
        assert_eq!(&flipped[0..2], &img[8..10]);
    }
}
