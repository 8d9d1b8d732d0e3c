//! Seeded shuffling and batch assembly.
//!
//! Epoch `e` visits the samples in a Fisher-Yates permutation drawn from ChaCha8 seeded
//! with `seed`, stream `e`: the order depends on `(seed, e)` only, so a resumed run
//! recomputes it. Training uses `len / batch` full batches per epoch and drops the final
//! partial batch (the train step has a static batch size; the dropped samples differ from
//! epoch to epoch when shuffling). Evaluation covers every sample: its last batch is
//! zero-padded and the padding ignored.

use crate::data::Dataset;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The sample order of epoch `epoch` (identity without shuffling).
pub fn epoch_order(len: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64);
        for i in (1..len).rev() {
            let j = rng.random_range(0..=i as u64) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// Copies the samples `indices` into `images`/`labels` (resized to fit); missing rows
/// (`indices.len() < rows`) are zero images with label 0.
pub fn gather(
    data: &Dataset,
    indices: &[usize],
    rows: usize,
    images: &mut Vec<f32>,
    labels: &mut Vec<i32>,
) {
    let n = data.sample_len();
    images.clear();
    images.resize(rows * n, 0.0);
    labels.clear();
    labels.resize(rows, 0);
    for (r, &i) in indices.iter().enumerate() {
        images[r * n..(r + 1) * n].copy_from_slice(data.image(i));
        labels[r] = data.labels[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_seeded_permutations() {
        let a = epoch_order(100, 7, 0, true);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 7, 0, true));
        assert_ne!(a, epoch_order(100, 7, 1, true));
        assert_ne!(a, epoch_order(100, 8, 0, true));
        assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn gather_pads_with_zeros() {
        let d = Dataset {
            sample_shape: vec![2],
            images: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            labels: vec![7, 8, 9],
            classes: 10,
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        gather(&d, &[2, 0], 3, &mut x, &mut y);
        assert_eq!(x, [5.0, 6.0, 1.0, 2.0, 0.0, 0.0]);
        assert_eq!(y, [9, 7, 0]);
    }
}
