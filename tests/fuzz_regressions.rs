//! The fuzz targets' functions (`fuzz/src/targets.rs`, shared with `cargo fuzz`) on the
//! committed regression inputs: every file under `fuzz/regressions/<target>/` once made
//! that target crash, hang or run out of memory, and must now be handled (accepted or
//! refused with an error). Also a few trivial inputs per target, so each target runs in
//! every `cargo test`.

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_regression_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (name, run) in targets::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            eprintln!("{name}: {}", file.display());
            run(&bytes);
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}

#[test]
fn every_target_takes_trivial_inputs() {
    for (_, run) in targets::TARGETS {
        for input in [
            &b""[..],
            b"\0",
            b"\xff\xff\xff\xff",
            b"model \"m\"\n",
            b"PK\x03\x04",
        ] {
            run(input);
        }
    }
}

/// Found by the `npy` target: a header of 100 nested `{` sent `npyz`'s literal parser into
/// exponential time (over 30 s); it is now refused before parsing, in both readers.
#[test]
fn a_deeply_nested_npy_header_is_refused_at_once() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/npy/nested_header_timeout");
    let bytes = std::fs::read(&path).unwrap();
    let t = std::time::Instant::now();
    let err = qatc::int8::npy::from_bytes(&bytes, &path).unwrap_err();
    assert!(err.to_string().contains("nests brackets"), "{err}");
    assert!(t.elapsed().as_secs() < 1);
}

/// The structure-aware `graph` target on 300 generated models, so every `cargo
/// test` pushes some random architectures through print/parse, both pipelines, export and
/// the int8 interpreter (the fuzz campaign does the same guided by coverage).
#[test]
fn generated_models_survive_the_pipeline() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        targets::graph(&bytes);
    }
}

/// Found by the `image` target: a 406-byte JPEG declaring 1040 × 62991 pixels decoded for
/// 18 s in the fuzzer (under the 2^26-pixel limit of the time); images over 4096 × 4096
/// pixels are now refused from their header.
#[test]
fn a_jpeg_declaring_65_megapixels_is_refused_from_its_header() {
    let bomb = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/image/slow_decode");
    let dir = std::env::temp_dir().join(format!("qatc-bomb-{}", std::process::id()));
    for class in ["train/a", "train/b", "test/a", "test/b"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        std::fs::copy(&bomb, dir.join(class).join("x.jpg")).unwrap();
    }
    let t = std::time::Instant::now();
    let err = qatc::data::load_with(
        &dir,
        qatc::data::Split::Train,
        qatc::data::Pixels::Unit,
        None,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("62991x1040 pixels"), "{err}");
    assert!(t.elapsed().as_millis() < 500);
    std::fs::remove_dir_all(&dir).unwrap();
}
