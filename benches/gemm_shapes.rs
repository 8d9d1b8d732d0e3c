//! The GEMM shapes of the benchmark train steps (mnist_cnn at batch 32/256, mbv2_tiny and
//! resnet8 at batch 64), timed on the host GEMM the JIT calls (`qatc_gemm`, the `gemm` crate,
//! one thread): the measurements behind the JIT's choice of GEMM per shape. First the
//! machine's SGEMM peak: a square 1024 product on one thread, and on every core at once (one
//! product per core, as the JIT's threads run their shares).
//!
//! `cargo bench --bench gemm_shapes`

use std::time::Instant;

/// (what, m, n, k, lhs transposed, rhs transposed)
fn shapes() -> Vec<(String, usize, usize, usize, bool, bool)> {
    let mut v = vec![("square 1024".to_string(), 1024, 1024, 1024, false, false)];
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
    // resnet8's first stage: 3x3 convolutions 16 -> 16 channels on 32x32 maps (im2col)
    let m = b * 1024;
    v.push(("resnet8 3x3 16->16 fwd".into(), m, 16, 144, false, true));
    v.push((
        "resnet8 3x3 16->16 fwd, out^T".into(),
        16,
        m,
        144,
        false,
        true,
    ));
    v.push((
        "resnet8 3x3 16->16 grad cols".into(),
        m,
        144,
        16,
        false,
        false,
    ));
    v.push((
        "resnet8 3x3 16->16 grad filter".into(),
        16,
        144,
        m,
        true,
        false,
    ));
    // its last stage: 64 -> 64 on 8x8
    let m = b * 64;
    v.push(("resnet8 3x3 64->64 fwd".into(), m, 64, 576, false, true));
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

/// One square 1024 SGEMM per core, all at once: the machine's multi-thread peak.
fn all_cores_peak() -> (usize, f64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = 1024;
    let best = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let a = vec![0.5f32; n * n];
                    let b = vec![0.25f32; n * n];
                    let mut c = vec![0.0f32; n * n];
                    let mut best = f64::INFINITY;
                    for _ in 0..8 {
                        let t = Instant::now();
                        // SAFETY: three n x n row-major buffers.
                        unsafe {
                            qatc::jit::qatc_gemm(
                                n,
                                n,
                                n,
                                c.as_mut_ptr(),
                                n as isize,
                                1,
                                a.as_ptr(),
                                n as isize,
                                1,
                                b.as_ptr(),
                                n as isize,
                                1,
                                0,
                            )
                        };
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    best
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold(0.0f64, f64::max)
    });
    (
        threads,
        threads as f64 * 2.0 * (n * n * n) as f64 / best / 1e9,
    )
}

fn main() {
    let (threads, peak) = all_cores_peak();
    println!("square 1024 SGEMM on {threads} threads at once: {peak:.1} GFLOP/s");
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
