//! Malformed `.tflite` input never panics: every truncation and a sweep of byte mutations of
//! small models go through the reader, the importer and the interpreter (load and run), and
//! each either works or returns an error.

mod support;

use qatc::export::{export, ExportOptions};
use qatc::int8::{Array, Data, Interpreter};
use std::panic::{catch_unwind, AssertUnwindSafe};
use support::*;

/// Everything a user can do with untrusted bytes.
fn exercise(bytes: &[u8]) {
    let _ = qatc::tflite::read(bytes);
    let _ = qatc::import::tflite::import(bytes);
    if let Ok(it) = Interpreter::new(bytes) {
        let inputs: Vec<Array> = it
            .inputs()
            .iter()
            .map(|t| {
                let n: usize = t.shape.iter().product();
                let data = match t.dtype {
                    qatc::tflite::model::ElemType::I8 => {
                        Data::I8((0..n).map(|i| (i * 37 % 256) as i8).collect())
                    }
                    qatc::tflite::model::ElemType::I32 => Data::I32(vec![1; n]),
                    qatc::tflite::model::ElemType::I64 => Data::I64(vec![1; n]),
                    _ => Data::F32((0..n).map(|i| (i % 7) as f32 * 0.3 - 1.0).collect()),
                };
                Array {
                    shape: t.shape.clone(),
                    data,
                }
            })
            .collect();
        let _ = it.run(&inputs);
    }
}

fn small_models() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in ["conv2d_same_relu", "dense", "concat", "conv2d_transpose"] {
        let case = one_layer_cases()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap();
        let (g, p) = prepare(&case, 1);
        out.push((
            name.to_string(),
            export(&g, &p, &ExportOptions::default()).unwrap(),
        ));
    }
    out.push(("float keras_mnist".into(), support::float::keras_mnist()));
    out.push(("float keras_mixed".into(), support::float::keras_mixed()));
    out
}

thread_local! {
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Serializes the panic-hook swaps of the tests running in parallel.
static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `exercise`, recording a panic (with its message and source location) as a failure.
fn check(what: &str, bytes: &[u8], failures: &mut Vec<String>) {
    let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        PANIC_AT.with(|p| *p.borrow_mut() = info.to_string());
    }));
    let result = catch_unwind(AssertUnwindSafe(|| exercise(bytes)));
    std::panic::set_hook(previous);
    if result.is_err() {
        let at = PANIC_AT.with(|p| p.borrow().clone());
        failures.push(format!("{what}: {at}"));
    }
}

#[test]
fn truncation_at_every_offset_is_an_error_not_a_panic() {
    let mut failures = Vec::new();
    for (name, bytes) in small_models() {
        let step = (bytes.len() / 6000).max(1);
        for len in (0..bytes.len()).step_by(step) {
            check(
                &format!("{name} truncated to {len} bytes"),
                &bytes[..len],
                &mut failures,
            );
            assert!(
                qatc::tflite::read(&bytes[..len]).is_err(),
                "{name}: a truncation to {len} bytes reads"
            );
        }
    }
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}

#[test]
fn mutated_bytes_never_panic() {
    let mut failures = Vec::new();
    let mut loaded = 0;
    for (name, bytes) in small_models() {
        // every byte of the small models; an even spread over the larger float ones (whose
        // bulk is weight data)
        let step = (bytes.len() / 3000).max(1);
        for pos in (0..bytes.len()).step_by(step) {
            for &flip in &[0xffu8, 0x01] {
                let mut b = bytes.clone();
                b[pos] ^= flip;
                check(
                    &format!("{name}: byte {pos} ^= {flip:#04x}"),
                    &b,
                    &mut failures,
                );
                loaded += usize::from(Interpreter::new(&b).is_ok());
            }
            // large values in every 4-byte field: sizes, offsets, indices, shapes
            if pos % 4 == 0 && pos + 4 <= bytes.len() {
                for v in [0x7fff_ffffu32, 0xffff_ffff] {
                    let mut b = bytes.clone();
                    b[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
                    check(&format!("{name}: u32 at {pos} = {v:#x}"), &b, &mut failures);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} panics:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // mutating weights and scales leaves loadable models: the sweep reached the interpreter
    assert!(loaded > 100, "only {loaded} mutants loaded");
}

#[test]
fn errors_name_what_is_wrong() {
    let (_, bytes) = small_models().remove(0);
    let err = Interpreter::new(&bytes[..bytes.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("malformed") || err.contains("identifier"),
        "{err}"
    );
    let mut wrong_id = bytes.clone();
    wrong_id[4..8].copy_from_slice(b"ABCD");
    let err = Interpreter::new(&wrong_id).unwrap_err().to_string();
    assert!(err.contains("\"ABCD\"") && err.contains("TFL3"), "{err}");
}
