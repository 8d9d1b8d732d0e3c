//! `.qir` front-end scaling: parse, verify and print chains of 1k to 1M relu nodes, with the
//! time per node (flat when the front end is linear) and the text size; then the peak
//! memory of parsing the densest text there is, 1.5 M one-line param declarations, against
//! the text's size.
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
    // first, while the peak resident set is still the process's start-up
    params_memory(1_500_000);
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

/// The process's peak resident set so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn params_memory(n: usize) {
    let mut text = String::with_capacity(n * 32 + 100);
    let _ = writeln!(text, "model \"params\"");
    for i in 0..n {
        let _ = writeln!(text, "param @layer_{i:07}.w : f32[1]");
    }
    let _ = writeln!(text, "%0 = input \"x\" : f32[1,1]");
    let _ = writeln!(text, "%1 = add \"a\" (%0, @layer_0000000.w) : f32[1,1]");
    let _ = writeln!(text, "output \"y\" = %1");
    let before = peak_rss();
    let t = Instant::now();
    let g = qatc::ir::text::parse(&text, "params.qir").unwrap();
    let secs = t.elapsed().as_secs_f64();
    let grown = peak_rss().saturating_sub(before);
    println!(
        "{n} param lines, {:.1} MB of text: parsed in {secs:.2} s, peak RSS grew {:.0} MB \
         ({:.1}x the text, {:.0} bytes per node)\n",
        text.len() as f64 / 1e6,
        grown as f64 / 1e6,
        grown as f64 / text.len() as f64,
        grown as f64 / g.node_count() as f64
    );
}
