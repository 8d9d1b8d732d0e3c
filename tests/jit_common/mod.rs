//! Shared harness of the JIT tests: build a graph, run it through `ir::interp` (the oracle)
//! and through the JIT in every configuration (FMA on/off x 1/2 threads), compare outputs and
//! updated params.
//!
//! Tolerance: the JIT reassociates sums (vector lanes, GEMM blocking, per-thread partials)
//! and uses FMA and a polynomial `exp` (within 2 ulp); for a sum of K terms the reassociation
//! error is bounded by about K·2^-24·sum|terms|. Test tensors have at most a few thousand
//! terms per sum with magnitudes near 1, so `|jit - ref| <= RTOL·(|ref| + max|ref|)` with
//! `RTOL = 2^-13` (about 1e-4, i.e. a few hundred ulp of the tensor's scale) holds with a
//! wide margin while still catching any indexing or semantic error (which shows up at the
//! scale of the values themselves). Fake-quant outputs are compared exactly.

#![allow(dead_code)]

use qatc::exec::{Executor, Feed};
use qatc::ir::interp::{self, Value};
use qatc::ir::{Graph, ParamStore, Tensor};
use qatc::jit::{compile, JitOptions, Winograd};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const RTOL: f32 = 1.0 / 8192.0;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn rand_tensor(r: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| r.random_range(lo..hi)).collect(),
    )
}

/// Every configuration the JIT must agree with the oracle in: FMA on and off, 1 and 2
/// threads (the default lowering: stride-1 3×3 convolutions by Winograd F(4×4, 3×3), other
/// non-pointwise ones by the direct kernels), and on 2 threads once with Winograd
/// F(2×2, 3×3) and once with every convolution an im2col GEMM.
pub fn configs() -> Vec<JitOptions> {
    let mut v = Vec::new();
    for fma in [false, true] {
        for threads in [1, 2] {
            v.push(JitOptions {
                threads,
                fma,
                ..JitOptions::default()
            });
        }
    }
    for (winograd, direct) in [(Some(Winograd::F2), true), (None, false)] {
        v.push(JitOptions {
            threads: 2,
            winograd,
            direct,
            ..JitOptions::default()
        });
    }
    v
}

/// `|a - b| <= rtol * (|b| + max|b|)` elementwise; panics with the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = rtol * (w.abs() + scale);
        let d = (g - w).abs();
        let excess = if d.is_nan() { f32::INFINITY } else { d - tol };
        if excess > worst.1 || (!g.is_finite() && w.is_finite()) {
            worst = (i, excess.max(f32::MIN_POSITIVE));
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {} but the oracle says {} (tolerance {}, scale {scale})",
            got[i],
            want[i],
            rtol * (want[i].abs() + scale)
        );
    }
}

pub fn feeds_of(inputs: &[(String, Value)]) -> Vec<(&str, Feed<'_>)> {
    inputs
        .iter()
        .map(|(n, v)| {
            (
                n.as_str(),
                match v {
                    Value::F32(t) => Feed::F32(&t.data),
                    Value::I32 { data, .. } => Feed::I32(data),
                },
            )
        })
        .collect()
}

/// Runs `g` on the oracle and on the JIT in every configuration and compares outputs and
/// updates (`rtol = 0` demands bit equality). Runs `steps` steps, feeding the same inputs,
/// so state updates compound.
pub fn check_steps(
    g: &Graph,
    params: &ParamStore,
    inputs: &[(String, Value)],
    rtol: f32,
    steps: usize,
) {
    for opts in configs() {
        let mut exe = compile(g, params, &opts)
            .unwrap_or_else(|e| panic!("compiling `{}` with {opts:?}: {e}", g.name));
        let mut state = params.clone();
        for step in 0..steps {
            let refs: Vec<(&str, Value)> = inputs
                .iter()
                .map(|(n, v)| (n.as_str(), v.clone()))
                .collect();
            let want = interp::run(g, &state, &refs).expect("oracle run");
            let got = exe
                .run(&feeds_of(inputs))
                .unwrap_or_else(|e| panic!("running `{}`: {e}", g.name));
            for ((name, w), gt) in want.outputs.iter().zip(&got) {
                let w = w.f32().expect("f32 output");
                assert_eq!(gt.shape, w.shape, "output {name} shape");
                check(
                    &format!("{} {opts:?} step {step} output `{name}`", g.name),
                    &gt.data,
                    &w.data,
                    rtol,
                );
            }
            for (name, t) in &want.updates {
                state.insert(name.clone(), t.clone());
            }
            let jp = exe.params();
            for (name, _) in &want.updates {
                check(
                    &format!("{} {opts:?} step {step} update `{name}`", g.name),
                    &jp.get(name).unwrap().data,
                    &state.get(name).unwrap().data,
                    rtol,
                );
            }
            // keep both sides on the same state so errors do not compound across steps
            exe.set_params(&state).unwrap();
        }
    }
}

fn check(what: &str, got: &[f32], want: &[f32], rtol: f32) {
    if rtol == 0.0 {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0),
                "{what}: element {i} is {a} but the oracle says {b} (bit-exact expected)"
            );
        }
    } else {
        assert_close(what, got, want, rtol);
    }
}

pub fn check_graph(g: &Graph, params: &ParamStore, inputs: &[(String, Value)], rtol: f32) {
    check_steps(g, params, inputs, rtol, 1)
}
