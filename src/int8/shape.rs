//! Data movement: RESHAPE and SQUEEZE, CONCATENATION, PAD and PADV2, TRANSPOSE, SLICE,
//! STRIDED_SLICE and RESIZE_NEAREST_NEIGHBOR. They copy raw values (of any element type)
//! and never requantize; PAD fills with the output zero point (LiteRT `pad.cc`), PADV2 with
//! its constant, and CONCATENATION requires all int8 operands to share the output's
//! quantization (LiteRT `concatenation.cc`).

use super::array::{Array, Data};
use super::context::{
    checked_numel, const_ints, constant, int8_params, strides, Ctx, KernelError, PResult,
};
use crate::tflite::model::{ElemType, FusedActivation, Options, MAX_RANK};
use crate::tflite::schema::BuiltinOperator as B;

/// `out[i] = src[idx[i]]` for any element type; `None` entries take `fill`.
fn gather(data: &Data, idx: &[Option<usize>], fill: i64) -> Data {
    fn pick<T: Copy>(v: &[T], idx: &[Option<usize>], fill: T) -> Vec<T> {
        idx.iter().map(|i| i.map_or(fill, |i| v[i])).collect()
    }
    match data {
        Data::F32(v) => Data::F32(pick(v, idx, fill as f32)),
        Data::I8(v) => Data::I8(pick(v, idx, fill as i8)),
        Data::I32(v) => Data::I32(pick(v, idx, fill as i32)),
        Data::I64(v) => Data::I64(pick(v, idx, fill)),
        Data::Bool(v) => Data::Bool(pick(v, idx, fill != 0)),
    }
}

/// For each element of a box `out_shape` inside `x_shape` starting at `begin` with
/// `step`s, the source index (a strided window; `begin + k·step` must stay in range).
fn window_indices(
    x_shape: &[usize],
    begin: &[i64],
    step: &[i64],
    out_shape: &[usize],
) -> Vec<Option<usize>> {
    let xs = strides(x_shape);
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..n {
        let mut src = 0i64;
        for d in 0..out_shape.len() {
            src += (begin[d] + idx[d] as i64 * step[d]) * xs[d] as i64;
        }
        out.push(Some(src as usize));
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn axis_of(axis: i64, rank: usize) -> PResult<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(format!("axis {axis} is out of range for rank {rank}").into());
    }
    Ok(a as usize)
}

/// RESHAPE (new shape from the constant second input, else from the options; one entry may
/// be -1) and SQUEEZE (drops size-1 dimensions: the listed ones, or all).
#[derive(Clone, Debug)]
pub struct Reshape {
    /// RESHAPE's requested shape, or `None` for SQUEEZE.
    target: Option<Vec<i64>>,
    /// SQUEEZE's dimensions (empty: every size-1 dimension).
    squeeze: Vec<i64>,
}

impl Reshape {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Reshape> {
        if cx.op.code == B::SQUEEZE {
            cx.inputs_between(1, 1)?;
            let dims = match &cx.op.options {
                Options::Squeeze { dims } => dims.iter().map(|&d| d as i64).collect(),
                _ => Vec::new(),
            };
            return Ok(Reshape {
                target: None,
                squeeze: dims,
            });
        }
        cx.inputs_between(1, 2)?;
        let target = match (cx.opt_input(1), &cx.op.options) {
            (Some(t), _) => {
                if t.shape.len() > 1 {
                    return Err(format!("the shape tensor must be 1-D, found {:?}", t.shape).into());
                }
                const_ints(t, "shape")?
            }
            (None, Options::Reshape { new_shape: Some(s) }) => {
                s.iter().map(|&d| d as i64).collect()
            }
            _ => return Err("has neither a shape input nor ReshapeOptions.new_shape".into()),
        };
        if target.len() > MAX_RANK {
            return Err(format!("the target shape {target:?} has too many dimensions").into());
        }
        Ok(Reshape {
            target: Some(target),
            squeeze: Vec::new(),
        })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        let numel = checked_numel(x)?;
        let Some(target) = &self.target else {
            let dims: Vec<usize> = self
                .squeeze
                .iter()
                .map(|&d| axis_of(d, x.len()))
                .collect::<PResult<_>>()?;
            let mut out = Vec::new();
            for (i, &d) in x.iter().enumerate() {
                let listed = dims.is_empty() || dims.contains(&i);
                if listed && d == 1 {
                    continue;
                }
                if !dims.is_empty() && dims.contains(&i) {
                    return Err(format!("cannot squeeze dimension {i} of size {d}").into());
                }
                out.push(d);
            }
            return Ok(out);
        };
        let unknown = target.iter().filter(|&&d| d == -1).count();
        if unknown > 1 || target.iter().any(|&d| d < -1) {
            return Err(format!("invalid target shape {target:?}").into());
        }
        let known: usize = target
            .iter()
            .filter(|&&d| d >= 0)
            .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
            .ok_or_else(|| KernelError(format!("target shape {target:?} overflows")))?;
        let out: Vec<usize> = target
            .iter()
            .map(|&d| {
                if d == -1 {
                    numel.checked_div(known).unwrap_or(0)
                } else {
                    d as usize
                }
            })
            .collect();
        if checked_numel(&out)? != numel {
            return Err(format!("cannot reshape {x:?} ({numel} elements) to {target:?}").into());
        }
        Ok(out)
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        Ok(Array {
            shape: self.out_shape(&x.shape)?,
            data: x.data.clone(),
        })
    }
}

/// CONCATENATION along `axis`.
#[derive(Clone, Debug)]
pub struct Concat {
    axis: i64,
}

impl Concat {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Concat> {
        if cx.op.inputs.is_empty() {
            return Err("has no inputs".into());
        }
        let Options::Concatenation { axis, activation } = cx.op.options else {
            return Err("has no ConcatenationOptions".into());
        };
        if activation != FusedActivation::None {
            return Err(format!(
                "a fused {} activation on CONCATENATION is not supported",
                activation.name()
            )
            .into());
        }
        let y = cx.output()?;
        if y.dtype == ElemType::I8 {
            let out = int8_params(y)?;
            for i in 0..cx.op.inputs.len() {
                let t = cx.input(i)?;
                if int8_params(t)? != out {
                    return Err(format!(
                        "input `{}` is quantized differently from the output; int8 \
                         CONCATENATION needs identical scales and zero points",
                        t.name
                    )
                    .into());
                }
            }
        }
        Ok(Concat { axis: axis as i64 })
    }

    pub(crate) fn out_shape(&self, xs: &[&[usize]]) -> PResult<Vec<usize>> {
        let first = xs[0];
        let axis = axis_of(self.axis, first.len())?;
        let mut out = first.to_vec();
        for x in &xs[1..] {
            let same = x.len() == first.len()
                && x.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(d, (a, b))| d == axis || a == b);
            if !same {
                return Err(
                    format!("inputs {x:?} and {first:?} differ outside axis {axis}").into(),
                );
            }
            out[axis] += x[axis];
        }
        checked_numel(&out)?;
        Ok(out)
    }

    pub(crate) fn run(&self, xs: &[&Array]) -> PResult<Array> {
        let shapes: Vec<&[usize]> = xs.iter().map(|a| a.shape.as_slice()).collect();
        let out_shape = self.out_shape(&shapes)?;
        let axis = axis_of(self.axis, out_shape.len())?;
        let t = xs[0].elem_type();
        if xs.iter().any(|a| a.elem_type() != t) {
            return Err("inputs have different element types".into());
        }
        let outer: usize = out_shape[..axis].iter().product();
        macro_rules! cat {
            ($variant:ident) => {{
                let mut out = Vec::with_capacity(out_shape.iter().product());
                for o in 0..outer {
                    for a in xs {
                        let Data::$variant(v) = &a.data else {
                            unreachable!()
                        };
                        let chunk: usize = a.shape[axis..].iter().product();
                        out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
                    }
                }
                Data::$variant(out)
            }};
        }
        let data = match &xs[0].data {
            Data::F32(_) => cat!(F32),
            Data::I8(_) => cat!(I8),
            Data::I32(_) => cat!(I32),
            Data::I64(_) => cat!(I64),
            Data::Bool(_) => cat!(Bool),
        };
        Ok(Array {
            shape: out_shape,
            data,
        })
    }
}

/// PAD / PADV2: `[before, after]` per dimension, filled with the output zero point (PAD on
/// int8), 0 (PAD on other types) or PADV2's constant.
#[derive(Clone, Debug)]
pub struct Pad {
    pads: Vec<[usize; 2]>,
    fill: i64,
}

impl Pad {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Pad> {
        let v2 = cx.op.code == B::PADV2;
        if v2 {
            cx.inputs_between(2, 3)?;
        } else {
            cx.inputs_between(2, 2)?;
        }
        let x = cx.input(0)?;
        let p = cx.input(1)?;
        let raw = const_ints(p, "paddings")?;
        if p.shape != [x.shape.len(), 2] {
            return Err(format!(
                "the paddings have shape {:?}, expected [{}, 2]",
                p.shape,
                x.shape.len()
            )
            .into());
        }
        let mut pads = Vec::new();
        for pair in raw.chunks_exact(2) {
            if pair.iter().any(|&v| !(0..=(1 << 24)).contains(&v)) {
                return Err(format!("padding {pair:?} must be non-negative").into());
            }
            pads.push([pair[0] as usize, pair[1] as usize]);
        }
        let y = cx.output()?;
        let mut fill = if y.dtype == ElemType::I8 {
            int8_params(y)?.1 as i64
        } else {
            0
        };
        if let Some(c) = cx.opt_input(2).filter(|_| v2) {
            let a = constant(c, "constant value")?;
            if a.numel() != 1 || a.elem_type() != y.dtype {
                return Err("the constant value must be one element of the output type".into());
            }
            fill = match &a.data {
                Data::F32(v) => v[0] as i64,
                Data::I8(v) => v[0] as i64,
                Data::I32(v) => v[0] as i64,
                Data::I64(v) => v[0],
                Data::Bool(v) => v[0] as i64,
            };
            if a.elem_type() == ElemType::F32 {
                return Err("PADV2 with a float constant is not supported".into());
            }
        }
        Ok(Pad { pads, fill })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        if x.len() != self.pads.len() {
            return Err(format!("the input {x:?} does not have rank {}", self.pads.len()).into());
        }
        let out: Vec<usize> = x
            .iter()
            .zip(&self.pads)
            .map(|(d, p)| d + p[0] + p[1])
            .collect();
        checked_numel(&out)?;
        Ok(out)
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let os = strides(&out_shape);
        let xs = strides(&x.shape);
        let n: usize = out_shape.iter().product();
        let mut idx = Vec::with_capacity(n);
        for i in 0..n {
            let mut src = Some(0usize);
            for d in 0..out_shape.len() {
                let c = (i / os[d]) % out_shape[d];
                let inside = c >= self.pads[d][0] && c < self.pads[d][0] + x.shape[d];
                src = match (src, inside) {
                    (Some(s), true) => Some(s + (c - self.pads[d][0]) * xs[d]),
                    _ => None,
                };
            }
            idx.push(src);
        }
        Ok(Array {
            shape: out_shape,
            data: gather(&x.data, &idx, self.fill),
        })
    }
}

/// TRANSPOSE by a constant permutation.
#[derive(Clone, Debug)]
pub struct Transpose {
    perm: Vec<usize>,
}

impl Transpose {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Transpose> {
        cx.inputs_between(2, 2)?;
        let rank = cx.input(0)?.shape.len();
        let raw = const_ints(cx.input(1)?, "permutation")?;
        let perm: Vec<usize> = raw
            .iter()
            .map(|&p| axis_of(p, rank))
            .collect::<PResult<_>>()?;
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..rank).collect::<Vec<_>>() {
            return Err(format!("{raw:?} is not a permutation of {rank} axes").into());
        }
        Ok(Transpose { perm })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        if x.len() != self.perm.len() {
            return Err(format!("the input {x:?} does not have rank {}", self.perm.len()).into());
        }
        Ok(self.perm.iter().map(|&p| x[p]).collect())
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let xs = strides(&x.shape);
        let step: Vec<i64> = self.perm.iter().map(|&p| xs[p] as i64).collect();
        // a strided window over the input with the permuted strides
        let idx = {
            let n: usize = out_shape.iter().product();
            let mut out = Vec::with_capacity(n);
            let mut c = vec![0usize; out_shape.len()];
            for _ in 0..n {
                let src: i64 = c.iter().zip(&step).map(|(&i, &s)| i as i64 * s).sum();
                out.push(Some(src as usize));
                for d in (0..out_shape.len()).rev() {
                    c[d] += 1;
                    if c[d] < out_shape[d] {
                        break;
                    }
                    c[d] = 0;
                }
            }
            out
        };
        Ok(Array {
            shape: out_shape,
            data: gather(&x.data, &idx, 0),
        })
    }
}

/// SLICE: `begin` and `size` (-1: to the end) per dimension.
#[derive(Clone, Debug)]
pub struct Slice {
    begin: Vec<i64>,
    size: Vec<i64>,
}

impl Slice {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Slice> {
        cx.inputs_between(3, 3)?;
        let begin = const_ints(cx.input(1)?, "begin")?;
        let size = const_ints(cx.input(2)?, "size")?;
        if begin.len() != size.len() {
            return Err("begin and size have different lengths".into());
        }
        Ok(Slice { begin, size })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        if x.len() != self.begin.len() {
            return Err(format!("the input {x:?} does not have rank {}", self.begin.len()).into());
        }
        let mut out = Vec::new();
        for d in 0..x.len() {
            let (b, s, n) = (self.begin[d], self.size[d], x[d] as i64);
            let s = if s == -1 { n - b } else { s };
            if b < 0 || s < 0 || b + s > n {
                return Err(format!(
                    "slice begin {} size {} exceeds dimension {d} of {x:?}",
                    self.begin[d], self.size[d]
                )
                .into());
            }
            out.push(s as usize);
        }
        Ok(out)
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let idx = window_indices(&x.shape, &self.begin, &vec![1; out_shape.len()], &out_shape);
        Ok(Array {
            shape: out_shape,
            data: gather(&x.data, &idx, 0),
        })
    }
}

/// STRIDED_SLICE with begin, end and shrink-axis masks (LiteRT `strided_slice_logic.h`:
/// negative indices count from the end, then clamp to the dimension). Ellipsis, new-axis
/// masks and `offset` are refused.
#[derive(Clone, Debug)]
pub struct StridedSlice {
    begin: Vec<i64>,
    end: Vec<i64>,
    strides: Vec<i64>,
    begin_mask: i32,
    end_mask: i32,
    shrink_mask: i32,
}

impl StridedSlice {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<StridedSlice> {
        cx.inputs_between(4, 4)?;
        let Options::StridedSlice {
            begin_mask,
            end_mask,
            ellipsis_mask,
            new_axis_mask,
            shrink_axis_mask,
            offset,
        } = cx.op.options
        else {
            return Err("has no StridedSliceOptions".into());
        };
        if ellipsis_mask != 0 || new_axis_mask != 0 || offset {
            return Err("ellipsis and new-axis masks and offset=true are not supported".into());
        }
        let begin = const_ints(cx.input(1)?, "begin")?;
        let end = const_ints(cx.input(2)?, "end")?;
        let strides = const_ints(cx.input(3)?, "strides")?;
        if begin.len() != end.len() || begin.len() != strides.len() {
            return Err("begin, end and strides have different lengths".into());
        }
        if strides.contains(&0) {
            return Err("a stride is 0".into());
        }
        Ok(StridedSlice {
            begin,
            end,
            strides,
            begin_mask,
            end_mask,
            shrink_mask: shrink_axis_mask,
        })
    }

    /// Per dimension: `(start, count)` and whether it is shrunk away.
    fn resolve(&self, x: &[usize]) -> PResult<Vec<(i64, usize, bool)>> {
        if x.len() < self.begin.len() {
            return Err(format!(
                "the input {x:?} has fewer than {} dimensions",
                self.begin.len()
            )
            .into());
        }
        let mut out = Vec::new();
        for (d, &size) in x.iter().enumerate() {
            let n = size as i64;
            if d >= self.begin.len() {
                out.push((0, size, false));
                continue;
            }
            let stride = self.strides[d];
            let bit = 1i32.checked_shl(d as u32).unwrap_or(0);
            let clamp = |v: i64| {
                if stride > 0 {
                    v.clamp(0, n)
                } else {
                    v.clamp(-1, n - 1)
                }
            };
            let mut start = if self.begin_mask & bit != 0 {
                if stride > 0 {
                    i64::from(i32::MIN)
                } else {
                    i64::from(i32::MAX)
                }
            } else {
                self.begin[d]
            };
            if start < 0 {
                start += n;
            }
            start = clamp(start);
            let shrink = self.shrink_mask & bit != 0;
            let stop = if shrink {
                start + 1
            } else {
                let mut stop = if self.end_mask & bit != 0 {
                    if stride > 0 {
                        i64::from(i32::MAX)
                    } else {
                        i64::from(i32::MIN)
                    }
                } else {
                    self.end[d]
                };
                if stop < 0 {
                    stop += n;
                }
                clamp(stop)
            };
            let count = if stride > 0 {
                if stop > start {
                    (stop - start + stride - 1) / stride
                } else {
                    0
                }
            } else if stop < start {
                (start - stop + (-stride) - 1) / (-stride)
            } else {
                0
            };
            if shrink && (count != 1 || start < 0 || start >= n) {
                return Err(
                    format!("cannot shrink dimension {d} at index {}", self.begin[d]).into(),
                );
            }
            out.push((start, count as usize, shrink));
        }
        Ok(out)
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        Ok(self
            .resolve(x)?
            .into_iter()
            .filter(|r| !r.2)
            .map(|r| r.1)
            .collect())
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let r = self.resolve(&x.shape)?;
        let begin: Vec<i64> = r.iter().map(|r| r.0).collect();
        let counts: Vec<usize> = r.iter().map(|r| r.1).collect();
        let steps: Vec<i64> = (0..x.shape.len())
            .map(|d| self.strides.get(d).copied().unwrap_or(1))
            .collect();
        let idx = window_indices(&x.shape, &begin, &steps, &counts);
        Ok(Array {
            shape: self.out_shape(&x.shape)?,
            data: gather(&x.data, &idx, 0),
        })
    }
}

/// RESIZE_NEAREST_NEIGHBOR on `[n,h,w,c]` to the constant size `[oh, ow]` (LiteRT
/// `GetNearestNeighbor`: the source index is `floor((o + offset) · in/out)` in float32,
/// `round` with align_corners, clamped to the input).
#[derive(Clone, Debug)]
pub struct ResizeNearest {
    size: [usize; 2],
    align_corners: bool,
    half_pixel_centers: bool,
}

impl ResizeNearest {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<ResizeNearest> {
        cx.inputs_between(2, 2)?;
        let size = const_ints(cx.input(1)?, "size")?;
        if size.len() != 2 || size.iter().any(|&s| s <= 0 || s > 1 << 24) {
            return Err(format!("the size {size:?} must be two positive sizes").into());
        }
        let (align_corners, half_pixel_centers) = match cx.op.options {
            Options::ResizeNearestNeighbor {
                align_corners,
                half_pixel_centers,
            } => (align_corners, half_pixel_centers),
            Options::None => (false, false),
            _ => return Err("has options of another op".into()),
        };
        Ok(ResizeNearest {
            size: [size[0] as usize, size[1] as usize],
            align_corners,
            half_pixel_centers,
        })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        let [n, _, _, c] = <[usize; 4]>::try_from(x)
            .map_err(|_| KernelError(format!("the input must have rank 4, found {x:?}")))?;
        let out = vec![n, self.size[0], self.size[1], c];
        checked_numel(&out)?;
        Ok(out)
    }

    fn source(&self, o: usize, input: usize, output: usize) -> usize {
        let scale = if self.align_corners && output > 1 {
            (input - 1) as f32 / (output - 1) as f32
        } else {
            input as f32 / output as f32
        };
        let offset = if self.half_pixel_centers { 0.5f32 } else { 0.0 };
        let v = (o as f32 + offset) * scale;
        let v = if self.align_corners {
            v.round() as i64
        } else {
            v.floor() as i64
        };
        v.clamp(0, input as i64 - 1) as usize
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let [n, h, w, c] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
        if h == 0 || w == 0 {
            return Err("the input image is empty".into());
        }
        let [oh, ow] = self.size;
        let ys: Vec<usize> = (0..oh).map(|o| self.source(o, h, oh)).collect();
        let xs: Vec<usize> = (0..ow).map(|o| self.source(o, w, ow)).collect();
        let mut idx = Vec::with_capacity(n * oh * ow * c);
        for b in 0..n {
            for &iy in &ys {
                for &ix in &xs {
                    for ch in 0..c {
                        idx.push(Some(((b * h + iy) * w + ix) * c + ch));
                    }
                }
            }
        }
        Ok(Array {
            shape: out_shape,
            data: gather(&x.data, &idx, 0),
        })
    }
}
