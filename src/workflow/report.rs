//! The main job's report: `report.json`, the console summary and the training-curve SVG.

use crate::train::metrics::History;
use serde::Serialize;
use std::fmt::Write as _;

/// One stage of the job and how long it took.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// The stage's name as the console shows it (`float training`, `int8 export`, …).
    pub name: String,
    /// Wall time of the stage, in seconds.
    pub seconds: f64,
}

/// Accuracy and size figures of one model form (float, QAT, int8).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModelFigures {
    /// Top-1 accuracy on the test set, as a fraction in `[0, 1]`.
    pub test_accuracy: f64,
    /// Bytes of the file qatc wrote (weights for float/QAT, the `.tflite` for int8).
    pub bytes: u64,
}

/// Everything the job measured, written as `report.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The model's graph name (`mnist_cnn`, or a file's stem).
    pub model: String,
    /// The dataset's name: the last component of the job's `data` path (`mnist`).
    pub data: String,
    /// The training backend as the job named it (`jit`, `interpreter`).
    pub backend: String,
    /// The job's seed.
    pub seed: u64,
    /// The training and evaluation batch size (the global batch of a data-parallel run).
    pub batch: usize,
    /// The ranks that trained together (1: one process; [`crate::dist`]).
    pub ranks: usize,
    /// Float training epochs run (0: the given weights were used as is).
    pub float_epochs: usize,
    /// QAT fine-tuning epochs run.
    pub qat_epochs: usize,
    /// The float model after float training.
    pub float: ModelFigures,
    /// The fake-quantized model after QAT fine-tuning (`None` in a post-training-quantization
    /// job).
    pub qat: Option<ModelFigures>,
    /// The exported QAT int8 `.tflite`, run in qatc's int8 interpreter (`None` in a
    /// post-training-quantization job).
    pub int8: Option<ModelFigures>,
    /// The post-training-quantization baseline: the float model calibrated on
    /// `ptq_samples` training samples, exported and run in the int8 interpreter (`None`
    /// when the job skipped it).
    pub ptq: Option<ModelFigures>,
    /// Training samples that calibrated the PTQ baseline.
    pub ptq_samples: usize,
    /// How the PTQ ranges were chosen (`minmax`, `percentile:99.99`, `mse`).
    pub ptq_range: String,
    /// Share of test samples where the int8 model predicts the same class as the QAT model.
    pub int8_qat_agreement: f64,
    /// Mean training throughput of the float epochs, in samples per second (0 without epochs).
    pub float_train_samples_per_s: f64,
    /// Mean training throughput of the QAT epochs, in samples per second.
    pub qat_train_samples_per_s: f64,
    /// Seconds the data loader thread spent assembling (and augmenting) training batches,
    /// both phases, overlapped with training.
    pub data_load_seconds: f64,
    /// Seconds training steps waited for their batch (0 when prefetching keeps up).
    pub data_wait_seconds: f64,
    /// The per-layer sensitivity of the QAT result (with `analyze`).
    pub sensitivity: Option<crate::analyze::Analysis>,
    /// The per-layer weight widths chosen under the `mixed_precision` budget, and the
    /// overrides that make them (also in `run.toml`).
    pub mixed_precision: Option<crate::analyze::mixed::Choice>,
    /// The job's stages in the order they ran, with their times.
    pub stages: Vec<Stage>,
    /// The paths the job wrote (directories end with `/`).
    pub files: Vec<String>,
}

impl Report {
    /// The report as pretty-printed JSON (what `report.json` holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// The human summary printed at the end of the job.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let kb = |b: u64| b as f64 / 1024.0;
        let ranks = match self.ranks {
            0 | 1 => String::new(),
            n => format!(", {n} ranks"),
        };
        let _ = writeln!(
            s,
            "\n{} on {} ({} backend, seed {}, batch {}{ranks})",
            self.model, self.data, self.backend, self.seed, self.batch
        );
        let _ = writeln!(s, "  {:<32} {:>9} {:>12}", "", "accuracy", "size");
        let _ = writeln!(
            s,
            "  {:<32} {:>8.2}% {:>9.1} KiB",
            if self.float_epochs == 0 {
                "given weights (not trained)".to_string()
            } else {
                format!(
                    "float ({} epoch{})",
                    self.float_epochs,
                    plural(self.float_epochs)
                )
            },
            100.0 * self.float.test_accuracy,
            kb(self.float.bytes)
        );
        if let Some(ptq) = &self.ptq {
            let _ = writeln!(
                s,
                "  {:<32} {:>8.2}% {:>9.1} KiB",
                if self.ptq_range == "minmax" {
                    format!("PTQ int8 ({} samples)", self.ptq_samples)
                } else {
                    format!("PTQ int8 ({}, {})", self.ptq_range, self.ptq_samples)
                },
                100.0 * ptq.test_accuracy,
                kb(ptq.bytes)
            );
        }
        if let (Some(qat), Some(int8)) = (&self.qat, &self.int8) {
            let _ = writeln!(
                s,
                "  {:<32} {:>8.2}% {:>9.1} KiB",
                format!(
                    "QAT fake-quant ({} epoch{})",
                    self.qat_epochs,
                    plural(self.qat_epochs)
                ),
                100.0 * qat.test_accuracy,
                kb(qat.bytes)
            );
            let _ = writeln!(
                s,
                "  {:<32} {:>8.2}% {:>9.1} KiB",
                "int8 TFLite (int8 interp.)",
                100.0 * int8.test_accuracy,
                kb(int8.bytes)
            );
            let _ = writeln!(
                s,
                "  int8 agrees with QAT on {:.2}% of the test set",
                100.0 * self.int8_qat_agreement
            );
        }
        if let Some(c) = &self.mixed_precision {
            s.push_str(&c.summary());
        }
        if let Some(a) = &self.sensitivity {
            s.push_str(&a.table());
        }
        let float_speed = if self.float_epochs == 0 {
            String::new()
        } else {
            format!("float {:.0} samples/s, ", self.float_train_samples_per_s)
        };
        let qat_speed = if self.qat.is_none() {
            String::new()
        } else {
            format!("QAT {:.0} samples/s", self.qat_train_samples_per_s)
        };
        if !(float_speed.is_empty() && qat_speed.is_empty()) {
            let _ = writeln!(
                s,
                "  training throughput: {}",
                format!("{float_speed}{qat_speed}").trim_end_matches([',', ' '])
            );
        }
        let _ = writeln!(
            s,
            "  data loader: {:.1}s assembling batches beside training, steps waited {:.1}s",
            self.data_load_seconds, self.data_wait_seconds
        );
        let total: f64 = self.stages.iter().map(|st| st.seconds).sum();
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|st| format!("{} {:.1}s", st.name, st.seconds))
            .collect();
        let _ = writeln!(s, "  time: {} (total {:.1}s)", stages.join(", "), total);
        s
    }
}

/// A two-panel SVG: training loss per step (float then QAT, smoothed) and test accuracy per
/// epoch. Hand-drawn because the chart is two polylines; a plotting crate would add more
/// than it saves.
pub fn training_curve_svg(float: &History, qat: &History) -> String {
    let (w, h, pad) = (760.0f64, 300.0f64, 48.0f64);
    let smooth = |xs: &[f32]| -> Vec<f64> {
        let k = (xs.len() / 100).clamp(1, 50);
        (0..xs.len())
            .map(|i| {
                let lo = i.saturating_sub(k - 1);
                xs[lo..=i].iter().map(|&v| v as f64).sum::<f64>() / (i - lo + 1) as f64
            })
            .collect()
    };
    let fl = smooth(&float.step_loss);
    let ql = smooth(&qat.step_loss);
    let steps = (fl.len() + ql.len()).max(2) as f64;
    let max_loss = fl.iter().chain(&ql).copied().fold(0.1f64, f64::max);
    let x = |i: f64| pad + (w - 2.0 * pad) * i / (steps - 1.0);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max_loss;
    let line = |pts: Vec<(f64, f64)>, color: &str| -> String {
        let p: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            p.join(" ")
        )
    };
    let mut s = String::new();
    let _ = writeln!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"Helvetica\" font-size=\"12\">", 2.0 * h);
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    // panel 1: loss per step
    let _ = writeln!(s, "<text x=\"{pad}\" y=\"20\">training loss per step (smoothed): float (blue), QAT fine-tuning (orange)</text>");
    let _ = writeln!(
        s,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - pad,
        w - pad,
        h - pad
    );
    let _ = writeln!(
        s,
        "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>",
        h - pad
    );
    let _ = writeln!(
        s,
        "<text x=\"8\" y=\"{}\">{max_loss:.2}</text><text x=\"8\" y=\"{}\">0</text>",
        pad + 4.0,
        h - pad
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">step {}</text>",
        w - pad,
        h - pad + 18.0,
        steps as usize
    );
    s.push_str(&line(
        fl.iter()
            .enumerate()
            .map(|(i, &v)| (x(i as f64), y(v)))
            .collect(),
        "#1f77b4",
    ));
    s.push_str(&line(
        ql.iter()
            .enumerate()
            .map(|(i, &v)| (x((fl.len() + i) as f64), y(v)))
            .collect(),
        "#ff7f0e",
    ));
    // panel 2: test accuracy per epoch
    let accs: Vec<(f64, &str)> = float
        .epochs
        .iter()
        .filter_map(|e| e.test_accuracy.map(|a| (a, "#1f77b4")))
        .chain(
            qat.epochs
                .iter()
                .filter_map(|e| e.test_accuracy.map(|a| (a, "#ff7f0e"))),
        )
        .collect();
    let lo = accs.iter().map(|a| a.0).fold(1.0f64, f64::min).min(0.95);
    let top = h;
    let ya = |a: f64| top + h - pad - (h - 2.0 * pad) * (a - lo) / (1.0 - lo);
    let xa = |i: usize| pad + (w - 2.0 * pad) * (i as f64 + 0.5) / accs.len().max(1) as f64;
    let _ = writeln!(
        s,
        "<text x=\"{pad}\" y=\"{}\">test accuracy after each epoch (float blue, QAT orange)</text>",
        top + 20.0
    );
    let _ = writeln!(
        s,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        top + h - pad,
        w - pad,
        top + h - pad
    );
    let _ = writeln!(
        s,
        "<text x=\"8\" y=\"{}\">100%</text><text x=\"8\" y=\"{}\">{:.1}%</text>",
        top + pad + 4.0,
        top + h - pad,
        100.0 * lo
    );
    for (i, (a, color)) in accs.iter().enumerate() {
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>",
            xa(i),
            ya(*a)
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.2}%</text>",
            xa(i),
            ya(*a) - 8.0,
            100.0 * a
        );
    }
    s.push_str("</svg>\n");
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
