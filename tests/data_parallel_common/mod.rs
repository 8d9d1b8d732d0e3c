//! What the data-parallel tests share (`tests/data_parallel.rs`, ranks as threads, and
//! `tests/mpi.rs`, ranks as processes): the model every kind of rank state lives in, and the
//! distance they compare weights with.
#![allow(dead_code)]

use qatc::ir::builder::{Layer, Model, Sequential};

/// Conv + BatchNorm + ReLU, a strided conv, an optional dropout, dense: weights, BatchNorm
/// statistics (synchronized over the ranks) and, with `dropout`, masks of global samples.
/// `name` and `seed` as the builder takes them.
pub fn conv_bn_model(name: &str, seed: u64, side: usize, classes: usize, dropout: bool) -> Model {
    let mut m = Sequential::new(name, &[side, side, 1], seed)
        .add(Layer::conv2d(6, 3).same().no_bias())
        .add(Layer::batch_norm())
        .add(Layer::relu())
        .add(Layer::conv2d(8, 3).stride(2).same())
        .add(Layer::relu())
        .add(Layer::flatten());
    if dropout {
        m = m.add(Layer::Dropout(0.25));
    }
    m.add(Layer::dense(classes)).build().unwrap()
}

/// `|a - b| / |a|` (L2 norms, in f64): `b` against the reference `a`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}
