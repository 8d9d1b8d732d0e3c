//! `.qir` front-end scaling: parse, verify and print chains of 1k to 1M relu nodes, with the
//! time per node (flat when the front end is linear) and the text size.
//!
//! `cargo bench --bench qir_scaling`

use std::fmt::Write;
use std::time::Instant;

fn chain(n: usize) -> String {
    let mut s = String::with_capacity(n * 40);
    let _ = writeln!(s, "model \"chain\"\n%0 = input \"x\" : f32[1,4]");
    for i in 1..=n {
        let _ = writeln!(s, "%{i} = relu \"r{i}\" (%{}) : f32[1,4]", i - 1);
    }
    let _ = writeln!(s, "output \"y\" = %{n}");
    s
}

fn main() {
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "nodes", "MB", "parse s", "verify s", "print s", "ns/node"
    );
    for n in [1_000, 10_000, 100_000, 1_000_000] {
        let text = chain(n);
        let t0 = Instant::now();
        let g = qatc::ir::text::parse(&text, "chain.qir").unwrap();
        let t1 = Instant::now();
        qatc::ir::verify::verify(&g).unwrap();
        let t2 = Instant::now();
        let out = qatc::ir::text::print(&g);
        let t3 = Instant::now();
        assert_eq!(out.len(), text.len());
        let total = (t3 - t0).as_secs_f64();
        println!(
            "{n:>9} {:>10.1} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
            text.len() as f64 / 1e6,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            total * 1e9 / n as f64
        );
    }
}
