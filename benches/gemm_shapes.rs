//! The GEMM shapes of the benchmark train steps (mnist_cnn at batch 32/256, mbv2_tiny at
//! batch 64), timed on the host GEMM the JIT calls (`qatc_gemm`, the `gemm` crate, one
//! thread): the measurements behind the JIT's choice of GEMM per shape.
//!
//! `cargo bench --bench gemm_shapes`

use std::time::Instant;

/// (what, m, n, k, lhs transposed, rhs transposed)
fn shapes() -> Vec<(String, usize, usize, usize, bool, bool)> {
    let mut v = Vec::new();
    for b in [32usize, 256] {
        let m = b * 676;
        v.push((format!("mnist b{b} conv fwd"), m, 12, 9, false, true));
        v.push((
            format!("mnist b{b} conv grad filter"),
            12,
            9,
            m,
            true,
            false,
        ));
        v.push((format!("mnist b{b} dense fwd"), b, 10, 2028, false, true));
        v.push((
            format!("mnist b{b} dense grad input"),
            b,
            2028,
            10,
            false,
            false,
        ));
        v.push((
            format!("mnist b{b} dense grad weight"),
            10,
            2028,
            b,
            true,
            false,
        ));
    }
    let b = 64;
    for (hw, cin, cout) in [
        (196, 16, 64),
        (196, 64, 16),
        (49, 64, 24),
        (49, 24, 96),
        (49, 96, 24),
        (49, 24, 64),
    ] {
        let m = b * hw;
        v.push((
            format!("mbv2 1x1 {cin}->{cout} fwd"),
            m,
            cout,
            cin,
            false,
            true,
        ));
        v.push((
            format!("mbv2 1x1 {cin}->{cout} grad input"),
            m,
            cin,
            cout,
            false,
            false,
        ));
        v.push((
            format!("mbv2 1x1 {cin}->{cout} grad filter"),
            cout,
            cin,
            m,
            true,
            false,
        ));
    }
    v.push(("mbv2 conv 3x3 s2 fwd".into(), b * 196, 16, 9, false, true));
    v.push((
        "mbv2 conv 3x3 s2 grad filter".into(),
        16,
        9,
        b * 196,
        true,
        false,
    ));
    v
}

fn main() {
    println!(
        "{:<36} {:>8} {:>5} {:>6} {:>10} {:>8}",
        "shape", "m", "n", "k", "us", "GFLOP/s"
    );
    for (what, m, n, k, lt, rt) in shapes() {
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut dst = vec![0.0f32; m * n];
        // row-major storage of lhs [m,k] (or [k,m] if transposed), rhs [k,n] (or [n,k])
        let (lrs, lcs) = if lt { (1, m as isize) } else { (k as isize, 1) };
        let (rrs, rcs) = if rt { (1, k as isize) } else { (n as isize, 1) };
        let run = |dst: &mut Vec<f32>| unsafe {
            qatc::jit::qatc_gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                n as isize,
                1,
                lhs.as_ptr(),
                lrs,
                lcs,
                rhs.as_ptr(),
                rrs,
                rcs,
                0,
            )
        };
        for _ in 0..3 {
            run(&mut dst);
        }
        let mut best = f64::INFINITY;
        for _ in 0..15 {
            let t = Instant::now();
            run(&mut dst);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gf = 2.0 * (m * n * k) as f64 / best / 1e9;
        println!(
            "{what:<36} {m:>8} {n:>5} {k:>6} {:>10.1} {gf:>8.1}",
            best * 1e6
        );
    }
}
