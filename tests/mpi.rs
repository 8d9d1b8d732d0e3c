//! Data-parallel training across MPI processes: `mpirun -np N qatc train …` (built with the
//! `mpi` feature; `scripts/test.sh` installs Open MPI). Runs on this machine's cores with one
//! JIT thread per rank, oversubscribed for three ranks.
#![cfg(feature = "mpi")]

mod data_parallel_common;

use data_parallel_common::{conv_bn_model, rel_l2};

use qatc::ir::ParamStore;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One MPI job at a time: they share two cores, and the rank-0-only check looks for every
/// rank's scratch directory.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qatc-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `qatc SUBCOMMAND ARGS…` on `ranks` MPI ranks (1: a plain process on one JIT thread),
/// with `env` set for every rank.
fn qatc_env(ranks: usize, args: &[&str], env: &[(&str, &str)]) -> Command {
    let exe = env!("CARGO_BIN_EXE_qatc");
    let mut c = if ranks == 1 {
        let mut c = Command::new(exe);
        c.args(&args[..1]).args(["--threads", "1"]).args(&args[1..]);
        c
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", &ranks.to_string()]);
        for (k, v) in env {
            c.args(["-x", k]).env(k, v);
        }
        c.arg(exe).args(args);
        c
    };
    // Open MPI refuses root unless told; containers often run tests as root
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn qatc(ranks: usize, args: &[&str]) -> Command {
    qatc_env(ranks, args, &[])
}

fn run_ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `qatc train --model MODEL FLAGS… --quiet --out OUT` as arguments.
fn train(model: &str, flags: &str, out: &Path) -> Vec<String> {
    ["train", "--model", model]
        .into_iter()
        .chain(flags.split_whitespace())
        .chain(["--quiet", "--out"])
        .map(str::to_string)
        .chain([out.display().to_string()])
        .collect()
}

/// A short job: mbv2_tiny (BatchNorm, observers) for one float and one QAT epoch.
fn job(out: &Path) -> Vec<String> {
    let flags = "--epochs 1 --qat-epochs 1 --train-samples 1536 --test-samples 300 \
                 --ptq-samples 96 --batch 48 --seed 3";
    train("mbv2_tiny", flags, out)
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn tflite(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("mbv2_tiny_int8.tflite")).unwrap()
}

#[test]
fn two_ranks_write_the_same_bytes_on_every_run() {
    let _serial = serial();
    let (a, b) = (scratch("repeat-a"), scratch("repeat-b"));
    let before = rank_scratch();
    run_ok(qatc(2, &args(&job(&a))));
    run_ok(qatc(2, &args(&job(&b))));
    assert_eq!(
        tflite(&a),
        tflite(&b),
        "two 2-rank runs wrote different models"
    );
    // only rank 0 wrote: no other rank's scratch directory is left
    let left: Vec<_> = rank_scratch().difference(&before).cloned().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// The scratch directories of ranks other than 0 in the temporary directory.
fn rank_scratch() -> std::collections::BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("qatc-rank"))
        .collect()
}

fn accuracy(out: &Path, key: &str) -> f64 {
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[key]["test_accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("report has no {key}.test_accuracy: {v}"))
}

/// 20 float steps (960 samples in batches of 48) on 1, 2 and 3 ranks: the same weights to
/// float rounding; then QAT: the same int8 accuracy within 0.1 points.
#[test]
fn one_two_and_three_ranks_agree() {
    let _serial = serial();
    let job = |out: &Path, qat: &str| {
        let flags = format!(
            "--epochs 1 --qat-epochs {qat} --train-samples 960 --test-samples 2000 \
             --ptq-samples 0 --batch 48"
        );
        train("mnist_cnn", &flags, out)
    };
    let mut outs = Vec::new();
    for n in [1, 2, 3] {
        let out = scratch(&format!("agree-{n}"));
        run_ok(qatc(n, &args(&job(&out, "1"))));
        outs.push(out);
    }
    let float = |out: &Path| ParamStore::load(out.join("mnist_cnn_float.safetensors")).unwrap();
    let one = float(&outs[0]);
    for out in &outs[1..] {
        let other = float(out);
        for (name, t) in one.iter() {
            let e = rel_l2(&t.data, &other.get(name).unwrap().data);
            assert!(e <= 1e-5, "{}: `{name}` differs by {e:e}", out.display());
        }
    }
    for (n, out) in [1, 2, 3].iter().zip(&outs) {
        let text = std::fs::read_to_string(out.join("report.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ranks"], *n, "the report names the ranks");
    }
    let int8 = accuracy(&outs[0], "int8");
    for out in &outs[1..] {
        let a = accuracy(out, "int8");
        assert!(
            (a - int8).abs() <= 0.001 + 1e-9,
            "{}: int8 accuracy {a} vs {int8} in one process",
            out.display()
        );
    }
    for out in outs {
        let _ = std::fs::remove_dir_all(out);
    }
}

/// A rank that stops answering (the testing hook `QATC_MPI_FAULT=stall@1`) makes the job end
/// with an error naming it once `--mpi-timeout` has passed, instead of hanging; a rank that
/// dies (`die@1`) ends the job too, and the launcher names it.
#[test]
fn a_silent_or_dead_rank_stops_the_job_with_its_name() {
    let _serial = serial();
    for (fault, says) in [
        ("stall@1", "no answer from rank 1"),
        ("die@1", "process rank 1"),
    ] {
        faulty_rank_stops_the_job(fault, says);
    }
}

fn faulty_rank_stops_the_job(fault: &str, says: &str) {
    let out = scratch(&fault.replace('@', "-"));
    let before = rank_scratch();
    let mut a = job(&out);
    a.extend(["--mpi-timeout".into(), "2".into()]);
    let mut c = qatc_env(2, &args(&a), &[("QATC_MPI_FAULT", fault)]);
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{fault}: the job hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains(says),
        "{fault}: the error should say `{says}`: {err}"
    );
    assert!(!out.join("report.json").exists());
    let _ = std::fs::remove_dir_all(&out);
    // the faulty rank was ended before it could remove its scratch directory
    for dir in rank_scratch().difference(&before) {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(dir));
    }
}

/// A 2-rank run stopped after its first checkpoint resumes on 2 ranks (every rank reading
/// rank 0's checkpoint) to the same bytes as a run never interrupted.
#[test]
fn two_ranks_resume_from_a_checkpoint() {
    let _serial = serial();
    let (whole, cut) = (scratch("whole"), scratch("cut"));
    let mut a = job(&whole);
    a.extend(["--checkpoint-every".into(), "4".into()]);
    run_ok(qatc(2, &args(&a)));
    let mut b = job(&cut);
    b.extend(["--checkpoint-every".into(), "4".into()]);
    let mut child = qatc(2, &args(&b)).spawn().unwrap();
    let ckpt = cut.join(".run/checkpoints/float.safetensors");
    let t = Instant::now();
    while !ckpt.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // mpirun forwards SIGTERM to the ranks and ends
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    // the ranks end after mpirun: wait until rank 0 has let go of the output directory
    let lock = cut.join(".qatc.lock");
    let t = Instant::now();
    while lock.exists() && t.elapsed() < Duration::from_secs(30) {
        let pid = std::fs::read_to_string(&lock).unwrap_or_default();
        if !Path::new(&format!("/proc/{}", pid.trim())).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if cut.join("report.json").exists() {
        // the run finished before the signal: nothing to resume (a fast machine)
        assert_eq!(tflite(&cut), tflite(&whole));
        return;
    }
    run_ok(qatc(
        2,
        &["train", "--quiet", "--resume", &cut.display().to_string()],
    ));
    assert_eq!(tflite(&cut), tflite(&whole), "the resumed run differs");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&cut);
}

/// The all-reduce itself on 2 and 3 ranks (recursive doubling for small messages, the ring
/// for large ones, the non-power-of-two path): every rank checks it holds the exact mean.
#[test]
fn all_reduce_is_exact_on_every_rank() {
    let _serial = serial();
    for n in [2, 3] {
        run_ok(qatc(n, &["bench", "--allreduce"]));
    }
}

/// BatchNorm's statistics across processes: 20 float steps of a conv + BatchNorm + ReLU model
/// (its BatchNorm synchronized over the ranks) on 1, 2 and 3 ranks end with the same weights
/// and moving statistics to float rounding. (`tests/data_parallel.rs` checks mbv2_tiny's 17
/// BatchNorm layers in one process.)
#[test]
fn batch_norm_statistics_agree_across_ranks() {
    let _serial = serial();
    let dir = scratch("bn-model");
    std::fs::create_dir_all(&dir).unwrap();
    let m = conv_bn_model("dp_bn", 1, 28, 10, false);
    let model = dir.join("dp_bn.qir");
    qatc::ir::text::save_model(&m.graph, &m.params, &model).unwrap();
    let model = model.display().to_string();
    let job = |out: &Path| {
        let flags = "--epochs 1 --qat-epochs 0 --train-samples 960 --test-samples 100 \
                     --ptq-samples 48 --batch 48";
        train(&model, flags, out)
    };
    let mut outs = Vec::new();
    for n in [1, 2, 3] {
        let out = scratch(&format!("bn-{n}"));
        run_ok(qatc(n, &args(&job(&out))));
        outs.push(out);
    }
    let float = |out: &Path| ParamStore::load(out.join("dp_bn_float.safetensors")).unwrap();
    let one = float(&outs[0]);
    assert!(one.iter().any(|(name, _)| name.contains("moving_mean")));
    for out in &outs[1..] {
        let other = float(out);
        for (name, t) in one.iter() {
            let e = rel_l2(&t.data, &other.get(name).unwrap().data);
            assert!(e <= 1e-5, "{}: `{name}` differs by {e:e}", out.display());
        }
    }
    for out in outs.into_iter().chain([dir]) {
        let _ = std::fs::remove_dir_all(out);
    }
}

/// The commands that run in one process refuse to be started several times by mpirun (each
/// copy would write the same outputs).
#[test]
fn one_process_commands_refuse_several_ranks() {
    let _serial = serial();
    let out = qatc(2, &["dump", "mnist_cnn"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("qatc dump runs in one process, but mpirun started 2"),
        "{err}"
    );
}
