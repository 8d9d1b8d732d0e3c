//! Mixed precision: per layer 8-, 4- or 2-bit weights, chosen from measurements under a
//! budget of weight memory or of accuracy.
//!
//! [`measure`] takes a quantized model (a QAT graph with its ranges, calibrated or trained)
//! and, for every layer with weights and every lower bit width, the accuracy on validation
//! samples of the model with only that layer's weights at that width (everything else as
//! the scheme quantizes it). [`choose`] then lowers layers greedily, cheapest accuracy per
//! byte saved first, until the weights fit the size budget (`size=KiB`), or as long as the
//! summed drops stay within the accuracy budget (`accuracy-drop=POINTS`). The choice is a
//! list of scheme overrides (`conv2d_1=weight_bits:4`): a run with them is the same run,
//! and they are written into the report and the job's config.
//!
//! Sizes count weights at their bit width (`bits/8` bytes each), the size the layer's
//! weights take where they are stored packed; the int8 TFLite file stores one byte per
//! weight whatever the grid (values on the coarser grid).

use super::{fake_quant_attrs, layers_of};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::ir::op::{ModelOp, Op};
use crate::ir::{Graph, ParamStore};
use crate::train::{self, Backend};
use serde::{Deserialize, Serialize};

/// The budget a mixed-precision choice must meet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// The weights must fit in this many KiB (at their bit widths).
    SizeKib(f64),
    /// The summed measured accuracy drops of the lowered layers stay within this many
    /// percentage points.
    AccuracyDrop(f64),
}

impl Budget {
    /// Parses `size=KiB` or `accuracy-drop=POINTS`.
    pub fn parse(s: &str) -> Result<Budget> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "--mixed-precision `{s}`: {why} (write size=KiB, e.g. size=40, or \
                 accuracy-drop=POINTS, e.g. accuracy-drop=0.5)"
            ))
        };
        let (key, value) = s.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let v: f64 = value.trim().parse().map_err(|_| bad("not a number"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(bad("the budget must be a finite number, at least 0"));
        }
        match key.trim() {
            "size" if v > 0.0 => Ok(Budget::SizeKib(v)),
            "size" => Err(bad("the size must be above 0")),
            "accuracy-drop" => Ok(Budget::AccuracyDrop(v)),
            _ => Err(bad("unknown budget")),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::SizeKib(k) => write!(f, "size={k}"),
            Budget::AccuracyDrop(d) => write!(f, "accuracy-drop={d}"),
        }
    }
}

/// One layer's weights and what each bit width costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerOptions {
    /// The weighted op's node name (the override pattern).
    pub layer: String,
    /// Weight elements.
    pub weights: usize,
    /// The layer's bit width in the model as quantized.
    pub bits: u8,
    /// `(bits, accuracy drop in points)` for each lower width measured, highest first.
    pub drops: Vec<(u8, f64)>,
}

/// The validation measurements [`choose`] reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// The accuracy of the model as quantized, on the validation samples.
    pub accuracy: f64,
    /// Validation samples.
    pub samples: usize,
    /// Every layer with quantized weights, in canonical order.
    pub layers: Vec<LayerOptions>,
}

/// For every layer with weights and every width in `widths` below its own, the accuracy drop
/// on `validation` when only that layer's weights take that width.
pub fn measure(
    qat: &Graph,
    params: &ParamStore,
    validation: &Dataset,
    widths: &[u8],
    batch: usize,
    backend: &dyn Backend,
) -> Result<Measurements> {
    if validation.is_empty() || batch == 0 {
        return Err(Error::Usage(
            "mixed precision needs validation samples and a batch of at least one".into(),
        ));
    }
    let accuracy = |g: &Graph| -> Result<f64> {
        Ok(train::evaluate(g, params, validation, batch, None, backend)?.accuracy)
    };
    let base = accuracy(qat)?;
    let mut layers = Vec::new();
    for l in layers_of(qat)? {
        let quantizers: Vec<_> = l
            .weight
            .iter()
            .filter_map(|&id| fake_quant_attrs(qat, id).map(|q| (id, q.bits)))
            .collect();
        let Some(&(_, bits)) = quantizers.first() else {
            continue;
        };
        let weights = l
            .weight
            .iter()
            .filter_map(|&id| qat.operand(id, 0))
            .filter_map(|p| params.get(&qat.node(p).name))
            .map(|t| t.numel())
            .sum();
        let mut drops = Vec::new();
        let mut lower: Vec<u8> = widths.iter().copied().filter(|&b| b < bits).collect();
        lower.sort_unstable_by(|a, b| b.cmp(a));
        lower.dedup();
        for b in lower {
            let mut g = qat.clone();
            for &(id, _) in &quantizers {
                if let Op::Model(ModelOp::FakeQuant(q)) = &mut g.node_mut(id).op {
                    q.bits = b;
                }
            }
            drops.push((b, 100.0 * (base - accuracy(&g)?)));
        }
        layers.push(LayerOptions {
            layer: l.name,
            weights,
            bits,
            drops,
        });
    }
    Ok(Measurements {
        accuracy: base,
        samples: validation.len(),
        layers,
    })
}

/// A layer's chosen width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerChoice {
    /// The weighted op's node name.
    pub layer: String,
    /// Weight elements.
    pub weights: usize,
    /// The chosen weight bit width.
    pub bits: u8,
    /// The measured drop (points) of this layer alone at that width; 0 at its own width.
    pub drop: f64,
}

/// What [`choose`] chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The budget it met.
    pub budget: Budget,
    /// Every layer with weights, in canonical order.
    pub layers: Vec<LayerChoice>,
    /// The weights at the chosen widths, in KiB.
    pub weight_kib: f64,
    /// The weights at the widths they had, in KiB.
    pub original_kib: f64,
    /// The sum of the lowered layers' measured drops, in points: a prediction (drops do not
    /// add exactly); the run measures the real one.
    pub predicted_drop: f64,
    /// The scheme overrides that make the choice (`layer=weight_bits:N`), one per lowered
    /// layer.
    pub overrides: Vec<String>,
}

fn kib(weights: usize, bits: u8) -> f64 {
    weights as f64 * bits as f64 / 8.0 / 1024.0
}

/// Lowers layers' widths greedily under `budget`: each step takes a layer one measured
/// width down, the step with the least accuracy drop per KiB saved first (a negative drop
/// counts as none).
pub fn choose(m: &Measurements, budget: Budget) -> Result<Choice> {
    // the state: per layer, the index of its current width in [own, drops...]
    let mut at = vec![0usize; m.layers.len()];
    let width = |l: &LayerOptions, i: usize| if i == 0 { l.bits } else { l.drops[i - 1].0 };
    let drop = |l: &LayerOptions, i: usize| {
        if i == 0 {
            0.0
        } else {
            l.drops[i - 1].1.max(0.0)
        }
    };
    let size = |at: &[usize]| -> f64 {
        m.layers
            .iter()
            .zip(at)
            .map(|(l, &i)| kib(l.weights, width(l, i)))
            .sum()
    };
    let predicted =
        |at: &[usize]| -> f64 { m.layers.iter().zip(at).map(|(l, &i)| drop(l, i)).sum() };
    loop {
        let done = match budget {
            Budget::SizeKib(k) => size(&at) <= k,
            Budget::AccuracyDrop(_) => false,
        };
        if done {
            break;
        }
        // the cheapest next step that keeps within an accuracy budget
        let step = m
            .layers
            .iter()
            .enumerate()
            .filter(|(k, l)| at[*k] < l.drops.len())
            .map(|(k, l)| {
                let i = at[k];
                let saved = kib(l.weights, width(l, i)) - kib(l.weights, width(l, i + 1));
                let cost = drop(l, i + 1) - drop(l, i);
                (k, cost / saved.max(f64::MIN_POSITIVE), cost)
            })
            .filter(|&(_, _, cost)| match budget {
                Budget::AccuracyDrop(d) => predicted(&at) + cost <= d + 1e-9,
                Budget::SizeKib(_) => true,
            })
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        match step {
            Some((k, _, _)) => at[k] += 1,
            None => match budget {
                Budget::SizeKib(k) => {
                    return Err(Error::Usage(format!(
                        "--mixed-precision size={k}: the weights take {:.1} KiB at the lowest \
                         widths measured; allow more or measure lower widths",
                        size(&at)
                    )))
                }
                Budget::AccuracyDrop(_) => break,
            },
        }
    }
    let layers: Vec<LayerChoice> = m
        .layers
        .iter()
        .zip(&at)
        .map(|(l, &i)| LayerChoice {
            layer: l.layer.clone(),
            weights: l.weights,
            bits: width(l, i),
            drop: if i == 0 { 0.0 } else { l.drops[i - 1].1 },
        })
        .collect();
    let overrides = m
        .layers
        .iter()
        .zip(&layers)
        .filter(|(l, c)| c.bits != l.bits)
        .map(|(_, c)| format!("{}=weight_bits:{}", c.layer, c.bits))
        .collect();
    Ok(Choice {
        budget,
        weight_kib: size(&at),
        original_kib: m.layers.iter().map(|l| kib(l.weights, l.bits)).sum(),
        predicted_drop: predicted(&at),
        layers,
        overrides,
    })
}

impl Choice {
    /// The choice as a few lines for the job's summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "  mixed precision ({}): weights {:.1} KiB -> {:.1} KiB, predicted drop {:.2} points\n",
            self.budget, self.original_kib, self.weight_kib, self.predicted_drop
        );
        for c in &self.layers {
            s += &format!(
                "    {:<28} {:>8} weights  {} bit{}\n",
                c.layer,
                c.weights,
                c.bits,
                if c.drop != 0.0 {
                    format!("  ({:+.2} points alone)", -c.drop)
                } else {
                    String::new()
                }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, weights: usize, drops: &[(u8, f64)]) -> LayerOptions {
        LayerOptions {
            layer: name.into(),
            weights,
            bits: 8,
            drops: drops.to_vec(),
        }
    }

    fn measurements() -> Measurements {
        Measurements {
            accuracy: 0.98,
            samples: 1000,
            layers: vec![
                // big and robust, small and sensitive, medium
                layer("big", 8192, &[(4, 0.1), (2, 3.0)]),
                layer("small", 1024, &[(4, 2.0), (2, 10.0)]),
                layer("mid", 4096, &[(4, 0.2), (2, 0.5)]),
            ],
        }
    }

    #[test]
    fn budgets_parse_and_bad_ones_name_the_fix() {
        assert_eq!(Budget::parse("size=40").unwrap(), Budget::SizeKib(40.0));
        assert_eq!(
            Budget::parse("accuracy-drop=0.5").unwrap(),
            Budget::AccuracyDrop(0.5)
        );
        for bad in ["size", "size=0", "size=-1", "drop=1", "size=inf", "size=x"] {
            let e = Budget::parse(bad).unwrap_err().to_string();
            assert!(e.contains("write size=KiB"), "{bad}: {e}");
        }
    }

    /// 13 KiB at 8 bits; an 8 KiB budget takes the robust big layer to 4 bits first (0.1
    /// point for 4 KiB), then the medium one (0.2 for 2 KiB).
    #[test]
    fn a_size_budget_lowers_the_cheapest_layers_first() {
        let c = choose(&measurements(), Budget::SizeKib(8.0)).unwrap();
        let bits: Vec<u8> = c.layers.iter().map(|l| l.bits).collect();
        assert_eq!(bits, [4, 8, 4]);
        assert_eq!(c.original_kib, 13.0);
        assert_eq!(c.weight_kib, 7.0);
        assert!((c.predicted_drop - 0.3).abs() < 1e-9);
        assert_eq!(c.overrides, ["big=weight_bits:4", "mid=weight_bits:4"]);
        let e = choose(&measurements(), Budget::SizeKib(1.0)).unwrap_err();
        assert!(e.to_string().contains("3.2 KiB at the lowest"), "{e}");
    }

    /// Half a point: big to 4 (0.1) and mid to 4 (0.2), then mid to 2 (+0.3 → 0.6) would
    /// pass it; small stays at 8.
    #[test]
    fn an_accuracy_budget_saves_what_it_can_within_the_drop() {
        let c = choose(&measurements(), Budget::AccuracyDrop(0.5)).unwrap();
        let bits: Vec<u8> = c.layers.iter().map(|l| l.bits).collect();
        assert_eq!(bits, [4, 8, 4]);
        assert!(c.predicted_drop <= 0.5);
        let none = choose(&measurements(), Budget::AccuracyDrop(0.0)).unwrap();
        assert!(none.overrides.is_empty());
    }
}
