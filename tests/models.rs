//! The reference-model builders against their `.qir` twins in `examples/`: identical IR,
//! Keras' parameter counts and initializers, and rebatching.

use qatc::ir::builder::Model;
use qatc::ir::op::ModelOp;
use qatc::ir::{text, verify, Graph, Op};
use qatc::models;
use std::path::Path;

fn example(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.qir"));
    text::parse_file(&path).unwrap()
}

fn build(name: &str, seed: u64) -> Model {
    models::by_name(name, seed).unwrap()
}

#[test]
fn builders_print_exactly_as_the_examples() {
    for name in models::NAMES {
        let built = build(name, 0);
        let from_text = example(name);
        assert_eq!(text::print(&built.graph), text::print(&from_text), "{name}");
        // and the example file is that text, byte for byte
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.qir"));
        assert_eq!(
            text::print(&built.graph),
            std::fs::read_to_string(path).unwrap()
        );
        // the builder's weights cover the example's params, shape for shape
        verify::verify_with_params(&from_text, &built.params).unwrap();
    }
    assert_eq!(
        text::print(&models::mnist_cnn(0).unwrap().graph),
        text::print(&example("mnist_cnn"))
    );
    assert_eq!(
        text::print(&models::mbv2_tiny(0).unwrap().graph),
        text::print(&example("mbv2_tiny"))
    );
}

/// Shape of the node called `name`.
fn shape(g: &Graph, name: &str) -> Vec<usize> {
    g.node(g.find(name).unwrap_or_else(|| panic!("no node {name}")))
        .ty
        .shape
        .clone()
}

#[test]
fn rebatch_to_32_reinfers_every_shape() {
    let mut g = build("mnist_cnn", 0).graph;
    g.rebatch(32).unwrap();
    verify::verify(&g).unwrap();
    assert_eq!(g.batch(), Some(32));
    // 28 - 3 + 1 = 26; pooled 13; 13*13*12 = 2028
    assert_eq!(shape(&g, "input"), [32, 28, 28, 1]);
    assert_eq!(shape(&g, "conv2d"), [32, 26, 26, 12]);
    assert_eq!(shape(&g, "max_pooling2d"), [32, 13, 13, 12]);
    assert_eq!(shape(&g, "flatten"), [32, 2028]);
    assert_eq!(shape(&g, "dense"), [32, 10]);
    assert_eq!(
        shape(&g, "dense.kernel"),
        [10, 2028],
        "params keep their shapes"
    );

    let mut g = build("mbv2_tiny", 0).graph;
    g.rebatch(32).unwrap();
    verify::verify(&g).unwrap();
    // stride-2 SAME conv: 28 -> 14; the second block's stride-2 depthwise: 14 -> 7
    assert_eq!(shape(&g, "conv2d"), [32, 14, 14, 16]);
    assert_eq!(shape(&g, "depthwise_conv2d_1"), [32, 7, 7, 64]);
    assert_eq!(shape(&g, "add"), [32, 14, 14, 16]);
    assert_eq!(shape(&g, "add_1"), [32, 7, 7, 24]);
    assert_eq!(shape(&g, "global_average_pooling2d"), [32, 64]);
    assert_eq!(shape(&g, "dense"), [32, 10]);
    // every value but the params carries the batch
    for id in g.canonical_order() {
        let node = g.node(id);
        if node.op != Op::Model(ModelOp::Param) {
            assert_eq!(node.ty.shape[0], 32, "{}", node.name);
        }
    }
}

#[test]
fn rebatch_matches_the_rebatched_example_and_comes_back() {
    for name in models::NAMES {
        let mut built = build(name, 0).graph;
        let mut parsed = example(name);
        let original = text::print(&built);
        built.rebatch(32).unwrap();
        parsed.rebatch(32).unwrap();
        assert_eq!(text::print(&built), text::print(&parsed), "{name}");
        built.rebatch(1).unwrap();
        assert_eq!(text::print(&built), original, "{name}");
    }
}

#[test]
fn parameter_counts_are_keras_counts() {
    // mnist_cnn: conv 3*3*1*12 + 12 = 120, dense 2028*10 + 10 = 20290 -> 20410
    assert_eq!(build("mnist_cnn", 0).params.total_elements(), 20_410);
    // mbv2_tiny, BatchNorm counted with its 4 vectors as Keras does:
    //   stem conv 16*3*3 = 144 + BN 4*16 = 64                                  =    208
    //   block 16->16: 1x1 64*16 + BN 256, dw 9*64 + BN 256, 1x1 16*64 + BN 64 =  3 200
    //   block 16->24: 1024 + 256, 576 + 256, 24*64 + BN 96                    =  3 744
    //   block 24->24: 96*24 + BN 384, 9*96 + BN 384, 24*96 + BN 96            =  6 336
    //   head 1x1 64*24 + BN 256 = 1792; dense 64*10 + 10 = 650                =  2 442
    assert_eq!(build("mbv2_tiny", 0).params.total_elements(), 15_930);
    // the MLPerf Tiny networks and MobileNetV2 at their default shapes: Keras' model.summary()
    // totals (BatchNorm's four vectors counted)
    assert_eq!(build("resnet8", 0).params.total_elements(), 78_666);
    assert_eq!(build("ds_cnn", 0).params.total_elements(), 24_908);
    assert_eq!(
        build("mobilenet_v1_025", 0).params.total_elements(),
        221_794
    );
    assert_eq!(
        build("mobilenet_v2_035", 0).params.total_elements(),
        412_770
    );
}

/// `he_normal` kernels (ResNet-8, MobileNetV1's pointwise convs): a normal truncated at two
/// standard deviations of `sqrt(2 / fan_in) / 0.8796`, so with the truncation the spread is
/// `sqrt(2 / fan_in)`; recorded in the `.qir` so `init_params` draws them the same way.
#[test]
fn he_normal_kernels_have_kerass_spread() {
    let m = build("resnet8", 3);
    let k = m.params.get("conv2d_7.kernel").unwrap(); // [64, 3, 3, 64]: fan_in 576
    let std = (2.0f64 / 576.0).sqrt();
    let limit = 2.0 * std / 0.879_625_661_034_239_8;
    assert!(k.data.iter().all(|&w| (w as f64).abs() <= limit + 1e-7));
    let n = k.data.len() as f64;
    let mean = k.data.iter().map(|&w| w as f64).sum::<f64>() / n;
    let var = k
        .data
        .iter()
        .map(|&w| (w as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 0.05 * std, "mean {mean}");
    assert!(
        (var.sqrt() / std - 1.0).abs() < 0.03,
        "std {} vs {std}",
        var.sqrt()
    );
    assert!(
        example("resnet8").initializer("conv2d_7.kernel") == qatc::ir::graph::Initializer::HeNormal
    );
    // depthwise kernels stay glorot_uniform (the reference passes he_normal where Keras 2
    // ignores it)
    let g = example("mobilenet_v1_025");
    assert_eq!(
        g.initializer("depthwise_conv2d.kernel"),
        qatc::ir::graph::Initializer::GlorotUniform
    );
}

/// Like Keras applications, the builders take the input shape and the class count.
#[test]
fn reference_models_take_input_shape_and_classes() {
    for name in ["resnet8", "mobilenet_v2_035", "mobilenet_v1_025", "ds_cnn"] {
        let m = models::build(name, 0, Some(&[28, 28, 1]), Some(10)).unwrap();
        let g = &m.graph;
        assert_eq!(g.node(g.inputs()[0]).ty.shape, [1, 28, 28, 1], "{name}");
        assert_eq!(g.node(g.outputs()[0].node).ty.shape, [1, 10], "{name}");
    }
    let e = models::build("resnet8", 0, Some(&[28, 28]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("H,W,C"), "{e}");
}

#[test]
fn initializers_are_keras_defaults_and_seeded() {
    let m = build("mnist_cnn", 0);
    // Glorot uniform: |w| < sqrt(6 / (fan_in + fan_out)); conv fan_in 3*3*1, fan_out 3*3*12
    let limit = (6.0f32 / (9.0 + 108.0)).sqrt();
    let k = m.params.get("conv2d.kernel").unwrap();
    assert!(k.data.iter().all(|w| w.abs() < limit));
    // and spread over the range, not all tiny: some weight beyond half the limit
    assert!(k.data.iter().any(|w| w.abs() > limit / 2.0));
    let limit = (6.0f32 / (2028.0 + 10.0)).sqrt();
    assert!(m
        .params
        .get("dense.kernel")
        .unwrap()
        .data
        .iter()
        .all(|w| w.abs() < limit));
    assert!(m
        .params
        .get("dense.bias")
        .unwrap()
        .data
        .iter()
        .all(|&b| b == 0.0));
    // BatchNorm: gamma 1, beta 0, moving mean 0, moving variance 1
    let m = build("mbv2_tiny", 0);
    for (p, v) in [
        ("gamma", 1.0),
        ("beta", 0.0),
        ("moving_mean", 0.0),
        ("moving_variance", 1.0),
    ] {
        let t = m.params.get(&format!("batch_normalization_3.{p}")).unwrap();
        assert!(t.data.iter().all(|&x| x == v), "{p}");
    }
    // the same seed gives the same weights; another seed others
    assert_eq!(build("mbv2_tiny", 0).params, m.params);
    assert_ne!(build("mbv2_tiny", 1).params, m.params);
}

#[test]
fn unknown_model_names_list_the_known_ones() {
    let e = models::by_name("resnet50", 0).unwrap_err().to_string();
    assert!(
        e.contains("resnet50") && e.contains("mnist_cnn") && e.contains("mbv2_tiny"),
        "{e}"
    );
}

/// A `.qir` without weights gets Keras' initial values, and with the builder's seed exactly
/// the builder's weights: the reference models written as text train like the built ones.
#[test]
fn init_params_of_the_examples_reproduces_the_builders() {
    for name in models::NAMES {
        for seed in [0, 7] {
            let g = example(name);
            let p = qatc::ir::builder::init_params(&g, seed).unwrap();
            let built = build(name, seed);
            assert_eq!(p.len(), built.params.len(), "{name}");
            for (pname, t) in built.params.iter() {
                let got = p
                    .get(pname)
                    .unwrap_or_else(|| panic!("{name}: {pname} missing"));
                assert_eq!(got.shape, t.shape, "{name}: {pname}");
                assert!(
                    got.data
                        .iter()
                        .zip(&t.data)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} seed {seed}: {pname} differs from the builder's"
                );
            }
        }
    }
}

#[test]
fn init_params_names_a_param_it_cannot_initialize() {
    let src = "model \"m\"\nparam @c : f32[4]\n%0 = input \"x\" : f32[1,4]\n\
               %1 = add \"add\" (%0, @c) : f32[1,4]\noutput \"y\" = %1\n";
    let g = text::parse(src, "m.qir").unwrap();
    let e = qatc::ir::builder::init_params(&g, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`c`") && e.contains("`add`") && e.contains(".safetensors"),
        "{e}"
    );
}
