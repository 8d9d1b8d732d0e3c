//! Kernel tests with numbers worked out by hand, on one-operator models written with
//! [`crate::tflite::write`]. (Bit-exactness against LiteRT itself is `tests/tflite_interop.rs`.)

use super::{Array, Interpreter};
use crate::tflite::model::{
    Data, ElemType, FusedActivation, Model, Operator, Options, PaddingMode, QuantParams, Tensor,
};
use crate::tflite::schema::{BuiltinOperator as B, BuiltinOptions};
use crate::tflite::write;

fn int8(name: &str, shape: &[usize], scale: f32, zp: i32) -> Tensor {
    Tensor {
        quant: Some(QuantParams::per_tensor(scale, zp)),
        ..Tensor::new(name, shape.to_vec(), ElemType::I8)
    }
}

fn ints(name: &str, v: &[i32]) -> Tensor {
    Tensor::constant(name, vec![v.len()], &Data::I32(v.to_vec()))
}

/// A model of one operator: `inputs` are graph inputs (activations) or constants.
fn one_op(code: B, tensors: Vec<Tensor>, options: Options) -> Interpreter {
    let n = tensors.len();
    let inputs: Vec<usize> = (0..n - 1).filter(|&i| tensors[i].data.is_none()).collect();
    let op_inputs: Vec<usize> = (0..n - 1).collect();
    let m = Model {
        tensors,
        operators: vec![Operator::new(code, 2, &op_inputs, &[n - 1], options)],
        inputs,
        outputs: vec![n - 1],
        ..Default::default()
    };
    Interpreter::new(&write(&m).unwrap()).unwrap()
}

fn run(it: &Interpreter, xs: &[(&[usize], &[i8])]) -> Vec<i8> {
    let arrays: Vec<Array> = xs
        .iter()
        .map(|(s, v)| Array::i8(s.to_vec(), v.to_vec()).unwrap())
        .collect();
    it.run(&arrays).unwrap()[0].as_i8().unwrap().to_vec()
}

#[test]
fn average_pool_rounds_half_away_and_skips_padding() {
    // 2x2 input [[1, 2], [-3, -4]] (scale 1, zp 0), 2x2 window, SAME, stride 1:
    // (0,0) averages all four: -4/4 = -1; (0,1) averages 2 and -4: -2/2 = -1;
    // (1,0): (-3 - 4)/2 = -3.5 -> -4 (away from zero); (1,1): -4
    let it = one_op(
        B::AVERAGE_POOL_2D,
        vec![
            int8("x", &[1, 2, 2, 1], 1.0, 0),
            int8("y", &[1, 2, 2, 1], 1.0, 0),
        ],
        Options::Pool2d {
            padding: PaddingMode::Same,
            stride_h: 1,
            stride_w: 1,
            filter_h: 2,
            filter_w: 2,
            activation: FusedActivation::None,
        },
    );
    assert_eq!(
        run(&it, &[(&[1, 2, 2, 1], &[1, 2, -3, -4])]),
        [-1, -1, -4, -4]
    );
    // positive halves round up: [1, 2] -> 1.5 -> 2
    assert_eq!(run(&it, &[(&[1, 2, 2, 1], &[1, 2, 1, 2])]), [2, 2, 2, 2]);
}

#[test]
fn add_rescales_both_inputs() {
    // x1 at scale 0.5 (zp 0), x2 at scale 0.25 (zp 0), output scale 0.5 (zp -10):
    // 6·0.5 + 4·0.25 = 4.0 -> 4/0.5 - 10 = -2
    let it = one_op(
        B::ADD,
        vec![
            int8("a", &[1, 1], 0.5, 0),
            int8("b", &[1, 1], 0.25, 0),
            int8("y", &[1, 1], 0.5, -10),
        ],
        Options::Add {
            activation: FusedActivation::None,
        },
    );
    assert_eq!(run(&it, &[(&[1, 1], &[6]), (&[1, 1], &[4])]), [-2]);
    // with RELU the output clamps at the quantized 0.0 (= zp -10)
    let it = one_op(
        B::ADD,
        vec![
            int8("a", &[1, 1], 0.5, 0),
            int8("b", &[1, 1], 0.25, 0),
            int8("y", &[1, 1], 0.5, -10),
        ],
        Options::Add {
            activation: FusedActivation::Relu,
        },
    );
    assert_eq!(run(&it, &[(&[1, 1], &[-6]), (&[1, 1], &[4])]), [-10]);
}

#[test]
fn softmax_of_equal_logits_is_uniform() {
    // four equal logits: 1/4 each -> 0.25·256 - 128 = -64
    let it = one_op(
        B::SOFTMAX,
        vec![
            int8("x", &[1, 4], 0.1, 0),
            int8("y", &[1, 4], 1.0 / 256.0, -128),
        ],
        Options::Softmax { beta: 1.0 },
    );
    assert_eq!(run(&it, &[(&[1, 4], &[7, 7, 7, 7])]), [-64; 4]);
    // one logit far above the others takes (almost) everything: 255/256 -> 127
    assert_eq!(run(&it, &[(&[1, 4], &[127, -128, -128, -128])])[0], 127);
}

#[test]
fn mean_divides_by_the_count() {
    // mean of [1, 2, 3, 6] over the last axis, same scale: 12/4 = 3
    let it = one_op(
        B::MEAN,
        vec![
            int8("x", &[1, 4], 0.5, 0),
            ints("axes", &[1]),
            int8("y", &[1], 0.5, 0),
        ],
        Options::Reducer { keep_dims: false },
    );
    assert_eq!(run(&it, &[(&[1, 4], &[1, 2, 3, 6])]), [3]);
    // zero points cancel: values 11, 12, 13, 16 with zp 10 mean 3 above zp 10
    let it = one_op(
        B::MEAN,
        vec![
            int8("x", &[1, 4], 0.5, 10),
            ints("axes", &[1]),
            int8("y", &[1], 0.5, 10),
        ],
        Options::Reducer { keep_dims: false },
    );
    assert_eq!(run(&it, &[(&[1, 4], &[11, 12, 13, 16])]), [13]);
}

#[test]
fn requantize_and_hard_swish_points() {
    // QUANTIZE int8 -> int8 from scale 1 to scale 0.5 doubles (and saturates)
    let it = one_op(
        B::QUANTIZE,
        vec![int8("x", &[3], 1.0, 0), int8("y", &[3], 0.5, 0)],
        Options::Empty(BuiltinOptions::QuantizeOptions),
    );
    assert_eq!(run(&it, &[(&[3], &[3, -7, 100])]), [6, -14, 127]);
    // hard_swish(x) = x·relu6(x + 3)/6: 0 -> 0, 3 -> 3, -3 -> 0, 6 -> 6 (scale 0.1)
    let it = one_op(
        B::HARD_SWISH,
        vec![int8("x", &[4], 0.1, 0), int8("y", &[4], 0.1, 0)],
        Options::Empty(BuiltinOptions::HardSwishOptions),
    );
    assert_eq!(run(&it, &[(&[4], &[0, 30, -30, 60])]), [0, 30, 0, 60]);
}

#[test]
fn shape_mismatches_are_errors() {
    let it = one_op(
        B::ADD,
        vec![
            int8("a", &[1, 3], 0.5, 0),
            int8("b", &[1, 3], 0.5, 0),
            int8("y", &[1, 3], 0.5, 0),
        ],
        Options::Add {
            activation: FusedActivation::None,
        },
    );
    let a = Array::i8(vec![1, 3], vec![0; 3]).unwrap();
    let b = Array::i8(vec![1, 4], vec![0; 4]).unwrap();
    let err = it.run(&[a.clone(), b]).unwrap_err().to_string();
    assert!(err.contains("input `b`") && err.contains("[1, 3]"), "{err}");
    let err = it.run(&[a]).unwrap_err().to_string();
    assert!(err.contains("2 input"), "{err}");
}

/// A grouped CONV_2D (filter with half the input channels: two groups): output channel 0
/// reads input channels 0 and 1, channel 1 reads 2 and 3. Unit scales make the outputs the
/// accumulators: `1·1 + 1·2 = 3` and `2·3 − 1·4 = 2` (reading the wrong group would give 0).
#[test]
fn grouped_conv_reads_its_own_group() {
    let filter = Tensor {
        quant: Some(QuantParams {
            scale: vec![1.0, 1.0],
            zero_point: vec![0, 0],
            axis: 0,
        }),
        ..Tensor::constant("w", vec![2, 1, 1, 2], &Data::I8(vec![1, 1, 2, -1]))
    };
    let it = one_op(
        B::CONV_2D,
        vec![
            int8("x", &[1, 1, 1, 4], 1.0, 0),
            filter,
            ints("b", &[0, 0]),
            int8("y", &[1, 1, 1, 2], 1.0, 0),
        ],
        Options::Conv2d {
            padding: PaddingMode::Valid,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            activation: FusedActivation::None,
        },
    );
    assert_eq!(run(&it, &[(&[1, 1, 1, 4], &[1, 2, 3, 4])]), vec![3, 2]);
}

/// The fast kernels ([`super::Kernels::Fast`], 8-bit dot products where the CPU has them)
/// against the reference loops they replace, on random CONV_2D, DEPTHWISE_CONV_2D and
/// ADD/SUB operators: every output bit equal. The shapes cover input channels that are (not)
/// a multiple of 4, output channels that are (not) a multiple of 16, 1x1 convolutions read
/// in place, more pixels than one chunk, strides, dilation, both paddings, the extreme zero
/// points, multipliers above one and accumulators that wrap.
mod fast_vs_reference {
    use super::*;
    use crate::int8::{Kernels, Options as RunOptions};
    use rand::{RngExt, SeedableRng};

    fn both(model: &Model) -> [Interpreter; 2] {
        if crate::int8::dot8::Vnni::detect().is_none() {
            eprintln!("this CPU has no AVX-512 VNNI: the fast kernels fall back to the reference");
        }
        let bytes = write(model).unwrap();
        [Kernels::Fast, Kernels::Reference].map(|kernels| {
            let options = RunOptions {
                kernels,
                ..Default::default()
            };
            Interpreter::with_options(&bytes, options).unwrap()
        })
    }

    fn random_i8(r: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| r.random_range(-128i32..=127) as i8)
            .collect()
    }

    /// One random windowed operator (CONV_2D or DEPTHWISE_CONV_2D) on input `x` ([n, h, w,
    /// c]): a filter of shape `filter` quantized per axis `axis` over the `oc` output
    /// channels, biases anywhere in i32 (so accumulator plus bias wraps for some channels),
    /// output `[n, oh, ow, oc]`. Fast and reference kernels must give the same bits.
    #[allow(clippy::too_many_arguments)]
    fn check_window_op(
        r: &mut rand_chacha::ChaCha8Rng,
        (code, options): (B, Options),
        x: [usize; 4],
        (filter, axis): (Vec<usize>, usize),
        [oh, ow, oc]: [usize; 3],
        (zp, out_scale): (i32, f32),
        what: &str,
    ) {
        let scales: Vec<f32> = (0..oc).map(|_| r.random_range(0.001..0.05)).collect();
        let len = filter.iter().product();
        let filter = Tensor {
            quant: Some(QuantParams {
                scale: scales,
                zero_point: vec![0; oc],
                axis,
            }),
            ..Tensor::constant("w", filter, &Data::I8(random_i8(r, len)))
        };
        let bias: Vec<i32> = (0..oc)
            .map(|c| match c % 3 {
                0 => r.random_range(i32::MIN..=i32::MAX),
                _ => r.random_range(-5000..5000),
            })
            .collect();
        let [n, ..] = x;
        let m = Model {
            tensors: vec![
                int8("x", &x, 0.05, zp),
                filter,
                ints("b", &bias),
                int8("y", &[n, oh, ow, oc], out_scale, r.random_range(-20..20)),
            ],
            operators: vec![Operator::new(code, 2, &[0, 1, 2], &[3], options)],
            inputs: vec![0],
            outputs: vec![3],
            ..Default::default()
        };
        let [fast, reference] = both(&m);
        let input = random_i8(r, x.iter().product());
        assert_eq!(
            run(&fast, &[(&x, &input)]),
            run(&reference, &[(&x, &input)]),
            "{what}, input zero point {zp}"
        );
    }

    /// Output size of a window along one axis.
    fn window_out(size: usize, k: usize, stride: usize, dilation: usize, p: PaddingMode) -> usize {
        match p {
            PaddingMode::Valid => (size - dilation * (k - 1) - 1) / stride + 1,
            _ => size.div_ceil(stride),
        }
    }

    #[test]
    fn conv2d_matches_the_reference_loops() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // (ic, oc, k, stride, dilation, padding)
        let cases = [
            (1, 16, 3, 1, 1, PaddingMode::Same),
            (3, 5, 3, 2, 1, PaddingMode::Same),
            (4, 16, 3, 1, 1, PaddingMode::Same),
            (8, 17, 1, 1, 1, PaddingMode::Valid),
            (24, 24, 1, 1, 1, PaddingMode::Same),
            (6, 16, 1, 2, 1, PaddingMode::Valid),
            (16, 32, 3, 2, 1, PaddingMode::Same),
            (12, 40, 3, 1, 2, PaddingMode::Same),
            (20, 7, 5, 1, 1, PaddingMode::Valid),
            (64, 64, 3, 1, 1, PaddingMode::Same),
        ];
        for (case, &(ic, oc, k, stride, dilation, padding)) in cases.iter().enumerate() {
            for zp in [-128, 0, 127, r.random_range(-128..=127)] {
                let (h, w, n) = (7, 6, 2);
                // some output scales small enough for multipliers above one
                let out_scale = if case % 2 == 0 { 0.02 } else { 0.0002 };
                let options = Options::Conv2d {
                    padding,
                    stride_h: stride as i32,
                    stride_w: stride as i32,
                    dilation_h: dilation as i32,
                    dilation_w: dilation as i32,
                    activation: if case % 3 == 0 {
                        FusedActivation::Relu
                    } else {
                        FusedActivation::None
                    },
                };
                let out = |size| window_out(size, k, stride, dilation, padding);
                check_window_op(
                    &mut r,
                    (B::CONV_2D, options),
                    [n, h, w, ic],
                    (vec![oc, k, k, ic], 0),
                    [out(h), out(w), oc],
                    (zp, out_scale),
                    &format!(
                        "case {case} (ic {ic}, oc {oc}, k {k}, stride {stride}, dilation \
                         {dilation}, {padding:?})"
                    ),
                );
            }
        }
    }

    #[test]
    fn depthwise_conv2d_matches_the_reference_loops() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        // (channels, k, stride, padding)
        let cases = [
            (1, 3, 1, PaddingMode::Same),
            (16, 3, 1, PaddingMode::Same),
            (24, 3, 2, PaddingMode::Same),
            (40, 3, 1, PaddingMode::Valid),
            (7, 5, 2, PaddingMode::Same),
        ];
        for (case, &(ch, k, stride, padding)) in cases.iter().enumerate() {
            for zp in [-128, 127, r.random_range(-128..=127)] {
                let (h, w, n) = (9, 8, 2);
                let out_scale = if case % 2 == 0 { 0.02 } else { 0.0002 };
                let options = Options::DepthwiseConv2d {
                    padding,
                    stride_h: stride as i32,
                    stride_w: stride as i32,
                    dilation_h: 1,
                    dilation_w: 1,
                    depth_multiplier: 1,
                    activation: if case % 2 == 0 {
                        FusedActivation::Relu6
                    } else {
                        FusedActivation::None
                    },
                };
                let out = |size| window_out(size, k, stride, 1, padding);
                check_window_op(
                    &mut r,
                    (B::DEPTHWISE_CONV_2D, options),
                    [n, h, w, ch],
                    (vec![1, k, k, ch], 3),
                    [out(h), out(w), ch],
                    (zp, out_scale),
                    &format!("case {case} (channels {ch}, k {k}, stride {stride}, {padding:?})"),
                );
            }
        }
    }

    #[test]
    fn add_and_sub_match_the_reference_loops() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        for (code, options) in [
            (
                B::ADD,
                Options::Add {
                    activation: FusedActivation::None,
                },
            ),
            (
                B::SUB,
                Options::Sub {
                    activation: FusedActivation::Relu6,
                },
            ),
        ] {
            for len in [1, 15, 16, 33, 1000] {
                let s: Vec<f32> = (0..3).map(|_| r.random_range(0.01..0.2)).collect();
                let z: Vec<i32> = (0..3).map(|_| r.random_range(-128..=127)).collect();
                let m = Model {
                    tensors: vec![
                        int8("a", &[1, len], s[0], z[0]),
                        int8("b", &[1, len], s[1], z[1]),
                        int8("y", &[1, len], s[2], z[2]),
                    ],
                    operators: vec![Operator::new(code, 1, &[0, 1], &[2], options.clone())],
                    inputs: vec![0, 1],
                    outputs: vec![2],
                    ..Default::default()
                };
                let [fast, reference] = both(&m);
                let (a, b) = (random_i8(&mut r, len), random_i8(&mut r, len));
                let shape = [1, len];
                assert_eq!(
                    run(&fast, &[(&shape, &a), (&shape, &b)]),
                    run(&reference, &[(&shape, &a), (&shape, &b)]),
                    "{code:?} of {len} elements"
                );
            }
        }
    }
}
