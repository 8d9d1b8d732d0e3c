//! A Keras model config (`config.json` of a `.keras`, `model_config` of an `.h5`) read into
//! one shape for both flavours: Keras 3 (inbound nodes as `{"args", "kwargs"}`, calls of a
//! nested model numbered from 0) and Keras 2 / tf_keras (inbound nodes as nested arrays,
//! calls of a nested model numbered from 1).

use serde_json::Value;

/// One output of one call of a layer: `[layer, node, tensor]` in Keras' terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TensorRef {
    pub layer: String,
    pub node: usize,
    pub tensor: usize,
}

/// An argument of a call: a tensor, or a constant (`x * 0.5` recorded as an operation).
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Tensor(TensorRef),
    Const(f64),
}

/// One layer (or Keras 3 operation) of a model.
#[derive(Clone, Debug)]
pub(super) struct LayerCfg {
    pub name: String,
    pub class: String,
    /// `keras.layers`, `keras.src.ops.numpy`, …; empty in Keras 2 configs.
    pub module: String,
    /// The layer's own `config` object.
    pub config: Value,
    /// One argument list per call in this model.
    pub calls: Vec<Vec<Arg>>,
    /// A nested model (a Functional or Sequential used as a layer).
    pub nested: Option<Box<ModelCfg>>,
    /// Where a `.keras` file keeps this layer's variables (`layers/functional/layers/conv2d`);
    /// `None` for operations, which have none.
    pub keras3_path: Option<String>,
    /// The top-level layer whose `.h5` group holds this layer's weights.
    pub h5_group: String,
}

/// A Functional or Sequential model.
#[derive(Clone, Debug)]
pub(super) struct ModelCfg {
    pub name: String,
    pub sequential: bool,
    pub layers: Vec<LayerCfg>,
    pub inputs: Vec<TensorRef>,
    pub outputs: Vec<TensorRef>,
    /// A Sequential without an InputLayer: the per-sample input shape it was built with.
    pub build_shape: Option<Vec<Option<usize>>>,
    /// Keras 2 numbering of nested-model calls (from 1).
    pub keras2: bool,
}

type R<T> = Result<T, String>;

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Keras' `snake_case` of a class name: `DepthwiseConv2D` → `depthwise_conv2d`, `PReLU` →
/// `p_re_lu` (the names of a `.keras` file's weight groups).
pub(super) fn snake_case(class: &str) -> String {
    let c: Vec<char> = class
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // `(.)([A-Z][a-z]+)` → `\1_\2`, left to right without overlap
    let mut s1: Vec<char> = Vec::with_capacity(c.len() + 4);
    let mut i = 0;
    while i < c.len() {
        let word_starts = i + 1 < c.len()
            && c[i + 1].is_ascii_uppercase()
            && c.get(i + 2).is_some_and(|n| n.is_ascii_lowercase());
        s1.push(c[i]);
        if word_starts {
            s1.push('_');
            let mut j = i + 1;
            s1.push(c[j]);
            j += 1;
            while j < c.len() && c[j].is_ascii_lowercase() {
                s1.push(c[j]);
                j += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    // `([a-z])([A-Z])` → `\1_\2`
    let mut out = String::with_capacity(s1.len() + 4);
    for (k, ch) in s1.iter().enumerate() {
        if k > 0 && ch.is_ascii_uppercase() && s1[k - 1].is_ascii_lowercase() {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

fn is_model_class(class: &str) -> bool {
    matches!(class, "Functional" | "Sequential" | "Model")
}

/// Whether an entry is a Keras 3 operation (tensor arithmetic, not a layer).
fn is_operation(module: &str) -> bool {
    module.starts_with("keras.src.ops")
}

fn tensor_ref(v: &Value) -> R<TensorRef> {
    let a = v.as_array().ok_or("a tensor reference is not a list")?;
    let layer = a
        .first()
        .and_then(Value::as_str)
        .ok_or("a tensor reference has no layer name")?;
    let idx = |i: usize| a.get(i).and_then(Value::as_u64).map(|n| n as usize);
    Ok(TensorRef {
        layer: layer.to_string(),
        node: idx(1).ok_or("a tensor reference has no node index")?,
        tensor: idx(2).unwrap_or(0),
    })
}

/// `input_layers` / `output_layers`: one triple, a list of triples, or a dict of them.
fn endpoints(v: Option<&Value>) -> R<Vec<TensorRef>> {
    match v {
        None | Some(Value::Null) => Err("the model has no input_layers / output_layers".into()),
        Some(Value::Array(a)) if a.first().is_some_and(Value::is_string) => {
            Ok(vec![tensor_ref(&Value::Array(a.clone()))?])
        }
        Some(Value::Array(a)) => a.iter().map(tensor_ref).collect(),
        Some(Value::Object(m)) => m.values().map(tensor_ref).collect(),
        Some(_) => Err("input_layers / output_layers is neither a list nor a dict".into()),
    }
}

/// The arguments of a Keras 3 call, flattened in order (a merge layer's list argument gives
/// its tensors one by one).
fn keras3_args(v: &Value, out: &mut Vec<Arg>) -> R<()> {
    match v {
        Value::Array(a) => a.iter().try_for_each(|x| keras3_args(x, out)),
        Value::Object(m)
            if m.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__") =>
        {
            let h = m
                .get("config")
                .and_then(|c| c.get("keras_history"))
                .ok_or("a tensor argument has no keras_history")?;
            out.push(Arg::Tensor(tensor_ref(h)?));
            Ok(())
        }
        Value::Number(n) => {
            out.push(Arg::Const(n.as_f64().unwrap_or(f64::NAN)));
            Ok(())
        }
        other => Err(format!("unsupported call argument {other}")),
    }
}

fn calls(entry: &Value) -> R<(Vec<Vec<Arg>>, bool)> {
    let Some(nodes) = entry.get("inbound_nodes").and_then(Value::as_array) else {
        return Ok((Vec::new(), false));
    };
    let mut out = Vec::new();
    let mut keras2 = false;
    for node in nodes {
        let mut args = Vec::new();
        match node {
            Value::Object(m) => {
                keras3_args(m.get("args").unwrap_or(&Value::Null), &mut args)?;
                if let Some(Value::Object(kw)) = m.get("kwargs") {
                    for (k, v) in kw {
                        let mut t = Vec::new();
                        if keras3_args(v, &mut t).is_ok()
                            && t.iter().any(|a| matches!(a, Arg::Tensor(_)))
                        {
                            return Err(format!("a tensor passed as keyword `{k}`"));
                        }
                    }
                }
            }
            // tf_keras' TFOpLambda: one tensor entry, not wrapped, the other operand in kwargs
            Value::Array(a) if a.first().is_some_and(Value::is_string) => {
                keras2 = true;
                args.push(Arg::Tensor(tensor_ref(node)?));
                if let Some(y) = a.get(3).and_then(|kw| kw.get("y")) {
                    let y = y
                        .as_f64()
                        .ok_or("only a scalar second operand of a TF operation is supported")?;
                    args.push(Arg::Const(y));
                }
            }
            Value::Array(a) => {
                keras2 = true;
                for t in a {
                    args.push(Arg::Tensor(tensor_ref(t)?));
                }
            }
            other => return Err(format!("unsupported inbound node {other}")),
        }
        out.push(args);
    }
    Ok((out, keras2))
}

fn shape_list(v: Option<&Value>) -> Option<Vec<Option<usize>>> {
    v?.as_array()
        .map(|a| a.iter().map(|d| d.as_u64().map(|n| n as usize)).collect())
}

/// Parses a model object (`{"class_name": "Functional" | "Sequential", "config": …}`).
/// `keras3_path` is where its layers' groups live in a `.keras` file; `h5_group` the
/// top-level layer whose `.h5` group holds its weights (`None` at the top).
pub(super) fn model(obj: &Value, keras3_path: &str, h5_group: Option<&str>) -> R<ModelCfg> {
    let class = str_of(obj, "class_name").unwrap_or("");
    if !is_model_class(class) {
        return Err(format!("the config describes a `{class}`, not a model"));
    }
    let cfg = obj.get("config").ok_or("the model has no config")?;
    let name = str_of(cfg, "name").unwrap_or("model").to_string();
    let sequential = class == "Sequential";
    let entries = cfg
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("model `{name}` has no layers"))?;
    let mut counters: std::collections::HashMap<String, usize> = Default::default();
    let mut layers = Vec::with_capacity(entries.len());
    let mut keras2 = false;
    for (i, e) in entries.iter().enumerate() {
        let lclass = str_of(e, "class_name")
            .ok_or_else(|| format!("layer {i} of `{name}` has no class_name"))?
            .to_string();
        let module = str_of(e, "module").unwrap_or("").to_string();
        let lcfg = e.get("config").cloned().unwrap_or(Value::Null);
        let lname = str_of(e, "name")
            .or_else(|| str_of(&lcfg, "name"))
            .ok_or_else(|| format!("layer {i} ({lclass}) of `{name}` has no name"))?
            .to_string();
        let (lcalls, k2) = calls(e).map_err(|m| format!("layer `{lname}`: {m}"))?;
        keras2 |= k2;
        // weight groups: named by class, numbered per class; operations and a Sequential's
        // InputLayer get none
        let counts = !(is_operation(&module) || sequential && lclass == "InputLayer");
        let path = counts.then(|| {
            let base = snake_case(&lclass);
            let n = counters.entry(base.clone()).or_insert(0);
            let group = if *n == 0 {
                base.clone()
            } else {
                format!("{base}_{n}")
            };
            *n += 1;
            if keras3_path.is_empty() {
                format!("layers/{group}")
            } else {
                format!("{keras3_path}/layers/{group}")
            }
        });
        let group = h5_group.unwrap_or(&lname).to_string();
        let nested = if is_model_class(&lclass) && !is_operation(&module) {
            let inner_path = path.clone().unwrap_or_default();
            Some(Box::new(
                model(e, &inner_path, Some(&group)).map_err(|m| format!("in `{lname}`: {m}"))?,
            ))
        } else {
            None
        };
        layers.push(LayerCfg {
            name: lname,
            class: lclass,
            module,
            config: lcfg,
            calls: lcalls,
            nested,
            keras3_path: path,
            h5_group: group,
        });
    }
    let (inputs, outputs, build_shape) = if sequential {
        let build =
            shape_list(cfg.get("build_input_shape")).map(|s| s.into_iter().skip(1).collect());
        (Vec::new(), Vec::new(), build)
    } else {
        (
            endpoints(cfg.get("input_layers")).map_err(|m| format!("`{name}`: {m}"))?,
            endpoints(cfg.get("output_layers")).map_err(|m| format!("`{name}`: {m}"))?,
            None,
        )
    };
    // a Keras 2 Functional lists its endpoints as lists of triples with kwargs-free entries;
    // its calls are arrays: the flag set while reading them decides the node numbering
    Ok(ModelCfg {
        name,
        sequential,
        layers,
        inputs,
        outputs,
        build_shape,
        keras2,
    })
}

impl ModelCfg {
    /// Whether calls of this model, used as a layer of a Keras 2 model, are numbered from 1
    /// (tf_keras keeps the node that built a Functional, or a Sequential with an
    /// InputLayer, as node 0 of the inner model).
    pub fn keras2_offset(&self) -> usize {
        let has_input = self.layers.first().is_some_and(|l| l.class == "InputLayer");
        usize::from(!self.sequential || has_input)
    }

    /// Marks every model of the tree as Keras 2 numbered if any call anywhere is in the
    /// Keras 2 format (a model whose layers are all single-call still parses either way).
    pub fn set_keras2(&mut self, keras2: bool) {
        self.keras2 = keras2;
        for l in &mut self.layers {
            if let Some(n) = &mut l.nested {
                n.set_keras2(keras2);
            }
        }
    }

    /// Whether any call of the tree is in the Keras 2 format.
    pub fn any_keras2(&self) -> bool {
        self.keras2
            || self
                .layers
                .iter()
                .any(|l| l.nested.as_ref().is_some_and(|n| n.any_keras2()))
    }
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn class_names_become_keras_group_names() {
        for (class, group) in [
            ("Conv2D", "conv2d"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("SeparableConv2D", "separable_conv2d"),
            ("Conv2DTranspose", "conv2d_transpose"),
            ("BatchNormalization", "batch_normalization"),
            ("ReLU", "re_lu"),
            ("PReLU", "p_re_lu"),
            ("LeakyReLU", "leaky_re_lu"),
            ("InputLayer", "input_layer"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("UpSampling2D", "up_sampling2d"),
            ("ZeroPadding2D", "zero_padding2d"),
            ("MaxPooling2D", "max_pooling2d"),
            ("Functional", "functional"),
            ("Dense", "dense"),
        ] {
            assert_eq!(snake_case(class), group, "{class}");
        }
    }
}
