//! Export without LiteRT: every op kind exports, loads in qatc's int8 interpreter, and
//! computes what the fake-quantized float graph computes, to within a few quantization
//! steps of the output.

mod support;

use qatc::int8::Interpreter;
use qatc::tflite::export::{export, ExportOptions};
use support::*;

#[test]
fn every_op_kind_exports_and_tracks_the_fake_quant_graph() {
    for case in one_layer_cases() {
        let (g, p) = prepare(&case, 1);
        let bytes = export(&g, &p, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let it = Interpreter::new(&bytes).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut shape = input_shape(&case.model);
        shape[0] = if case.name.starts_with("conv2d_transpose") { 1 } else { 3 };
        let x = uniform(&shape, -1.0, 1.0, 2);
        let got = it.run(&input_arrays(&g, &x)).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let want = run_float(&g, &p, &x);
        let got = got[0].as_f32().unwrap();
        assert_eq!(got.len(), want.data.len(), "{}", case.name);
        // the output quantization step
        let m = it.model();
        let deq = m.operators.last().unwrap();
        let q = m.tensors[deq.inputs[0].unwrap()].quant.as_ref().unwrap();
        let step = q.scale[0];
        let worst = got
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs() / step)
            .fold(0.0f32, f32::max);
        // one step of rounding per requantization; sigmoid and tanh have no quantizer in the
        // QAT graph, so their float output is compared with TFLite's fixed 8-bit grid
        assert!(worst <= 2.0, "{}: off by {worst} steps", case.name);
    }
}
