//! A full disk or a file-size limit mid-run: the command fails with an error naming the
//! path and the OS error, leaves no temporary file, and never a `.qir` without its weights.
//! Two ways to run out: `ulimit -f` (any user) and a small tmpfs (when this user may mount).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qatc-full-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `qatc ARGS` under `ulimit -f BLOCKS` (512-byte blocks in POSIX sh).
fn qatc_limited(blocks: u32, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f {blocks} && exec \"$@\""))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_qatc"))
        .args(args)
        .output()
        .unwrap()
}

fn quick_job(out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--model",
        "mnist_cnn",
        "--epochs",
        "1",
        "--qat-epochs",
        "1",
        "--train-samples",
        "192",
        "--test-samples",
        "64",
        "--batch",
        "32",
        "--quiet",
        "--out",
    ]
    .map(String::from)
    .to_vec();
    a.push(out.display().to_string());
    a
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                all.extend(files(&p));
            } else {
                all.push(p);
            }
        }
    }
    all
}

/// The command failed cleanly: status 1 (not a signal), the OS error and a path under
/// `dir` in the message, no temporary files, every model `.qir` with its `.safetensors`.
fn assert_failed_cleanly(run: &Output, dir: &Path, os_error: &str) {
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains(os_error), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for f in files(dir) {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(!name.contains(".tmp"), "{} left behind", f.display());
        // (the IR dumps under `ir/` are graphs without weights by design)
        if name.ends_with(".qir") && !f.parent().unwrap().ends_with("ir") {
            assert!(
                f.with_extension("safetensors").exists(),
                "{} without its weights",
                f.display()
            );
        }
    }
}

#[test]
fn a_file_size_limit_fails_the_job_cleanly() {
    let out = scratch("ulimit-train");
    let args = quick_job(&out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // 64 KiB: the job's first checkpoint (about 240 KiB) does not fit
    let run = qatc_limited(128, &args);
    assert_failed_cleanly(&run, &out, "File too large");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_file_size_limit_fails_an_export_cleanly() {
    use qatc::pass::{run_pipeline, PipelineOptions};
    let dir = scratch("ulimit-export");
    std::fs::create_dir_all(&dir).unwrap();
    let mut model = qatc::models::mnist_cnn(1).unwrap();
    let qat = run_pipeline(
        model.graph,
        &mut model.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let qir = dir.join("qat.qir");
    qatc::ir::text::save_model(&qat, &model.params, &qir).unwrap();
    let tflite = dir.join("m.tflite");
    // 8 KiB: the qir reads fine, the 23 KiB .tflite does not fit
    let run = qatc_limited(
        16,
        &[
            "export",
            qir.to_str().unwrap(),
            "-o",
            tflite.to_str().unwrap(),
        ],
    );
    assert_failed_cleanly(&run, &dir, "File too large");
    assert!(!tflite.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A 512 KiB tmpfs fills up during the job. Needs permission to mount (root, as on the
/// CI machines); says so and passes without it.
#[test]
fn a_full_disk_fails_the_job_cleanly() {
    let mnt = scratch("tmpfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: this user cannot mount a tmpfs (the ulimit tests still run)");
        let _ = std::fs::remove_dir(&mnt);
        return;
    }
    let out = mnt.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args(quick_job(&out))
        .output()
        .unwrap();
    let checked = std::panic::catch_unwind(|| {
        assert_failed_cleanly(&run, &out, "No space left on device");
    });
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = std::fs::remove_dir(&mnt);
    if let Err(e) = checked {
        std::panic::resume_unwind(e);
    }
}
