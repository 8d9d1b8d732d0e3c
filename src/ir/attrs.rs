//! Op attributes as `key=value` pairs: the one textual form shared by `.qir`, IR dumps,
//! DOT labels and diagnostics. Defaults are omitted when printing and filled in when parsing,
//! so `print(parse(print(g))) == print(g)`.

use super::op::*;
use std::fmt;

/// One attribute value as written in `.qir`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// An integer: `axis=3`, `bits=8`.
    Int(i64),
    /// A float, printed so it reads back bit-exact: `epsilon=0.001`.
    Float(f32),
    /// `true` or `false`.
    Bool(bool),
    /// A bare word: `same`, `relu6`, `ema`, `none`.
    Ident(String),
    /// A quoted string (state names such as `"conv2d/act"`), printed with escapes.
    Str(String),
    /// A bracketed list: `stride=[2,2]`, `pads=[[0,0],[1,1],[1,1],[0,0]]`.
    List(Vec<AttrValue>),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => write!(f, "{v:?}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
            AttrValue::Ident(s) => f.write_str(s),
            AttrValue::Str(s) => f.write_str(&quote(s)),
            AttrValue::List(items) => {
                f.write_str("[")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{it}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A string as a `.qir` literal: in double quotes, with `\\`, `\"`, `\n`, `\t`, `\r` and
/// `\u{..}` (other control characters) escaped — exactly the escapes the `.qir` lexer reads.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn ints<T: Copy + Into<i64>>(v: &[T]) -> AttrValue {
    AttrValue::List(v.iter().map(|&x| AttrValue::Int(x.into())).collect())
}

fn usizes(v: &[usize]) -> AttrValue {
    AttrValue::List(v.iter().map(|&x| AttrValue::Int(x as i64)).collect())
}

fn pairs(v: &[[usize; 2]]) -> AttrValue {
    AttrValue::List(v.iter().map(|p| usizes(p)).collect())
}

fn ident(s: &str) -> AttrValue {
    AttrValue::Ident(s.to_string())
}

fn padding(p: Padding) -> AttrValue {
    match p {
        Padding::Same => ident("same"),
        Padding::Valid => ident("valid"),
        Padding::Explicit(v) => usizes(&v),
    }
}

fn push_conv(out: &mut Vec<(&'static str, AttrValue)>, c: &ConvAttrs) {
    out.push(("stride", usizes(&c.stride)));
    out.push(("padding", padding(c.padding)));
    if c.dilation != [1, 1] {
        out.push(("dilation", usizes(&c.dilation)));
    }
    push_act(out, c.activation);
}

fn push_act(out: &mut Vec<(&'static str, AttrValue)>, a: Activation) {
    if a != Activation::None {
        out.push(("activation", ident(a.name())));
    }
}

fn push_pool(out: &mut Vec<(&'static str, AttrValue)>, p: &PoolAttrs) {
    out.push(("size", usizes(&p.size)));
    out.push(("stride", usizes(&p.stride)));
    out.push(("padding", padding(p.padding)));
}

fn push_fq(out: &mut Vec<(&'static str, AttrValue)>, q: &FakeQuantAttrs) {
    out.push(("bits", AttrValue::Int(q.bits as i64)));
    if q.narrow {
        out.push(("narrow", AttrValue::Bool(true)));
    }
    if q.symmetric {
        out.push(("symmetric", AttrValue::Bool(true)));
    }
    if let Some(a) = q.axis {
        out.push(("axis", AttrValue::Int(a as i64)));
    }
    match &q.range {
        RangeSource::LastValue => out.push(("range", ident("last_value"))),
        RangeSource::Ema { state, decay } => {
            out.push(("range", ident("ema")));
            out.push(("state", AttrValue::Str(state.clone())));
            out.push(("decay", AttrValue::Float(decay.0)));
        }
        RangeSource::AllValues { state } => {
            out.push(("range", ident("all_values")));
            out.push(("state", AttrValue::Str(state.clone())));
        }
        RangeSource::Tied { state } => {
            out.push(("range", ident("tied")));
            out.push(("state", AttrValue::Str(state.clone())));
        }
        RangeSource::Fixed { min, max } => {
            out.push(("range", ident("fixed")));
            out.push(("min", AttrValue::Float(min.0)));
            out.push(("max", AttrValue::Float(max.0)));
        }
        RangeSource::Learned { state, method } => {
            out.push(("range", ident("learned")));
            out.push(("method", ident(method.name())));
            out.push(("state", AttrValue::Str(state.clone())));
        }
        RangeSource::Operands => out.push(("range", ident("operands"))),
        RangeSource::Trained(method) => {
            out.push(("range", ident("trained")));
            out.push(("method", ident(method.name())));
        }
    }
}

fn push_reduce(out: &mut Vec<(&'static str, AttrValue)>, r: &ReduceAttrs) {
    out.push(("axes", usizes(&r.axes)));
    if r.keepdims {
        out.push(("keepdims", AttrValue::Bool(true)));
    }
}

fn f(v: F32) -> AttrValue {
    AttrValue::Float(v.0)
}

fn push_keepdims(out: &mut Vec<(&'static str, AttrValue)>, keepdims: bool) {
    if keepdims {
        out.push(("keepdims", AttrValue::Bool(true)));
    }
}

fn push_opt_axis(out: &mut Vec<(&'static str, AttrValue)>, axis: Option<usize>) {
    if let Some(ax) = axis {
        out.push(("axis", AttrValue::Int(ax as i64)));
    }
}

fn model_attrs(op: &ModelOp, a: &mut Vec<(&'static str, AttrValue)>) {
    use ModelOp::*;
    match op {
        Conv2d(c) | DepthwiseConv2d(c) | Conv2dTranspose(c) => push_conv(a, c),
        Dense { activation } | Add { activation } | Sub { activation } | Mul { activation } => {
            push_act(a, *activation)
        }
        BatchNorm { epsilon, momentum } => {
            a.push(("epsilon", f(*epsilon)));
            a.push(("momentum", f(*momentum)));
        }
        LeakyRelu { alpha } => a.push(("alpha", f(*alpha))),
        ThresholdedRelu { theta } => a.push(("theta", f(*theta))),
        Concat { axis } => a.push(("axis", AttrValue::Int(*axis as i64))),
        MaxPool2d(p) | AvgPool2d(p) => push_pool(a, p),
        GlobalAvgPool { keepdims } | GlobalMaxPool { keepdims } => push_keepdims(a, *keepdims),
        Mean(r) => push_reduce(a, r),
        Reshape { shape } => a.push(("shape", ints(shape))),
        Transpose { perm } => a.push(("perm", usizes(perm))),
        Pad { pads } => a.push(("pads", pairs(pads))),
        Crop { crops } => a.push(("crops", pairs(crops))),
        UpsampleNearest { scale } => a.push(("scale", usizes(scale))),
        Dropout { rate } => a.push(("rate", f(*rate))),
        FakeQuant(q) => push_fq(a, q),
        Input | Param | Relu | Relu6 | PRelu | HardSwish | Sigmoid | Tanh | Softmax | Flatten => {}
    }
}

fn pass_attrs(op: &PassOp, a: &mut Vec<(&'static str, AttrValue)>) {
    match op {
        PassOp::Quant(q) => push_fq(a, q),
        PassOp::BnScale { epsilon } => a.push(("epsilon", f(*epsilon))),
        PassOp::ScaleChannels { axis } => a.push(("axis", AttrValue::Int(*axis as i64))),
    }
}

fn train_attrs(op: &TrainOp, a: &mut Vec<(&'static str, AttrValue)>) {
    match op {
        TrainOp::BatchNormTrain { epsilon } => a.push(("epsilon", f(*epsilon))),
        TrainOp::BatchVar { unbiased } => {
            if *unbiased {
                a.push(("unbiased", AttrValue::Bool(true)));
            }
        }
        TrainOp::DropoutMask { rate, seed, shape } => {
            a.push(("rate", f(*rate)));
            a.push(("seed", AttrValue::Int(*seed as i64)));
            a.push(("shape", usizes(shape)));
        }
        TrainOp::AllReduce { reduce } => a.push(("reduce", ident(reduce.name()))),
        TrainOp::Unpack { offset, shape } => {
            a.push(("offset", AttrValue::Int(*offset as i64)));
            a.push(("shape", usizes(shape)));
        }
        TrainOp::SoftmaxCrossEntropy | TrainOp::BatchMean | TrainOp::Pack => {}
    }
}

fn grad_attrs(op: &GradOp, a: &mut Vec<(&'static str, AttrValue)>) {
    use GradOp::*;
    match op {
        LeakyReluGrad { alpha } => a.push(("alpha", f(*alpha))),
        ThresholdedReluGrad { theta } => a.push(("theta", f(*theta))),
        FakeQuantGrad(q) => push_fq(a, q),
        FakeQuantRangeGrad {
            quant,
            end,
            grad_scale,
        } => {
            push_fq(a, quant);
            a.push(("end", ident(end.name())));
            a.push(("grad_scale", f(*grad_scale)));
        }
        Conv2dGradInput { conv, input_shape }
        | DepthwiseConv2dGradInput { conv, input_shape }
        | Conv2dTransposeGradInput { conv, input_shape } => {
            push_conv(a, conv);
            a.push(("input_shape", usizes(input_shape)));
        }
        Conv2dGradFilter { conv, filter_shape }
        | DepthwiseConv2dGradFilter { conv, filter_shape }
        | Conv2dTransposeGradFilter { conv, filter_shape } => {
            push_conv(a, conv);
            a.push(("filter_shape", usizes(filter_shape)));
        }
        ReduceSum(r) => push_reduce(a, r),
        BatchNormGradInput { epsilon } | BatchNormGradGamma { epsilon } => {
            a.push(("epsilon", f(*epsilon)))
        }
        MaxPool2dGrad(p) => push_pool(a, p),
        AvgPool2dGrad { pool, input_shape } => {
            push_pool(a, pool);
            a.push(("input_shape", usizes(input_shape)));
        }
        GlobalAvgPoolGrad { input_shape } => a.push(("input_shape", usizes(input_shape))),
        MeanGrad { axes, input_shape } => {
            a.push(("axes", usizes(axes)));
            a.push(("input_shape", usizes(input_shape)));
        }
        Slice { begin, size } => {
            a.push(("begin", usizes(begin)));
            a.push(("size", usizes(size)));
        }
        UpsampleNearestGrad { scale } => a.push(("scale", usizes(scale))),
        SoftmaxCrossEntropyGrad
        | ReluGrad
        | Relu6Grad
        | PReluGradInput
        | PReluGradAlpha
        | HardSwishGrad
        | SigmoidGrad
        | TanhGrad
        | SoftmaxGrad
        | DenseGradInput
        | DenseGradWeight
        | GlobalMaxPoolGrad => {}
    }
}

fn update_attrs(op: &UpdateOp, a: &mut Vec<(&'static str, AttrValue)>) {
    use UpdateOp::*;
    match op {
        MovingAverage { momentum } | SgdVelocity { momentum } => a.push(("momentum", f(*momentum))),
        AdamMoment { beta } | AdamMomentSq { beta } => a.push(("beta", f(*beta))),
        AdamApply { epsilon } => a.push(("epsilon", f(*epsilon))),
        ObserveMin { axis } | ObserveMax { axis } => push_opt_axis(a, *axis),
        EmaUpdate { decay } => a.push(("decay", f(*decay))),
        RunningMin | RunningMax => {}
    }
}

impl Op {
    /// The op's attributes in print order, defaults omitted.
    pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
        let mut a = Vec::new();
        match self {
            Op::Model(op) => model_attrs(op, &mut a),
            Op::Pass(op) => pass_attrs(op, &mut a),
            Op::Train(op) => train_attrs(op, &mut a),
            Op::Grad(op) => grad_attrs(op, &mut a),
            Op::Update(op) => update_attrs(op, &mut a),
        }
        a
    }

    /// Builds an op from its kind and parsed attributes; the error names the attribute.
    pub fn from_attrs(kind: OpKind, attrs: Vec<(String, AttrValue)>) -> Result<Op, OpError> {
        let mut r = AttrReader {
            kind,
            attrs,
            used: Vec::new(),
        };
        let op = r.build()?;
        r.finish()?;
        Ok(op)
    }
}

struct AttrReader {
    kind: OpKind,
    attrs: Vec<(String, AttrValue)>,
    used: Vec<&'static str>,
}

impl AttrReader {
    fn get(&mut self, key: &'static str) -> Option<AttrValue> {
        self.used.push(key);
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn req(&mut self, key: &'static str) -> Result<AttrValue, OpError> {
        self.get(key)
            .ok_or_else(|| OpError(format!("{} needs attribute `{key}`", self.kind.name())))
    }

    fn bad(&self, key: &str, want: &str, got: &AttrValue) -> OpError {
        OpError(format!(
            "attribute `{key}` of {} must be {want}, found `{got}`",
            self.kind.name()
        ))
    }

    fn int_of(&self, key: &str, v: &AttrValue) -> Result<i64, OpError> {
        match v {
            AttrValue::Int(i) => Ok(*i),
            _ => Err(self.bad(key, "an integer", v)),
        }
    }

    fn usize_of(&self, key: &str, v: &AttrValue) -> Result<usize, OpError> {
        let i = self.int_of(key, v)?;
        usize::try_from(i).map_err(|_| self.bad(key, "a non-negative integer", v))
    }

    fn usize_or(&mut self, key: &'static str, default: usize) -> Result<usize, OpError> {
        match self.get(key) {
            Some(v) => self.usize_of(key, &v),
            None => Ok(default),
        }
    }

    fn req_usize(&mut self, key: &'static str) -> Result<usize, OpError> {
        let v = self.req(key)?;
        self.usize_of(key, &v)
    }

    fn float_or(&mut self, key: &'static str, default: f32) -> Result<F32, OpError> {
        match self.get(key) {
            Some(AttrValue::Float(f)) => Ok(F32(f)),
            Some(AttrValue::Int(i)) => Ok(F32(i as f32)),
            Some(v) => Err(self.bad(key, "a number", &v)),
            None => Ok(F32(default)),
        }
    }

    fn req_float(&mut self, key: &'static str) -> Result<F32, OpError> {
        if self.attrs.iter().all(|(k, _)| k != key) {
            return Err(format!("{} needs attribute `{key}`", self.kind.name()).into());
        }
        self.float_or(key, 0.0)
    }

    fn bool_or(&mut self, key: &'static str, default: bool) -> Result<bool, OpError> {
        match self.get(key) {
            Some(AttrValue::Bool(b)) => Ok(b),
            Some(v) => Err(self.bad(key, "true or false", &v)),
            None => Ok(default),
        }
    }

    fn list_of(&self, key: &str, v: &AttrValue) -> Result<Vec<AttrValue>, OpError> {
        match v {
            AttrValue::List(items) => Ok(items.clone()),
            _ => Err(self.bad(key, "a list", v)),
        }
    }

    fn usizes_of(&self, key: &str, v: &AttrValue) -> Result<Vec<usize>, OpError> {
        self.list_of(key, v)?
            .iter()
            .map(|x| self.usize_of(key, x))
            .collect()
    }

    fn req_usizes(&mut self, key: &'static str) -> Result<Vec<usize>, OpError> {
        let v = self.req(key)?;
        self.usizes_of(key, &v)
    }

    fn pair_or(&mut self, key: &'static str, default: [usize; 2]) -> Result<[usize; 2], OpError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                let xs = self.usizes_of(key, &v)?;
                match xs.as_slice() {
                    [a] => Ok([*a, *a]),
                    [a, b] => Ok([*a, *b]),
                    _ => Err(self.bad(key, "[h, w]", &v)),
                }
            }
        }
    }

    fn pairs_req(&mut self, key: &'static str) -> Result<Vec<[usize; 2]>, OpError> {
        let v = self.req(key)?;
        let rows = self.list_of(key, &v)?;
        rows.iter()
            .map(|row| match self.usizes_of(key, row)?.as_slice() {
                [a, b] => Ok([*a, *b]),
                _ => Err(self.bad(key, "a list of [before, after] pairs", &v)),
            })
            .collect()
    }

    fn ident_or(&mut self, key: &'static str, default: &str) -> Result<String, OpError> {
        match self.get(key) {
            Some(AttrValue::Ident(s)) => Ok(s),
            Some(v) => Err(self.bad(key, "a word", &v)),
            None => Ok(default.to_string()),
        }
    }

    fn str_req(&mut self, key: &'static str) -> Result<String, OpError> {
        match self.req(key)? {
            AttrValue::Str(s) => Ok(s),
            v => Err(self.bad(key, "a quoted string", &v)),
        }
    }

    /// A `u64` seed; seeds above `i64::MAX` print as their two's-complement `i64`, so
    /// negative values are read back bit for bit.
    fn seed(&mut self) -> Result<u64, OpError> {
        match self.get("seed") {
            None => Ok(0),
            Some(v) => Ok(self.int_of("seed", &v)? as u64),
        }
    }

    fn padding(&mut self) -> Result<Padding, OpError> {
        match self.get("padding") {
            None => Ok(Padding::Valid),
            Some(AttrValue::Ident(s)) if s == "same" => Ok(Padding::Same),
            Some(AttrValue::Ident(s)) if s == "valid" => Ok(Padding::Valid),
            Some(v @ AttrValue::List(_)) => match self.usizes_of("padding", &v)?.as_slice() {
                [t, b, l, r] => Ok(Padding::Explicit([*t, *b, *l, *r])),
                _ => Err(self.bad("padding", "same, valid or [top,bottom,left,right]", &v)),
            },
            Some(v) => Err(self.bad("padding", "same, valid or [top,bottom,left,right]", &v)),
        }
    }

    fn activation(&mut self) -> Result<Activation, OpError> {
        match self.ident_or("activation", "none")?.as_str() {
            "none" => Ok(Activation::None),
            "relu" => Ok(Activation::Relu),
            "relu6" => Ok(Activation::Relu6),
            other => Err(format!(
                "attribute `activation` of {} must be none, relu or relu6, found `{other}`",
                self.kind.name()
            )
            .into()),
        }
    }

    fn conv(&mut self) -> Result<ConvAttrs, OpError> {
        Ok(ConvAttrs {
            stride: self.pair_or("stride", [1, 1])?,
            padding: self.padding()?,
            dilation: self.pair_or("dilation", [1, 1])?,
            activation: self.activation()?,
        })
    }

    fn pool(&mut self) -> Result<PoolAttrs, OpError> {
        let size = self.pair_or("size", [2, 2])?;
        Ok(PoolAttrs {
            size,
            stride: self.pair_or("stride", size)?,
            padding: self.padding()?,
        })
    }

    fn reduce(&mut self) -> Result<ReduceAttrs, OpError> {
        Ok(ReduceAttrs {
            axes: self.req_usizes("axes")?,
            keepdims: self.bool_or("keepdims", false)?,
        })
    }

    fn opt_axis(&mut self) -> Result<Option<usize>, OpError> {
        match self.get("axis") {
            None => Ok(None),
            Some(AttrValue::Ident(s)) if s == "none" => Ok(None),
            Some(v) => Ok(Some(self.usize_of("axis", &v)?)),
        }
    }

    /// A range-learning method (`lsq`, `pact`) under `key`.
    fn learning(&mut self, key: &'static str) -> Result<RangeLearning, OpError> {
        let name = self.ident_or(key, "")?;
        RangeLearning::parse(&name).ok_or_else(|| {
            format!(
                "attribute `{key}` of {} must be lsq or pact, found `{name}`",
                self.kind.name()
            )
            .into()
        })
    }

    fn fake_quant(&mut self) -> Result<FakeQuantAttrs, OpError> {
        let bits = self.usize_or("bits", 8)?;
        let bits = u8::try_from(bits).map_err(|_| {
            format!(
                "attribute `bits` of {} must be in 2..=8, found {bits}",
                self.kind.name()
            )
        })?;
        let narrow = self.bool_or("narrow", false)?;
        let symmetric = self.bool_or("symmetric", false)?;
        let axis = self.opt_axis()?;
        let range = match self.ident_or("range", "last_value")?.as_str() {
            "last_value" => RangeSource::LastValue,
            "ema" => RangeSource::Ema {
                state: self.str_req("state")?,
                decay: self.float_or("decay", 0.999)?,
            },
            "all_values" => RangeSource::AllValues {
                state: self.str_req("state")?,
            },
            "tied" => RangeSource::Tied {
                state: self.str_req("state")?,
            },
            "fixed" => RangeSource::Fixed {
                min: self.req_float("min")?,
                max: self.req_float("max")?,
            },
            "learned" => RangeSource::Learned {
                method: self.learning("method")?,
                state: self.str_req("state")?,
            },
            "operands" => RangeSource::Operands,
            "trained" => RangeSource::Trained(self.learning("method")?),
            other => {
                return Err(format!(
                    "attribute `range` of {} must be last_value, ema, all_values, tied, fixed, \
                     learned, operands or trained, found `{other}`",
                    self.kind.name()
                )
                .into())
            }
        };
        Ok(FakeQuantAttrs {
            bits,
            narrow,
            symmetric,
            axis,
            range,
        })
    }

    fn build(&mut self) -> Result<Op, OpError> {
        use OpKind as K;
        Ok(match self.kind {
            K::Input => ModelOp::Input.into(),
            K::Param => ModelOp::Param.into(),
            K::Conv2d => ModelOp::Conv2d(self.conv()?).into(),
            K::DepthwiseConv2d => ModelOp::DepthwiseConv2d(self.conv()?).into(),
            K::Conv2dTranspose => ModelOp::Conv2dTranspose(self.conv()?).into(),
            K::Dense => ModelOp::Dense {
                activation: self.activation()?,
            }
            .into(),
            K::BatchNorm => ModelOp::BatchNorm {
                epsilon: self.float_or("epsilon", 1e-3)?,
                momentum: self.float_or("momentum", 0.99)?,
            }
            .into(),
            K::Relu => ModelOp::Relu.into(),
            K::Relu6 => ModelOp::Relu6.into(),
            K::LeakyRelu => ModelOp::LeakyRelu {
                alpha: self.float_or("alpha", 0.3)?,
            }
            .into(),
            K::PRelu => ModelOp::PRelu.into(),
            K::ThresholdedRelu => ModelOp::ThresholdedRelu {
                theta: self.float_or("theta", 1.0)?,
            }
            .into(),
            K::HardSwish => ModelOp::HardSwish.into(),
            K::Sigmoid => ModelOp::Sigmoid.into(),
            K::Tanh => ModelOp::Tanh.into(),
            K::Softmax => ModelOp::Softmax.into(),
            K::Add => ModelOp::Add {
                activation: self.activation()?,
            }
            .into(),
            K::Sub => ModelOp::Sub {
                activation: self.activation()?,
            }
            .into(),
            K::Mul => ModelOp::Mul {
                activation: self.activation()?,
            }
            .into(),
            K::Concat => ModelOp::Concat {
                axis: self.req_usize("axis")?,
            }
            .into(),
            K::MaxPool2d => ModelOp::MaxPool2d(self.pool()?).into(),
            K::AvgPool2d => ModelOp::AvgPool2d(self.pool()?).into(),
            K::GlobalAvgPool => ModelOp::GlobalAvgPool {
                keepdims: self.bool_or("keepdims", false)?,
            }
            .into(),
            K::GlobalMaxPool => ModelOp::GlobalMaxPool {
                keepdims: self.bool_or("keepdims", false)?,
            }
            .into(),
            K::Mean => ModelOp::Mean(self.reduce()?).into(),
            K::Reshape => {
                let v = self.req("shape")?;
                let shape = self
                    .list_of("shape", &v)?
                    .iter()
                    .map(|x| self.int_of("shape", x))
                    .collect::<Result<_, _>>()?;
                ModelOp::Reshape { shape }.into()
            }
            K::Flatten => ModelOp::Flatten.into(),
            K::Transpose => ModelOp::Transpose {
                perm: self.req_usizes("perm")?,
            }
            .into(),
            K::Pad => ModelOp::Pad {
                pads: self.pairs_req("pads")?,
            }
            .into(),
            K::Crop => ModelOp::Crop {
                crops: self.pairs_req("crops")?,
            }
            .into(),
            K::UpsampleNearest => ModelOp::UpsampleNearest {
                scale: self.pair_or("scale", [2, 2])?,
            }
            .into(),
            K::Dropout => ModelOp::Dropout {
                rate: self.req_float("rate")?,
            }
            .into(),
            K::FakeQuant => ModelOp::FakeQuant(self.fake_quant()?).into(),
            K::Quant => PassOp::Quant(self.fake_quant()?).into(),
            K::BnScale => PassOp::BnScale {
                epsilon: self.float_or("epsilon", 1e-3)?,
            }
            .into(),
            K::ScaleChannels => PassOp::ScaleChannels {
                axis: self.req_usize("axis")?,
            }
            .into(),
            K::SoftmaxCrossEntropy => TrainOp::SoftmaxCrossEntropy.into(),
            K::SoftmaxCrossEntropyGrad => GradOp::SoftmaxCrossEntropyGrad.into(),
            K::ReluGrad => GradOp::ReluGrad.into(),
            K::Relu6Grad => GradOp::Relu6Grad.into(),
            K::PReluGradInput => GradOp::PReluGradInput.into(),
            K::PReluGradAlpha => GradOp::PReluGradAlpha.into(),
            K::LeakyReluGrad => GradOp::LeakyReluGrad {
                alpha: self.float_or("alpha", 0.3)?,
            }
            .into(),
            K::ThresholdedReluGrad => GradOp::ThresholdedReluGrad {
                theta: self.float_or("theta", 1.0)?,
            }
            .into(),
            K::HardSwishGrad => GradOp::HardSwishGrad.into(),
            K::SigmoidGrad => GradOp::SigmoidGrad.into(),
            K::TanhGrad => GradOp::TanhGrad.into(),
            K::SoftmaxGrad => GradOp::SoftmaxGrad.into(),
            K::FakeQuantGrad => GradOp::FakeQuantGrad(self.fake_quant()?).into(),
            K::FakeQuantRangeGrad => GradOp::FakeQuantRangeGrad {
                quant: self.fake_quant()?,
                end: match self.ident_or("end", "")?.as_str() {
                    "min" => RangeEnd::Min,
                    "max" => RangeEnd::Max,
                    other => {
                        return Err(format!(
                            "attribute `end` of fake_quant_range_grad must be min or max, \
                             found `{other}`"
                        )
                        .into())
                    }
                },
                grad_scale: self.float_or("grad_scale", 1.0)?,
            }
            .into(),
            K::Conv2dGradInput => GradOp::Conv2dGradInput {
                conv: self.conv()?,
                input_shape: self.req_usizes("input_shape")?,
            }
            .into(),
            K::Conv2dGradFilter => GradOp::Conv2dGradFilter {
                conv: self.conv()?,
                filter_shape: self.req_usizes("filter_shape")?,
            }
            .into(),
            K::DepthwiseConv2dGradInput => GradOp::DepthwiseConv2dGradInput {
                conv: self.conv()?,
                input_shape: self.req_usizes("input_shape")?,
            }
            .into(),
            K::DepthwiseConv2dGradFilter => GradOp::DepthwiseConv2dGradFilter {
                conv: self.conv()?,
                filter_shape: self.req_usizes("filter_shape")?,
            }
            .into(),
            K::Conv2dTransposeGradInput => GradOp::Conv2dTransposeGradInput {
                conv: self.conv()?,
                input_shape: self.req_usizes("input_shape")?,
            }
            .into(),
            K::Conv2dTransposeGradFilter => GradOp::Conv2dTransposeGradFilter {
                conv: self.conv()?,
                filter_shape: self.req_usizes("filter_shape")?,
            }
            .into(),
            K::DenseGradInput => GradOp::DenseGradInput.into(),
            K::DenseGradWeight => GradOp::DenseGradWeight.into(),
            K::ReduceSum => GradOp::ReduceSum(self.reduce()?).into(),
            K::BatchNormTrain => TrainOp::BatchNormTrain {
                epsilon: self.float_or("epsilon", 1e-3)?,
            }
            .into(),
            K::BatchMean => TrainOp::BatchMean.into(),
            K::BatchVar => TrainOp::BatchVar {
                unbiased: self.bool_or("unbiased", false)?,
            }
            .into(),
            K::BatchNormGradInput => GradOp::BatchNormGradInput {
                epsilon: self.float_or("epsilon", 1e-3)?,
            }
            .into(),
            K::BatchNormGradGamma => GradOp::BatchNormGradGamma {
                epsilon: self.float_or("epsilon", 1e-3)?,
            }
            .into(),
            K::MaxPool2dGrad => GradOp::MaxPool2dGrad(self.pool()?).into(),
            K::AvgPool2dGrad => GradOp::AvgPool2dGrad {
                pool: self.pool()?,
                input_shape: self.req_usizes("input_shape")?,
            }
            .into(),
            K::GlobalAvgPoolGrad => GradOp::GlobalAvgPoolGrad {
                input_shape: self.req_usizes("input_shape")?,
            }
            .into(),
            K::GlobalMaxPoolGrad => GradOp::GlobalMaxPoolGrad.into(),
            K::MeanGrad => GradOp::MeanGrad {
                axes: self.req_usizes("axes")?,
                input_shape: self.req_usizes("input_shape")?,
            }
            .into(),
            K::Slice => GradOp::Slice {
                begin: self.req_usizes("begin")?,
                size: self.req_usizes("size")?,
            }
            .into(),
            K::UpsampleNearestGrad => GradOp::UpsampleNearestGrad {
                scale: self.pair_or("scale", [2, 2])?,
            }
            .into(),
            K::DropoutMask => TrainOp::DropoutMask {
                rate: self.req_float("rate")?,
                seed: self.seed()?,
                shape: self.req_usizes("shape")?,
            }
            .into(),
            K::AllReduce => {
                let word = self.ident_or("reduce", "mean")?;
                let reduce = Reduce::from_name(&word).ok_or_else(|| {
                    format!(
                        "attribute `reduce` of all_reduce must be mean, min or max, found `{word}`"
                    )
                })?;
                TrainOp::AllReduce { reduce }.into()
            }
            K::Pack => TrainOp::Pack.into(),
            K::Unpack => TrainOp::Unpack {
                offset: self.req_usize("offset")?,
                shape: self.req_usizes("shape")?,
            }
            .into(),
            K::MovingAverage => UpdateOp::MovingAverage {
                momentum: self.float_or("momentum", 0.99)?,
            }
            .into(),
            K::SgdVelocity => UpdateOp::SgdVelocity {
                momentum: self.float_or("momentum", 0.0)?,
            }
            .into(),
            K::AdamMoment => UpdateOp::AdamMoment {
                beta: self.float_or("beta", 0.9)?,
            }
            .into(),
            K::AdamMomentSq => UpdateOp::AdamMomentSq {
                beta: self.float_or("beta", 0.999)?,
            }
            .into(),
            K::AdamApply => UpdateOp::AdamApply {
                epsilon: self.float_or("epsilon", 1e-7)?,
            }
            .into(),
            K::ObserveMin => UpdateOp::ObserveMin {
                axis: self.opt_axis()?,
            }
            .into(),
            K::ObserveMax => UpdateOp::ObserveMax {
                axis: self.opt_axis()?,
            }
            .into(),
            K::EmaUpdate => UpdateOp::EmaUpdate {
                decay: self.float_or("decay", 0.999)?,
            }
            .into(),
            K::RunningMin => UpdateOp::RunningMin.into(),
            K::RunningMax => UpdateOp::RunningMax.into(),
        })
    }

    fn finish(&self) -> Result<(), OpError> {
        for (k, _) in &self.attrs {
            if !self.used.contains(&k.as_str()) {
                let mut known: Vec<&str> = self.used.clone();
                known.dedup();
                return Err(OpError(if known.is_empty() {
                    format!("{} takes no attributes, found `{k}`", self.kind.name())
                } else {
                    format!(
                        "unknown attribute `{k}` for {} (it takes: {})",
                        self.kind.name(),
                        known.join(", ")
                    )
                }));
            }
        }
        Ok(())
    }
}
