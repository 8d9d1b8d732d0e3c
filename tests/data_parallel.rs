//! Data-parallel training in one process: ranks as threads ([`ThreadGroup`]), each with its
//! own single-threaded JIT executor. The same run on 1, 2 and 3 ranks must give the same
//! model to float rounding, every rank must hold the same bits, and a run must repeat
//! bit-identically. (`tests/mpi.rs` runs the same through `mpirun`.)

mod data_parallel_common;

use data_parallel_common::{conv_bn_model, rel_l2};
use qatc::data::Dataset;
use qatc::dist::{GroupHandle, ThreadGroup};
use qatc::ir::{Graph, ParamStore};
use qatc::jit::{Jit, JitOptions};
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::train::{fit, FitConfig, FitResult};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn data(n: usize) -> Dataset {
    data_shaped(n, 8, 3, 0.3)
}

/// `n` samples of `side`×`side`×1 noise shifted by `step` per label.
fn data_shaped(n: usize, side: usize, classes: usize, step: f32) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let px = side * side;
    let labels: Vec<i32> = (0..n).map(|i| (i % classes) as i32).collect();
    let images = (0..n * px)
        .map(|i| labels[i / px] as f32 * step + rng.random::<f32>())
        .collect();
    Dataset {
        sample_shape: vec![side, side, 1],
        images,
        labels,
        classes,
    }
}

/// Conv + BatchNorm + dropout + dense: every kind of state a rank must keep in step.
fn model() -> (Graph, ParamStore) {
    let m = conv_bn_model("dp", 3, 8, 3, true);
    (m.graph, m.params)
}

/// `steps` steps of `graph` on `ranks` thread ranks; every rank's result.
fn train(graph: &Graph, params: &ParamStore, ranks: usize, steps: u64) -> Vec<FitResult> {
    train_on(graph, params, &data(240), ranks, steps, 1)
}

fn train_on(
    graph: &Graph,
    params: &ParamStore,
    train: &Dataset,
    ranks: usize,
    steps: u64,
    threads: usize,
) -> Vec<FitResult> {
    let members = ThreadGroup::new(ranks);
    std::thread::scope(|s| {
        let handles: Vec<_> = members
            .into_iter()
            .map(|member| {
                s.spawn(move || {
                    let cfg = FitConfig {
                        batch_size: 24,
                        epochs: 2,
                        stop_after: Some(steps),
                        progress: false,
                        seed: 5,
                        group: GroupHandle::new(member),
                        ..FitConfig::default()
                    };
                    let jit = Jit(JitOptions {
                        threads,
                        ..JitOptions::default()
                    });
                    fit(graph, params, train, None, &cfg, &jit).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn assert_close(single: &FitResult, multi: &FitResult, what: &str, tol: f64) {
    for (name, t) in single.state.iter() {
        let u = multi.state.get(name).unwrap();
        let e = rel_l2(&t.data, &u.data);
        assert!(e <= tol, "{what}: `{name}` differs by {e:e} (relative L2)");
    }
    let (a, b) = (&single.history.step_loss, &multi.history.step_loss);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "{what}: loss of step {i}: {x} vs {y}"
        );
    }
}

fn same_bits(results: &[FitResult]) {
    for r in &results[1..] {
        assert_eq!(r.state, results[0].state, "the ranks' states differ");
        assert_eq!(r.history.step_loss, results[0].history.step_loss);
    }
}

#[test]
fn float_training_on_two_and_three_ranks_matches_one() {
    let (g, p) = model();
    let one = train(&g, &p, 1, 20);
    for n in [2, 3] {
        let multi = train(&g, &p, n, 20);
        same_bits(&multi);
        assert_close(&one[0], &multi[0], &format!("{n} ranks"), 1e-5);
    }
}

/// QAT agrees to rounding for as long as no fake-quantized value lands on the other side of
/// a rounding boundary: a step's forward pass is piecewise constant in the weights, so once
/// a rounding-level difference flips one quantized value (here after five steps) two runs
/// differ by more than rounding while training equally well. Five steps check the
/// observers, the BatchNorm statistics and every other state tensor.
#[test]
fn qat_observers_and_statistics_match_one_rank_and_repeat_exactly() {
    let (g, mut p) = model();
    let qat = run_pipeline(g, &mut p, "default_8bit", &PipelineOptions::train()).unwrap();
    let one = train(&qat, &p, 1, 5);
    let two = train(&qat, &p, 2, 5);
    same_bits(&two);
    assert_close(&one[0], &two[0], "QAT on 2 ranks", 1e-5);
    let again = train(&qat, &p, 2, 5);
    assert_eq!(again[0].state, two[0].state, "a 2-rank run did not repeat");
}

/// A reference model with 17 synchronized BatchNorm layers, residual adds and depthwise
/// convolutions. Some of its params have an analytic gradient of zero (the beta of a
/// BatchNorm whose output only reaches the loss through another BatchNorm, which subtracts
/// any shift), so their gradients are rounding noise that Adam scales to full steps, and two
/// runs that sum in another order differ there by 100% after one step, even in one process
/// on 1 and 2 threads. So 2 ranks must match one process as closely as one process matches
/// itself on 2 threads: within twice that difference, tensor by tensor (or 1e-5).
#[test]
fn mbv2_tiny_on_two_ranks_matches_one_as_closely_as_another_thread_count() {
    let m = qatc::models::mbv2_tiny(0).unwrap();
    let set = data_shaped(480, 28, 10, 0.1);
    let one = train_on(&m.graph, &m.params, &set, 1, 1, 1);
    let threads = train_on(&m.graph, &m.params, &set, 1, 1, 2);
    let two = train_on(&m.graph, &m.params, &set, 2, 1, 1);
    same_bits(&two);
    for (name, t) in one[0].state.iter() {
        let floor = rel_l2(&t.data, &threads[0].state.get(name).unwrap().data);
        let e = rel_l2(&t.data, &two[0].state.get(name).unwrap().data);
        assert!(
            e <= (2.0 * floor).max(1e-5),
            "`{name}` differs by {e:e} on 2 ranks, by {floor:e} on 2 threads"
        );
    }
}
