//! Verifier and graph-editing errors that `.qir` text cannot express (the parser refuses
//! it first), reached through the graph API as passes and importers would.

use qatc::ir::op::ModelOp;
use qatc::ir::op::{Activation, FakeQuantAttrs, F32};
use qatc::ir::verify::verify;
use qatc::ir::{DType, Graph, Op, TensorType};

fn relu_chain() -> (Graph, [qatc::ir::NodeId; 3]) {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::f32(vec![1, 4])).unwrap();
    let a = g.add(Op::Model(ModelOp::Relu), "a", &[x]).unwrap();
    let b = g.add(Op::Model(ModelOp::Relu), "b", &[a]).unwrap();
    g.add_output("y", b);
    verify(&g).unwrap();
    (g, [x, a, b])
}

#[track_caller]
fn fails(g: &Graph, needles: &[&str]) {
    let e = verify(g).unwrap_err().to_string();
    for n in needles {
        assert!(e.contains(n), "`{n}` missing from: {e}");
    }
}

#[test]
fn a_cycle_is_named() {
    let (mut g, [_, a, b]) = relu_chain();
    g.set_operand(a, 0, b);
    fails(&g, &["graph `g`", "cycle", "node `"]);
}

#[test]
fn updates_of_unknown_params_and_of_non_params() {
    let (mut g, [x, ..]) = relu_chain();
    g.add_update("ghost", x);
    fails(&g, &["unknown param `ghost`", "`x`"]);
    let (mut g, [x, ..]) = relu_chain();
    g.add_update("a", x);
    fails(&g, &["update of `a`", "relu node, not a param"]);
}

#[test]
fn operand_indices_must_be_dense() {
    let (mut g, [x, a, _]) = relu_chain();
    let s = g
        .add(
            Op::Model(ModelOp::Add {
                activation: Activation::None,
            }),
            "s",
            &[x, a],
        )
        .unwrap();
    g.add_output("s", s);
    // an edge at index 5 leaves 2..5 empty
    g.set_operand(s, 5, x);
    fails(
        &g,
        &["node `s` (add)", "operand 2 is missing or duplicated"],
    );
}

#[test]
fn non_finite_attributes_are_refused() {
    // the .qir lexer refuses `inf`/`nan`; an API-built op is caught by the verifier
    let (mut g, [x, ..]) = relu_chain();
    let op = Op::Model(ModelOp::LeakyRelu {
        alpha: F32(f32::NAN),
    });
    let n = g
        .add_typed(op, "leaky", &[x], TensorType::f32(vec![1, 4]))
        .unwrap();
    g.add_output("l", n);
    fails(
        &g,
        &[
            "node `leaky` (leaky_relu)",
            "attribute `alpha` must be a finite number",
        ],
    );
    // Graph::add infers, so it refuses at once
    let e = g
        .add(
            Op::Model(ModelOp::Dropout {
                rate: F32(f32::INFINITY),
            }),
            "d",
            &[x],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node `d` (dropout)") && e.contains("`rate`"),
        "{e}"
    );
}

#[test]
fn an_input_with_operands_and_a_non_f32_param() {
    let (mut g, [x, ..]) = relu_chain();
    let other = g.add_input("other", TensorType::f32(vec![1])).unwrap();
    g.set_operand(other, 0, x);
    fails(&g, &["node `other` (input)", "takes no operands"]);
    let (mut g, [x, ..]) = relu_chain();
    let p = g.param("p", TensorType::new(DType::I8, vec![4])).unwrap();
    let m = g
        .add_typed(
            Op::Model(ModelOp::Mul {
                activation: Activation::None,
            }),
            "m",
            &[x, p],
            TensorType::f32(vec![1, 4]),
        )
        .unwrap();
    g.add_output("m", m);
    fails(&g, &["node `p` (param)", "params are f32, found i8[4]"]);
}

#[test]
fn name_clashes_through_the_api() {
    let (mut g, [_, a, _]) = relu_chain();
    // a param re-requested with another type
    g.param("w", TensorType::f32(vec![3])).unwrap();
    let e = g
        .param("w", TensorType::f32(vec![4]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`w`") && e.contains("f32[4]") && e.contains("f32[3]"),
        "{e}"
    );
    // a param named like an op
    let e = g
        .param("a", TensorType::f32(vec![4]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("clashes with node `a` (relu"), "{e}");
    // renaming onto a taken name
    let e = g.rename(a, "b").unwrap_err().to_string();
    assert!(e.contains("two nodes are named `b`"), "{e}");
    // an empty name
    let e = g
        .add(Op::Model(ModelOp::Relu), "", &[a])
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty name"), "{e}");
}

#[test]
fn graph_add_names_the_node_op_and_shapes() {
    let (mut g, [x, ..]) = relu_chain();
    let k = g.param("k", TensorType::f32(vec![3, 5])).unwrap();
    let e = g
        .add(
            Op::Model(ModelOp::Dense {
                activation: Activation::None,
            }),
            "fc",
            &[x, k],
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "node `fc` (dense): kernel [3,5] expects 5 input features but the input f32[1,4] has 4"
    );
}

#[test]
fn inserting_a_node_after_a_value_keeps_the_graph_acyclic() {
    // the pass pattern: q = fake_quant(a); every use of a now reads q. q itself must keep
    // reading a (it used to be pointed at itself, a cycle).
    let (mut g, [_, a, b]) = relu_chain();
    let q = g
        .add(
            Op::Model(ModelOp::FakeQuant(FakeQuantAttrs::activation("a"))),
            "a.fq",
            &[a],
        )
        .unwrap();
    g.replace_all_uses(a, q);
    verify(&g).unwrap();
    assert_eq!(g.operands(q), vec![a]);
    assert_eq!(g.operands(b), vec![q]);
}
