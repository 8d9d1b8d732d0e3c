//! The output directory of a job, and how a run writes into it so that what `--out` holds
//! is always one complete run.
//!
//! - `<out>/.qatc.lock` — one run at a time: a second job on the same directory is refused
//!   while the first runs; a lock whose process is gone (a killed run) is taken over.
//! - `<out>/.run/` — a run in progress. Every output is written here first under its final
//!   name, beside `job.toml` (the job, so `qatc train --resume` can continue it) and
//!   `checkpoints/` (the training state of each phase). A run killed at any moment leaves
//!   the previous run's files in `<out>` as they were.
//! - The commit — the finished run writes its `report.json` into `.run/` (the commit
//!   record), then moves the previous `report.json` out of the way (into `.run/`), removes
//!   the files it lists that the new run does not replace, renames the new files into
//!   place, renames `report.json` last, and removes `.run/`.
//!   A run killed inside the commit (a few renames) leaves `.run/report.json`: the next
//!   run in `<out>`, or `--resume`, finishes the commit first (roll forward).
//!
//! So `report.json` is present only beside the complete set of files it lists.

use crate::error::{write_atomic, Error, Result};
use std::path::{Path, PathBuf};

/// The staging directory of a run in progress, inside `--out`.
pub const STAGE: &str = ".run";
/// The job of the run in progress, inside [`STAGE`].
const JOB: &str = "job.toml";
/// The checkpoints of the run in progress, inside [`STAGE`].
const CHECKPOINTS: &str = "checkpoints";

/// The checkpoint of training phase `phase` of the run in progress in `out`.
pub fn checkpoint_in(out: &Path, phase: &str) -> PathBuf {
    out.join(STAGE)
        .join(CHECKPOINTS)
        .join(format!("{phase}.safetensors"))
}
/// The report, in `--out` and (as the commit record) in [`STAGE`].
const REPORT: &str = "report.json";
/// The earlier run's report while a commit replaces its files, inside [`STAGE`].
const REPLACED: &str = "replaced.json";

/// An output directory a run holds (locked) and stages its files in.
pub struct RunDir {
    out: PathBuf,
    stage: PathBuf,
    _lock: OutLock,
}

impl RunDir {
    /// Takes `out` for a run of the job `job_toml`: creates it, takes the lock, finishes a
    /// commit a killed run left half done, and starts the staging directory. With `resume`,
    /// the staging directory of the killed run is kept (its checkpoints are where training
    /// continues); otherwise what a killed run left there is discarded (with a note on
    /// stderr when `progress`).
    pub fn open(out: &Path, job_toml: &str, resume: bool, progress: bool) -> Result<RunDir> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let lock = OutLock::take(out)?;
        let dir = RunDir {
            out: out.to_path_buf(),
            stage: out.join(STAGE),
            _lock: lock,
        };
        dir.roll_forward()?;
        if dir.stage.exists() && !resume {
            if progress {
                eprintln!(
                    "note: {} holds what a killed run left; it is discarded \
                     (`qatc train --resume {}` would have continued that run)",
                    dir.stage.display(),
                    out.display()
                );
            }
            remove_any(&dir.stage)?;
        }
        std::fs::create_dir_all(dir.stage.join(CHECKPOINTS))
            .map_err(|e| Error::io(&dir.stage, e))?;
        write_atomic(dir.stage.join(JOB), job_toml.as_bytes())?;
        Ok(dir)
    }

    /// Where the run writes output `name` until the commit.
    pub fn path(&self, name: &str) -> PathBuf {
        self.stage.join(name)
    }

    /// Where output `name` lives after the commit, as the report lists it.
    pub fn listed(&self, name: &str) -> String {
        self.out.join(name).display().to_string()
    }

    /// The checkpoint file of training phase `phase` (`float`, `qat`).
    pub fn checkpoint(&self, phase: &str) -> PathBuf {
        checkpoint_in(&self.out, phase)
    }

    /// Ends the run: writes `report_json` (the report, listing the run's files under
    /// `files`) as the commit record, then moves the staged files into `out` in place of
    /// the previous run's (see the module docs).
    pub fn commit(self, report_json: &[u8]) -> Result<()> {
        write_atomic(self.stage.join(REPORT), report_json)?;
        self.roll_forward()
    }

    /// Finishes a commit whose record is staged; does nothing when there is none. Every
    /// step can be repeated, so a commit cut short at any point is finished by running
    /// this again.
    fn roll_forward(&self) -> Result<()> {
        let record = self.stage.join(REPORT);
        if !record.exists() {
            return Ok(());
        }
        // 1. the earlier report leaves `out` first (kept in the stage for its file list)
        let report = self.out.join(REPORT);
        let replaced = self.stage.join(REPLACED);
        match std::fs::rename(&report, &replaced) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&report, e)),
        }
        // 2. the earlier run's files that the new run does not replace go
        let new_files = listed_names(&record);
        for name in listed_names(&replaced) {
            if !new_files.contains(&name) {
                remove_any(&self.out.join(name))?;
            }
        }
        // 3. the staged files take their places, the report last
        for entry in std::fs::read_dir(&self.stage).map_err(|e| Error::io(&self.stage, e))? {
            let entry = entry.map_err(|e| Error::io(&self.stage, e))?;
            let name = entry.file_name();
            if [JOB, CHECKPOINTS, REPORT, REPLACED]
                .iter()
                .any(|n| name == *n)
            {
                continue;
            }
            let to = self.out.join(&name);
            if to.is_dir() && !to.is_symlink() {
                // a directory of outputs (`ir/`) is replaced as a whole
                remove_any(&to)?;
            }
            std::fs::rename(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
        }
        std::fs::rename(&record, &report).map_err(|e| Error::io(&report, e))?;
        remove_any(&self.stage)
    }

    /// Cleans up after a run that failed with an error: the staging directory goes, unless
    /// it holds a checkpoint `--resume` can continue from (then `true`).
    pub fn abandon(self) -> bool {
        let resumable = resumable(&self.out);
        if !resumable {
            let _ = remove_any(&self.stage);
        }
        resumable
    }
}

/// Whether `out` holds a run that `--resume` can continue (a job and a checkpoint).
pub fn resumable(out: &Path) -> bool {
    let stage = out.join(STAGE);
    stage.join(JOB).exists()
        && std::fs::read_dir(stage.join(CHECKPOINTS)).is_ok_and(|mut d| d.next().is_some())
}

/// The `job.toml` of the run that was killed in `out`, for `--resume`.
pub fn pending_job(out: &Path) -> Result<PathBuf> {
    let path = out.join(STAGE).join(JOB);
    if !path.exists() {
        let why = if out.join(REPORT).exists() {
            "the last run there finished (report.json)"
        } else if out.exists() {
            "no run was started there"
        } else {
            "the directory does not exist"
        };
        return Err(Error::Usage(format!(
            "{}: nothing to resume: {why}",
            out.display()
        )));
    }
    Ok(path)
}

/// The names (in `out`) of the files a report lists; none when it is missing or unreadable.
fn listed_names(report: &Path) -> Vec<std::ffi::OsString> {
    let Ok(text) = std::fs::read_to_string(report) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let Some(files) = value.get("files").and_then(|f| f.as_array()) else {
        return Vec::new();
    };
    files
        .iter()
        .filter_map(|f| f.as_str())
        // the last component only: a report (a file anyone can edit) never names a path
        // outside `out`
        .filter_map(|f| Path::new(f).file_name().map(|n| n.to_os_string()))
        .filter(|n| n != STAGE && n != ".qatc.lock")
        .collect()
}

/// Removes a file, a symlink (not what it points to) or a directory tree; a missing path
/// is fine.
fn remove_any(path: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    r.map_err(|e| Error::io(path, e))
}

/// `<out>/.qatc.lock`, held while a job writes into `out`: a second job on the same
/// directory is refused while the first runs; a lock left by a killed run (its process is
/// gone) is taken over.
pub struct OutLock(PathBuf);

impl OutLock {
    /// Takes the lock of `out` (which must exist).
    pub fn take(out: &Path) -> Result<OutLock> {
        let path = out.join(".qatc.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(OutLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid = pid.trim();
                    let alive = !pid.is_empty()
                        && pid.chars().all(|c| c.is_ascii_digit())
                        && Path::new("/proc").join(pid).exists();
                    if alive {
                        return Err(Error::Usage(format!(
                            "{}: another qatc run (process {pid}) is writing there; wait for it \
                             or choose another --out",
                            out.display()
                        )));
                    }
                    // left by a run that was killed: take it over
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Usage(format!(
            "{}: cannot take the lock {}",
            out.display(),
            path.display()
        )))
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qatc-rundir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A run killed inside its commit (some files renamed, the report not yet): the next run
    /// in the directory finishes that commit before it starts, so the directory holds the
    /// killed run's complete set (the earlier run's own files gone, the user's kept).
    #[test]
    fn a_commit_cut_short_is_finished_by_the_next_run() {
        // cut short before and after the earlier report was moved into the stage
        for moved in [false, true] {
            commit_cut_short(moved);
        }
    }

    fn commit_cut_short(report_moved: bool) {
        let out = scratch(&format!("roll-forward-{report_moved}"));
        let stage = out.join(STAGE);
        std::fs::create_dir_all(stage.join("ir")).unwrap();
        // the earlier run's set, half replaced: its report is gone, a.tflite already renamed
        std::fs::write(out.join("a.tflite"), "new a").unwrap();
        std::fs::write(out.join("old_only.csv"), "old").unwrap();
        std::fs::write(out.join("notes.txt"), "the user's").unwrap();
        std::fs::create_dir_all(out.join("ir")).unwrap();
        std::fs::write(out.join("ir/00_old.qir"), "old").unwrap();
        // what is still staged, and the commit record listing the new set
        std::fs::write(stage.join("b.qir"), "new b").unwrap();
        std::fs::write(stage.join("ir/00_new.qir"), "new").unwrap();
        std::fs::write(stage.join(JOB), "").unwrap();
        let record = format!(
            "{{\"seed\": 9, \"files\": [\"{0}/a.tflite\", \"{0}/b.qir\", \"{0}/ir/\"]}}",
            out.display()
        );
        std::fs::write(stage.join(REPORT), &record).unwrap();
        // the earlier report, which lists `old_only.csv`
        let old = format!(
            "{{\"files\": [\"{0}/a.tflite\", \"{0}/old_only.csv\"]}}",
            out.display()
        );
        let at = if report_moved {
            stage.join(REPLACED)
        } else {
            out.join(REPORT)
        };
        std::fs::write(at, old).unwrap();

        let dir = RunDir::open(&out, "", false, false).unwrap();
        assert_eq!(std::fs::read_to_string(out.join(REPORT)).unwrap(), record);
        assert_eq!(std::fs::read_to_string(out.join("b.qir")).unwrap(), "new b");
        assert_eq!(
            std::fs::read_to_string(out.join("a.tflite")).unwrap(),
            "new a"
        );
        assert!(out.join("ir/00_new.qir").exists() && !out.join("ir/00_old.qir").exists());
        assert!(
            !out.join("old_only.csv").exists(),
            "the earlier run's own file"
        );
        assert!(
            out.join("notes.txt").exists(),
            "not listed by any report: not ours"
        );
        drop(dir);
        std::fs::remove_dir_all(&out).unwrap();
    }

    /// A report (a file anyone can edit) that names paths outside `out` removes nothing
    /// there: only the last component of a listed path is taken, inside `out`.
    #[test]
    fn a_report_cannot_make_the_commit_remove_files_outside_out() {
        let root = scratch("escape");
        let out = root.join("out");
        std::fs::create_dir_all(out.join(STAGE)).unwrap();
        std::fs::write(root.join("precious"), "keep").unwrap();
        let evil = format!(
            "{{\"files\": [\"{}\", \"../precious\", \"..\"]}}",
            root.join("precious").display()
        );
        std::fs::write(out.join(REPORT), evil).unwrap();
        std::fs::write(out.join(STAGE).join(REPORT), "{\"files\": []}").unwrap();
        drop(RunDir::open(&out, "", false, false).unwrap());
        assert_eq!(
            std::fs::read_to_string(root.join("precious")).unwrap(),
            "keep"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
