//! Outputs that are never wrong on disk, and `qatc train --resume`: a run in a `--out` that
//! holds an earlier run's complete files is killed (`kill -9`) at moments spread over its
//! whole length; after each kill the directory holds either the earlier run's complete set
//! or the new run's complete set (`report.json` and every file it lists, with the bytes of
//! that run), and `--resume` then ends with the same bytes as a run never interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn qatc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qatc"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qatc-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A short job with a checkpoint every 4 steps (two float epochs, one QAT epoch).
fn job(out: &Path, seed: u64) -> Command {
    let mut c = qatc();
    c.args([
        "train",
        "--model",
        "mnist_cnn",
        "--epochs",
        "2",
        "--qat-epochs",
        "1",
    ])
    .args(["--train-samples", "2048", "--test-samples", "200"])
    .args(["--ptq-samples", "128", "--checkpoint-every", "4", "--quiet"])
    .args(["--seed", &seed.to_string(), "--out"])
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn run_ok(mut c: Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The model files of a directory (`.qir`, `.safetensors`, `.tflite`) and their bytes.
fn model_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if [".qir", ".safetensors", ".tflite"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            files.insert(name, std::fs::read(&path).unwrap());
        }
    }
    files
}

/// The report of `dir`, if there is one.
fn report(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("report.json")).ok()?;
    Some(serde_json::from_str(&text).expect("a report is complete JSON"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The directory holds one run's complete set: its report, every file the report lists,
/// and exactly that run's model files.
fn assert_complete_set(out: &Path, sets: &[(u64, &BTreeMap<String, Vec<u8>>)], when: &str) {
    let r = report(out).unwrap();
    let seed = r["seed"].as_u64().unwrap();
    let (_, want) = sets
        .iter()
        .find(|(s, _)| *s == seed)
        .unwrap_or_else(|| panic!("{when}: a report of seed {seed}"));
    for f in r["files"].as_array().unwrap() {
        let name = Path::new(f.as_str().unwrap()).file_name().unwrap();
        assert!(
            out.join(name).exists(),
            "{when}: {name:?} is listed but missing"
        );
    }
    let got = model_files(out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{when}"
    );
    for (name, bytes) in *want {
        assert!(got[name] == *bytes, "{when}: {name} is not seed {seed}'s");
    }
}

/// The moments a run is killed at, told by what it has written (so the harness does not
/// depend on how fast this machine is or what else runs beside the test).
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// Right after the start, before anything may be written.
    AtStart,
    /// As soon as the run has staged its job.
    JobStaged,
    /// As soon as the first float checkpoint is written.
    FirstCheckpoint,
    /// After the float checkpoint has been rewritten (mid float training).
    FloatTraining,
    /// As soon as the QAT phase checkpoints.
    QatTraining,
    /// When the first output file is staged (export).
    Exporting,
    /// When the commit record is written (inside the renames).
    Committing,
    /// After the run finished.
    Finished,
}

impl Moment {
    const ALL: [Moment; 8] = [
        Moment::AtStart,
        Moment::JobStaged,
        Moment::FirstCheckpoint,
        Moment::FloatTraining,
        Moment::QatTraining,
        Moment::Exporting,
        Moment::Committing,
        Moment::Finished,
    ];

    /// Whether a kill at this moment must leave a run for `--resume`.
    fn must_resume(self) -> bool {
        match self {
            Moment::JobStaged
            | Moment::FirstCheckpoint
            | Moment::FloatTraining
            | Moment::QatTraining => true,
            // the run may be past the moment before the kill lands, or not started
            Moment::AtStart | Moment::Exporting | Moment::Committing | Moment::Finished => false,
        }
    }
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Waits (polling) until the run in `out` reaches `moment`, or the child exits.
fn wait_for(child: &mut std::process::Child, out: &Path, moment: Moment) {
    let stage = out.join(".run");
    let float = stage.join("checkpoints/float.safetensors");
    let staged_output = |ext: &str| {
        std::fs::read_dir(&stage).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(ext))
        })
    };
    let mut first_float = None;
    let t = Instant::now();
    loop {
        let reached = match moment {
            Moment::AtStart => true,
            Moment::JobStaged => stage.join("job.toml").exists(),
            Moment::FirstCheckpoint => float.exists(),
            Moment::FloatTraining => {
                let now = mtime(&float);
                if first_float.is_none() {
                    first_float = now;
                }
                first_float.is_some() && now != first_float
            }
            Moment::QatTraining => stage.join("checkpoints/qat.safetensors").exists(),
            Moment::Exporting => staged_output(".tflite"),
            Moment::Committing => stage.join("report.json").exists(),
            Moment::Finished => false,
        };
        if reached || child.try_wait().unwrap().is_some() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{moment:?} never came"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn a_killed_run_leaves_a_complete_set_and_resumes_to_the_same_bytes() {
    let root = scratch("harness");
    const OLD: u64 = 1;
    const NEW: u64 = 2;
    // the earlier run's complete set, and the new run uninterrupted
    run_ok(job(&root.join("old"), OLD));
    run_ok(job(&root.join("new"), NEW));
    let old = model_files(&root.join("old"));
    let new = model_files(&root.join("new"));
    assert_ne!(old, new);
    let sets = [(OLD, &old), (NEW, &new)];

    let out = root.join("out");
    for moment in Moment::ALL {
        let _ = std::fs::remove_dir_all(&out);
        copy_dir(&root.join("old"), &out);
        let mut child = job(&out, NEW).spawn().unwrap();
        wait_for(&mut child, &out, moment);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let when = format!("killed at {moment:?}");
        if report(&out).is_some() {
            assert_complete_set(&out, &sets, &when);
        } else {
            // only inside the commit's renames, whose record the next run completes
            assert!(
                out.join(".run/report.json").exists(),
                "{when}: no report and no commit record"
            );
        }
        let pending = out.join(".run/job.toml").exists();
        assert!(
            pending || !moment.must_resume(),
            "{when}: nothing to resume"
        );
        if pending {
            let mut c = qatc();
            c.args(["train", "--resume"]).arg(&out).arg("--quiet");
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            run_ok(c);
            assert_complete_set(&out, &[(NEW, &new)], &format!("{when}, resumed"));
            assert!(!out.join(".run").exists() && !out.join(".qatc.lock").exists());
        } else if matches!(moment, Moment::Finished) {
            assert_complete_set(&out, &[(NEW, &new)], &when);
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// A new run (without `--resume`) in a directory a killed run left discards what that run
/// staged, and ends with its own complete set.
#[test]
fn a_new_run_discards_what_a_killed_run_staged() {
    let out = scratch("discard");
    let mut child = job(&out, 3).spawn().unwrap();
    let t = Instant::now();
    while !out.join(".run/checkpoints/float.safetensors").exists() {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let run = job(&out, 4).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert_eq!(report(&out).unwrap()["seed"], 4);
    assert!(!out.join(".run").exists());
    std::fs::remove_dir_all(&out).unwrap();
}

/// `--resume` takes the run's own settings: other flags are refused, and a directory
/// without a killed run says why there is nothing to resume.
#[test]
fn resume_refuses_other_flags_and_finished_runs() {
    let out = scratch("refuse");
    let refused = |extra: &[&str], why: &str| {
        let run = qatc()
            .args(["train", "--resume"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(why), "{err}");
    };
    refused(&["--epochs", "3"], "no other flag");
    refused(&[], "does not exist");
    run_ok(job(&out, 5));
    refused(&[], "the last run there finished");
    std::fs::remove_dir_all(&out).unwrap();
}
