//! `--data` formats on small files the tests write themselves: MNIST-format IDX of another
//! image size (plain and gzip), `.npz` in both image layouts with several label types,
//! CIFAR-10 and CIFAR-100 binaries, as directories and as the `.tar.gz` archives they are
//! downloaded in (the official name checked by size and SHA-256); corrupt and truncated files are errors naming the file
//! and where, never panics; and `qatc train --data` on each format end to end.

use npyz::WriterBuilder;
use qatc::data::{load, Pixels, Split};
use std::io::Write;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qatc-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` images of `h × w` whose pixel value encodes (image, position), and labels `i % classes`.
fn pixels(n: usize, len: usize) -> Vec<u8> {
    (0..n * len).map(|i| (i * 7 % 251) as u8).collect()
}

fn write_idx_dir(dir: &Path, gzip: bool) {
    let (h, w) = (8u32, 6u32);
    for (prefix, n) in [("train", 5usize), ("t10k", 3)] {
        let img = idx(0x803, &[n as u32, h, w], &pixels(n, 48));
        let lbl = idx(
            0x801,
            &[n as u32],
            &(0..n as u8).map(|i| i % 3).collect::<Vec<_>>(),
        );
        let (img, lbl, ext) = if gzip {
            (gz(&img), gz(&lbl), ".gz")
        } else {
            (img, lbl, "")
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lbl).unwrap();
    }
}

fn npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(shape: &[u64], v: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()
        .unwrap();
    w.extend(v.iter().copied()).unwrap();
    w.finish().unwrap();
    out
}

fn npz(path: &Path, members: &[(&str, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    for (name, bytes) in members {
        z.start_file(
            format!("{name}.npy"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn write_cifar(dir: &Path, hundred: bool) {
    let label_bytes = if hundred { 2 } else { 1 };
    let rec = |i: usize| -> Vec<u8> {
        let mut r = vec![0u8; label_bytes];
        r[label_bytes - 1] = (i % 3) as u8;
        // channel c of pixel p holds (c * 50 + p) % 256: CHW on disk
        for c in 0..3 {
            r.extend((0..1024).map(|p| ((c * 50 + p + i) % 256) as u8));
        }
        r
    };
    let batch = |n: usize| -> Vec<u8> { (0..n).flat_map(rec).collect() };
    if hundred {
        std::fs::write(dir.join("train.bin"), batch(4)).unwrap();
        std::fs::write(dir.join("test.bin"), batch(2)).unwrap();
    } else {
        std::fs::write(dir.join("data_batch_1.bin"), batch(3)).unwrap();
        std::fs::write(dir.join("data_batch_2.bin"), batch(1)).unwrap();
        std::fs::write(dir.join("test_batch.bin"), batch(2)).unwrap();
    }
}

/// The CIFAR binaries of [`write_cifar`] packed as the dataset page packs them: a folder
/// (`cifar-10-batches-bin/` or `cifar-100-binary/`) with the batches and their text files,
/// in a gzip-compressed tar.
fn write_cifar_archive(path: &Path, hundred: bool) {
    // packed from a folder beside the archive: tests running at once never share it
    let d = path.with_extension("pack");
    std::fs::create_dir_all(&d).unwrap();
    write_cifar(&d, hundred);
    std::fs::write(d.join("batches.meta.txt"), "airplane\nautomobile\n").unwrap();
    std::fs::write(d.join("readme.html"), "<html></html>").unwrap();
    let folder = if hundred {
        "cifar-100-binary"
    } else {
        "cifar-10-batches-bin"
    };
    tar_gz(path, folder, &d);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Writes the directory `dir` as `folder/` inside a gzip-compressed tar at `path`.
fn tar_gz(path: &Path, folder: &str, dir: &Path) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(folder, dir).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

/// `qatc train` for one float and one QAT epoch in batches of 2, quietly, with `args`.
fn quick_train(args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args([
            "train",
            "--epochs",
            "1",
            "--qat-epochs",
            "1",
            "--batch",
            "2",
            "--quiet",
        ])
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

#[test]
fn idx_of_any_image_size_plain_or_gzip() {
    for gzip in [false, true] {
        let d = scratch(&format!("idx{gzip}"));
        write_idx_dir(&d, gzip);
        let train = load(&d, Split::Train, Pixels::Raw).unwrap();
        assert_eq!(train.sample_shape, [8, 6, 1]);
        assert_eq!(train.len(), 5);
        assert_eq!(train.classes, 3);
        assert_eq!(
            train.images[..48],
            pixels(5, 48)[..48]
                .iter()
                .map(|&p| p as f32)
                .collect::<Vec<_>>()[..]
        );
        let unit = load(&d, Split::Test, Pixels::Unit).unwrap();
        assert!(unit.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn npz_in_both_layouts_with_any_label_type() {
    let d = scratch("npz");
    // (n, h, w) uint8 images, int64 labels (keras.datasets.mnist's layout)
    let p1 = d.join("gray.npz");
    npz(
        &p1,
        &[
            ("x_train", npy(&[4, 8, 6], &pixels(4, 48))),
            ("y_train", npy(&[4], &[0i64, 1, 2, 1])),
            ("x_test", npy(&[2, 8, 6], &pixels(2, 48))),
            ("y_test", npy(&[2], &[2i64, 0])),
        ],
    );
    let t = load(&p1, Split::Train, Pixels::Unit).unwrap();
    assert_eq!(
        (t.sample_shape.clone(), t.labels.clone(), t.classes),
        (vec![8, 6, 1], vec![0, 1, 2, 1], 3)
    );
    // (n, h, w, c) float32 images kept as they are, uint8 labels shaped (n, 1) (CIFAR's)
    let p2 = d.join("rgb.npz");
    let xf: Vec<f32> = (0..2 * 4 * 4 * 3).map(|i| i as f32 * 0.5).collect();
    npz(
        &p2,
        &[
            ("x_train", npy(&[2, 4, 4, 3], &xf)),
            ("y_train", npy(&[2, 1], &[1u8, 0])),
            ("x_test", npy(&[2, 4, 4, 3], &xf)),
            ("y_test", npy(&[2, 1], &[0u8, 1])),
        ],
    );
    let t = load(&p2, Split::Test, Pixels::Unit).unwrap();
    assert_eq!(t.sample_shape, [4, 4, 3]);
    assert_eq!(t.images, xf);
    assert_eq!(t.labels, [0, 1]);
    // a negative label, a missing array and a shape mismatch are named
    let p3 = d.join("bad.npz");
    npz(
        &p3,
        &[
            ("x_train", npy(&[2, 4, 4], &pixels(2, 16))),
            ("y_train", npy(&[2], &[0i32, -1])),
        ],
    );
    let e = load(&p3, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.npz") && e.contains("y_train`[1] is -1"),
        "{e}"
    );
    let e = load(&p3, Split::Test, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x_test.npy"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn cifar_10_and_100_binaries() {
    for hundred in [false, true] {
        let d = scratch(&format!("cifar{hundred}"));
        write_cifar(&d, hundred);
        let t = load(&d, Split::Train, Pixels::Raw).unwrap();
        assert_eq!(t.sample_shape, [32, 32, 3]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.classes, if hundred { 100 } else { 10 });
        // CHW on disk, HWC in memory: pixel 5, channel 2 of image 0 is (2*50 + 5) % 256
        assert_eq!(t.images[5 * 3 + 2], 105.0);
        assert_eq!(t.labels, [0, 1, 2, 0]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// `--data cifar-10-binary.tar.gz` as downloaded: the archive reads like the folder it
/// unpacks to, for both splits and both CIFARs.
#[test]
fn cifar_archives_read_like_their_folders() {
    for hundred in [false, true] {
        let d = scratch(&format!("cifar-archive{hundred}"));
        let dir = d.join("unpacked");
        std::fs::create_dir_all(&dir).unwrap();
        write_cifar(&dir, hundred);
        let archive = d.join("my-cifar.tar.gz");
        write_cifar_archive(&archive, hundred);
        for split in [Split::Train, Split::Test] {
            let a = load(&archive, split, Pixels::Unit).unwrap();
            let f = load(&dir, split, Pixels::Unit).unwrap();
            assert_eq!(a.sample_shape, f.sample_shape);
            assert_eq!(a.classes, f.classes);
            assert_eq!(a.labels, f.labels, "{split:?}");
            assert_eq!(a.images, f.images, "{split:?}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A file named like the official CIFAR-10 archive must be it: a wrong size or a wrong
/// SHA-256 is an error naming both and where to download the real one.
#[test]
fn the_official_cifar_archive_is_checked_by_size_and_sha256() {
    use qatc::data::cifar::CIFAR10_ARCHIVE;
    let d = scratch("official");
    let path = d.join(CIFAR10_ARCHIVE.name);
    write_cifar_archive(&path, false);
    let e = load(&path, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("170052171 bytes") && e.contains(CIFAR10_ARCHIVE.url),
        "{e}"
    );
    // the right size, the wrong bytes (a sparse file of zeros)
    std::fs::File::create(&path)
        .unwrap()
        .set_len(CIFAR10_ARCHIVE.bytes)
        .unwrap();
    let e = load(&path, Split::Test, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SHA-256") && e.contains(CIFAR10_ARCHIVE.sha256),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// `examples/cifar10_resnet8.toml`, the MLPerf Tiny recipe, parses as the recipe it says it
/// is and trains, quantizes and exports resnet8 for a few steps on a CIFAR-format archive.
#[test]
fn the_cifar10_resnet8_example_trains_on_a_cifar_archive() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples/cifar10_resnet8.toml");
    let job = qatc::workflow::Job::from_toml_file(&example).unwrap();
    assert_eq!(job.model, "resnet8");
    assert_eq!(job.data, Path::new("cifar-10-binary.tar.gz"));
    assert_eq!(job.augment.as_deref(), Some("crop:4,flip"));
    assert_eq!(
        (job.batch, job.lr, job.lr_schedule.as_str()),
        (32, 1e-3, "cosine")
    );
    assert!(job.epochs >= 100 && job.qat_epochs >= 10);
    job.check().unwrap();
    let d = scratch("cifar-example");
    let archive = d.join("cifar-format.tar.gz");
    write_cifar_archive(&archive, false);
    let out = d.join("out");
    let run = quick_train(&[&"--config", &example, &"--data", &archive, &"--out", &out]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("resnet8_int8.tflite").exists());
    let run_toml = std::fs::read_to_string(out.join("run.toml")).unwrap();
    assert!(run_toml.contains("crop:4,flip"), "{run_toml}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Not an archive, a cut archive, an archive without CIFAR batches: errors naming the file.
#[test]
fn broken_cifar_archives_are_errors_naming_the_file() {
    let d = scratch("broken-archive");
    let path = d.join("broken.tar.gz");
    std::fs::write(&path, b"this is not gzip").unwrap();
    let e = load(&path, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.tar.gz") && e.contains("gzip"), "{e}");
    write_cifar_archive(&path, false);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 9] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let r = load(&path, Split::Train, Pixels::Unit);
        let e = r.expect_err("a cut archive must not load").to_string();
        assert!(e.contains("broken.tar.gz"), "cut at {cut}: {e}");
    }
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "hello").unwrap();
    tar_gz(&path, "other", &other);
    let e = load(&path, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no CIFAR binary batches"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn corrupt_and_truncated_files_name_the_file_and_where() {
    // IDX: cut in the data, and in the header
    let d = scratch("corrupt-idx");
    write_idx_dir(&d, false);
    let img = d.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..bytes.len() - 10]).unwrap();
    let e = load(&d, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("byte 16"),
        "{e}"
    );
    std::fs::write(&img, &bytes[..6]).unwrap();
    let e = load(&d, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated IDX header at byte 4"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
    // CIFAR: a cut record names its offset
    let d = scratch("corrupt-cifar");
    write_cifar(&d, false);
    let f = d.join("data_batch_1.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..3073 + 100]).unwrap();
    let e = load(&d, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_1.bin") && e.contains("byte 3073"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
    // npz: garbage and every truncation are errors, never panics
    let d = scratch("corrupt-npz");
    let p = d.join("x.npz");
    npz(
        &p,
        &[
            ("x_train", npy(&[2, 4, 4], &pixels(2, 16))),
            ("y_train", npy(&[2], &[0i64, 1])),
        ],
    );
    let good = std::fs::read(&p).unwrap();
    for cut in (0..good.len()).step_by(7) {
        std::fs::write(&p, &good[..cut]).unwrap();
        let r = std::panic::catch_unwind(|| load(&p, Split::Train, Pixels::Unit));
        assert!(matches!(r, Ok(Err(_))), "cut at {cut}");
    }
    // nothing to read
    let e = load(&d, Split::Train, Pixels::Unit)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no dataset found"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

const TINY: &str = "model \"tiny\"
param @dense.kernel : f32[3,SIZE]
param @dense.bias : f32[3]
%0 = input \"input\" : f32[1,SHAPE]
%1 = flatten \"flatten\" (%0) : f32[1,SIZE]
%2 = dense \"dense\" (%1, @dense.kernel, @dense.bias) : f32[1,3]
output \"output\" = %2
";

/// `--image-size H,W` resizes any dataset, not only image folders: 8x6 IDX digits reach a
/// model built for 16x12 (as MNIST reaches `mobilenet_v2_035 --input-shape 64,64,1`).
#[test]
fn image_size_resizes_an_idx_dataset_for_a_larger_model() {
    let d = scratch("resize");
    write_idx_dir(&d, false);
    let model = d.join("tiny_16x12.qir");
    std::fs::write(
        &model,
        TINY.replace("SHAPE", "16,12,1").replace("SIZE", "192"),
    )
    .unwrap();
    let out = d.join("out");
    let args: [&dyn AsRef<std::ffi::OsStr>; 6] =
        [&"--model", &model, &"--data", &d, &"--out", &out];
    let without = quick_train(&args);
    assert!(!without.status.success());
    let with = quick_train(&[&args[..], &[&"--image-size", &"16,12"]].concat());
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(d.join("out/tiny_int8.tflite").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// `qatc train --data` on an IDX directory, an `.npz` and a CIFAR-10 directory, and the
/// error when the model's input does not match the data.
#[test]
fn qatc_train_reads_every_format() {
    let d = scratch("train");
    let idx_dir = d.join("idx");
    std::fs::create_dir_all(&idx_dir).unwrap();
    write_idx_dir(&idx_dir, true);
    let cifar_dir = d.join("cifar");
    std::fs::create_dir_all(&cifar_dir).unwrap();
    write_cifar(&cifar_dir, false);
    let npz_path = d.join("data.npz");
    npz(
        &npz_path,
        &[
            ("x_train", npy(&[4, 8, 6], &pixels(4, 48))),
            ("y_train", npy(&[4], &[0i64, 1, 2, 1])),
            ("x_test", npy(&[2, 8, 6], &pixels(2, 48))),
            ("y_test", npy(&[2], &[2i64, 0])),
        ],
    );
    let model = |shape: &str, size: usize| -> PathBuf {
        let p = d.join(format!("tiny_{size}.qir"));
        std::fs::write(
            &p,
            TINY.replace("SHAPE", shape)
                .replace("SIZE", &size.to_string()),
        )
        .unwrap();
        p
    };
    let small = model("8,6,1", 48);
    let color = model("32,32,3", 3072);
    for (data, m) in [
        (&idx_dir, &small),
        (&npz_path, &small),
        (&cifar_dir, &color),
    ] {
        let out = d.join("out");
        let run = quick_train(&[&"--model", m, &"--data", data, &"--out", &out]);
        assert!(
            run.status.success(),
            "{}: {}",
            data.display(),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(out.join("tiny_int8.tflite").exists());
        std::fs::remove_dir_all(&out).unwrap();
    }
    let mismatch = d.join("mismatch");
    let run = quick_train(&[
        &"--model", &small, &"--data", &cifar_dir, &"--out", &mismatch,
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        err.contains("[32, 32, 3]") && err.contains("[8, 6, 1]"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// An image folder: class subfolders of PNG and JPEG files, split by `train/`+`test/` or by a
/// seeded fifth; sizes differing need `--image-size`; a corrupt image is named.
#[test]
fn image_folders() {
    use qatc::data::{folder, load_with};
    let d = scratch("folder");
    let make = |dir: &Path, n: usize, size: u32, gray: bool| {
        for (k, class) in ["cat", "dog", "eel"].iter().enumerate() {
            let c = dir.join(class);
            std::fs::create_dir_all(&c).unwrap();
            for i in 0..n {
                let v = (k * 80 + i) as u8;
                if gray {
                    let img = image::GrayImage::from_pixel(size, size, image::Luma([v]));
                    img.save(c.join(format!("{i}.png"))).unwrap();
                } else {
                    let img = image::RgbImage::from_pixel(size, size, image::Rgb([v, 0, 255 - v]));
                    let ext = if i % 2 == 0 { "png" } else { "jpg" };
                    img.save(c.join(format!("{i}.{ext}"))).unwrap();
                }
            }
        }
    };
    // train/ and test/ splits, RGB, PNG and JPEG
    let split = d.join("split");
    make(&split.join("train"), 4, 8, false);
    make(&split.join("test"), 2, 8, false);
    assert!(folder::detect(&split));
    let t = load_with(&split, Split::Train, Pixels::Raw, None, 0).unwrap();
    assert_eq!(
        (t.sample_shape.clone(), t.len(), t.classes),
        (vec![8, 8, 3], 12, 3)
    );
    assert_eq!(t.labels[..4], [0, 0, 0, 0]);
    assert_eq!(t.images[..3], [0.0, 0.0, 255.0]);
    assert_eq!(
        load_with(&split, Split::Test, Pixels::Raw, None, 0)
            .unwrap()
            .len(),
        6
    );
    // one folder, grayscale, split by a seeded fifth; resized on request
    let flat = d.join("flat");
    make(&flat, 10, 6, true);
    let tr = load_with(&flat, Split::Train, Pixels::Unit, Some([4, 4]), 1).unwrap();
    let te = load_with(&flat, Split::Test, Pixels::Unit, Some([4, 4]), 1).unwrap();
    assert_eq!(tr.sample_shape, [4, 4, 1]);
    assert_eq!(tr.len() + te.len(), 30);
    assert!(!te.is_empty() && te.len() < 15, "{}", te.len());
    // a differently sized image needs --image-size; a corrupt one is named
    image::GrayImage::new(5, 5)
        .save(flat.join("cat/odd.png"))
        .unwrap();
    let e = load_with(&flat, Split::Train, Pixels::Unit, None, 1).err();
    let e2 = load_with(&flat, Split::Test, Pixels::Unit, None, 1).err();
    let msg = e
        .or(e2)
        .expect("a size mismatch in one of the splits")
        .to_string();
    assert!(msg.contains("--image-size"), "{msg}");
    std::fs::write(flat.join("dog/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let errs: Vec<String> = [Split::Train, Split::Test]
        .into_iter()
        .filter_map(|s| load_with(&flat, s, Pixels::Unit, Some([4, 4]), 1).err())
        .map(|e| e.to_string())
        .collect();
    assert!(errs.iter().any(|e| e.contains("broken.png")), "{errs:?}");
    std::fs::remove_dir_all(&d).unwrap();
}
