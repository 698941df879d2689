//! `fkp export` (ONNX) and `fkp predict --images`, end to end on faces of the
//! bundled sample.
//!
//! The exported models are checked by a runtime fkp did not write: ONNX
//! Runtime and `onnx.checker`, through `tests/onnx/check.py` and the Python in
//! FKP_TEST_PYTHON (.ci/run installs onnx and onnxruntime into its venv and sets
//! it). Those tests are `#[ignore]`d, run by `cargo test --release -- --ignored`,
//! and fail without that Python. Everything else runs in plain `cargo test`.

use crate::common;

use std::path::{Path, PathBuf};

use crate::common::{Scratch, repo_file};
use dfdx::prelude::*;
use fkp::commands::export::proto::{ModelProto, type_proto};
use fkp::commands::export::{Checkpoint, InputType};
use fkp::data::augment::FlipMap;
use fkp::models::{Arch, ModelSpec};
use fkp::stages::train::{Scaling, TrainedModel, load_trained};
use fkp::training::{Tta, predict_ensemble};
use prost::Message;

const SIDE: usize = 96;
/// Largest difference allowed between ONNX Runtime and fkp, in pixels.
const TOLERANCE_PX: f64 = 1e-3;

/// The bundled sample's header and rows.
fn sample() -> (String, Vec<String>) {
    let text = String::from_utf8(common::gunzip_repo_file("datasets/faces300-full.csv.gz")).unwrap();
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next().unwrap();
    (header, lines.collect())
}

/// Rows `range` of the sample as a Kaggle-layout file.
fn sample_csv(range: std::ops::Range<usize>) -> String {
    let (header, rows) = sample();
    let mut text = header + "\n";
    for row in &rows[range] {
        text.push_str(row);
        text.push('\n');
    }
    text
}

/// The pixels of rows `range` of the sample, one face after another.
fn sample_pixels(range: std::ops::Range<usize>) -> Vec<u8> {
    let (_, rows) = sample();
    rows[range]
        .iter()
        .flat_map(|row| {
            let image = row.rsplit(',').next().unwrap();
            image
                .split(' ')
                .map(|p| p.parse::<u8>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn coordinate_names() -> Vec<String> {
    let (header, _) = sample();
    header
        .split(',')
        .filter(|c| *c != "Image")
        .map(str::to_string)
        .collect()
}

/// A pipeline `name.toml` training `model` for one epoch on 80 sample faces.
fn pipeline(s: &Scratch, name: &str, model: &str, train: &str, evaluate: &str) {
    s.write("train.csv", sample_csv(0..80));
    s.write(
        &format!("{name}.toml"),
        format!(
            "[ingest]\ntrain = \"train.csv\"\n[prepare]\nmissing = \"mask\"\nval = 0.2\n\
             [model]\n{model}\n[train]\ndevice = \"cpu\"\nbatch_size = 16\nepochs = 1\n{train}\n\
             [evaluate]\n{evaluate}\n"
        ),
    );
}

/// A small network, quick to train, for the tests of `predict --images`.
const SMALL: &str = "layers = [{ conv = 8, kernel = 5, stride = 2 }, \"relu\", { maxpool = 2 }, \
                     { conv = 16, kernel = 3 }, \"relu\", \"global_avg_pool\"]";

/// A residual graph written in TOML: projection and identity shortcuts, leaky
/// ReLU, average pooling with and without padding, max pooling with padding,
/// batch norm on maps and on flat features, dropout, convs with and without
/// bias, three channels.
const CUSTOM: &str = r#"channels = 3
layers = [
  { conv = 8, kernel = 3, padding = 1 }, "batchnorm", { leaky_relu = 0.1 }, { avgpool = 2 },
  { block = "res", filters = 16, stride = 2 },
  { block = "res", filters = 16 },
  { maxpool = 3, stride = 2, padding = 1 },
  { conv = 16, kernel = 1 }, "relu",
  { avgpool = 3, stride = 2, padding = 1 },
  "flatten",
]
head = [{ dense = 32 }, "batchnorm", "relu", { dropout = 0.2 }]
[model.blocks.res]
defaults = { stride = 1 }
layers = [{ conv = "filters", kernel = 3, stride = "stride", padding = 1 }, "batchnorm", { leaky_relu = 0.1 },
          { conv = "filters", kernel = 3, padding = 1 }, "batchnorm"]
residual = true
projection = [{ conv = "filters", kernel = 1, stride = "stride" }, "batchnorm"]
after_add = [{ leaky_relu = 0.1 }]"#;

/// Sigmoids on a map and on flat features.
const SIGMOID: &str = r#"layers = [{ conv = 8, kernel = 3, stride = 2 }, "sigmoid", { maxpool = 2 }, "flatten"]
head = [{ dense = 16 }, "sigmoid"]
"#;

/// A heatmap head: nearest and bilinear upsampling, a map per keypoint and
/// soft-argmax instead of an output layer.
const HEATMAP: &str = r#"layers = [{ conv = 8, kernel = 3, stride = 2, padding = 1 }, "relu", { maxpool = 4 },
  { upsample = 2 }, { conv = 8, kernel = 3, padding = 1 }, { upsample = 2, mode = "bilinear" },
  { conv = 15, kernel = 1 }, { soft_argmax = 0.5 }]
head = []
"#;

const TTA: &str = "tta = [\"hflip\"]";

/// fkp's predictions in a CSV it wrote: the coordinate columns of each row.
fn read_predictions(path: &Path, skip_columns: usize) -> Vec<Vec<f32>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .map(|r| {
            r.unwrap()
                .iter()
                .skip(skip_columns)
                .map(|v| v.parse::<f32>().unwrap())
                .collect()
        })
        .collect()
}

fn decode_model(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

fn metadata(model: &ModelProto, key: &str) -> String {
    model
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some(key))
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| panic!("no metadata `{key}`"))
}

fn ops(model: &ModelProto) -> Vec<String> {
    let graph = model.graph.as_ref().unwrap();
    graph.node.iter().map(|n| n.op_type.clone().unwrap()).collect()
}

#[test]
fn export_writes_the_same_bytes_every_time_with_what_a_user_needs_to_know() {
    let s = Scratch::new();
    pipeline(&s, "p", SMALL, "", TTA);
    let out = s.ok(&["export", "p.toml"]);
    assert!(out.contains("train      running"), "export trains first: {out}");
    assert!(out.contains("wrote p.onnx"), "{out}");
    let first = std::fs::read(s.path("p.onnx")).unwrap();
    s.ok(&["export", "p.toml", "--output", "again.onnx"]);
    assert_eq!(
        first,
        std::fs::read(s.path("again.onnx")).unwrap(),
        "the same bytes twice"
    );

    let model = decode_model(&s.path("p.onnx"));
    assert_eq!(model.ir_version, Some(7));
    assert_eq!(model.opset_import[0].version, Some(13));
    assert_eq!(model.producer_name.as_deref(), Some("fkp"));
    let graph = model.graph.as_ref().unwrap();
    let shape = |value: &fkp::commands::export::proto::ValueInfoProto| {
        let Some(type_proto::Value::TensorType(tensor)) = &value.r#type.as_ref().unwrap().value else {
            panic!("a tensor")
        };
        let dims: Vec<String> = tensor
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                fkp::commands::export::proto::tensor_shape_proto::dimension::Value::DimValue(v) => {
                    v.to_string()
                }
                fkp::commands::export::proto::tensor_shape_proto::dimension::Value::DimParam(p) => p.clone(),
            })
            .collect();
        (tensor.elem_type.unwrap(), dims)
    };
    assert_eq!(graph.input[0].name.as_deref(), Some("image"));
    assert_eq!(
        shape(&graph.input[0]),
        (1, vec!["N".into(), "1".into(), "96".into(), "96".into()])
    );
    assert_eq!(graph.output[0].name.as_deref(), Some("keypoints"));
    assert_eq!(shape(&graph.output[0]), (1, vec!["N".into(), "30".into()]));

    // Metadata: names, sizes, where it came from.
    let status = s.status_json(&["p.toml"]);
    let train = status["pipelines"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["stage"] == "train")
        .unwrap()
        .clone();
    let entry = PathBuf::from(train["entry"].as_str().unwrap());
    assert_eq!(
        metadata(&model, "train_key"),
        entry.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(metadata(&model, "pipeline"), "p");
    assert_eq!(metadata(&model, "fkp_version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(metadata(&model, "image_side"), "96");
    assert_eq!(metadata(&model, "image_channels"), "1");
    assert_eq!(metadata(&model, "tta"), "hflip");
    let names: Vec<String> = serde_json::from_str(&metadata(&model, "keypoint_names")).unwrap();
    assert_eq!(names.len(), 15);
    assert_eq!(names[0], "left_eye_center");
    let columns: Vec<String> = serde_json::from_str(&metadata(&model, "coordinate_names")).unwrap();
    assert_eq!(columns, coordinate_names(), "Kaggle's column order");
    let ops = ops(&model);
    assert!(
        ops.contains(&"Gather".to_string()) && ops.contains(&"Reshape".to_string()),
        "{ops:?}"
    );

    // Without the flips; with uint8 input.
    s.ok(&[
        "export",
        "p.toml",
        "--no-tta",
        "--input-type",
        "uint8",
        "--output",
        "plain.onnx",
    ]);
    let plain = decode_model(&s.path("plain.onnx"));
    assert_eq!(metadata(&plain, "tta"), "none");
    let plain_ops = self::ops(&plain);
    assert!(!plain_ops.contains(&"Gather".to_string()), "{plain_ops:?}");
    assert_eq!(plain_ops[0], "Cast");
    assert_eq!(shape(&plain.graph.as_ref().unwrap().input[0]).0, 2, "uint8");
    assert!(plain_ops.len() < ops.len());

    // Never over an input.
    let (code, err) = s.fails(&["export", "p.toml", "--output", "train.csv"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--output train.csv is `ingest.train`: refusing to overwrite it"),
        "{err}"
    );
}

// ---- predict --images ----

/// Writes `pixels` (a grey `width` x `height` image) as PNG.
fn write_png(path: &Path, pixels: &[u8], width: usize, height: usize) {
    image::GrayImage::from_raw(width as u32, height as u32, pixels.to_vec())
        .unwrap()
        .save(path)
        .unwrap();
}

/// Each pixel repeated `fx` times across and `fy` times down.
fn enlarge(pixels: &[u8], side: usize, fx: usize, fy: usize) -> Vec<u8> {
    (0..side * fy)
        .flat_map(|y| (0..side * fx).map(move |x| pixels[(y / fy) * side + x / fx]))
        .collect()
}

/// A Kaggle-layout file of grey faces, no labels.
fn faces_csv(faces: &[Vec<u8>]) -> String {
    let mut text = String::from("Image\n");
    for face in faces {
        let pixels: Vec<String> = face.iter().map(u8::to_string).collect();
        text.push_str(&pixels.join(" "));
        text.push('\n');
    }
    text
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tolerance,
        "{what}: off by {worst} px (tolerance {tolerance})\n{got:?}\n{want:?}"
    );
}

#[test]
fn images_are_predicted_like_the_same_faces_in_a_csv_in_their_own_pixels() {
    let s = Scratch::new();
    pipeline(&s, "p", SMALL, "", TTA);
    let pixels = sample_pixels(200..204);
    let faces: Vec<Vec<u8>> = pixels.chunks(SIDE * SIDE).map(<[u8]>::to_vec).collect();
    std::fs::create_dir_all(s.path("faces")).unwrap();
    for (i, face) in faces.iter().enumerate() {
        write_png(&s.path(&format!("faces/face{i}.png")), face, SIDE, SIDE);
    }
    s.write("faces.csv", faces_csv(&faces));
    s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "faces.csv",
        "--output",
        "from-csv.csv",
    ]);
    s.ok(&[
        "predict",
        "p.toml",
        "--images",
        "faces",
        "--output",
        "from-png.csv",
    ]);
    let from_csv = read_predictions(&s.path("from-csv.csv"), 0);
    let from_png = read_predictions(&s.path("from-png.csv"), 1);
    let files: Vec<String> = csv::Reader::from_path(s.path("from-png.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    assert_eq!(
        files,
        [
            "faces/face0.png",
            "faces/face1.png",
            "faces/face2.png",
            "faces/face3.png"
        ]
    );
    for (i, (png, csv)) in from_png.iter().zip(&from_csv).enumerate() {
        assert_close(png, csv, 1e-3, &format!("face {i} as PNG vs CSV"));
    }
    let header = std::fs::read_to_string(s.path("from-png.csv")).unwrap();
    assert!(
        header.starts_with("file,left_eye_center_x,left_eye_center_y,"),
        "{header}"
    );

    // 192 pixels, each pixel doubled: area averaging gives the 96-pixel face back
    // exactly, so the prediction is the same, and mapping it to the larger image
    // doubles it plus half a pixel (pixel centres at integers: centre 0 of the
    // small image covers pixels 0 and 1 of the large one, centre 0.5). So within
    // 1e-3 of 2x + 0.5, and within 0.5 px (+ 1e-3) of "twice as large".
    write_png(
        &s.path("big.png"),
        &enlarge(&faces[0], SIDE, 2, 2),
        2 * SIDE,
        2 * SIDE,
    );
    // A stretched one (96 wide, 192 high): x as it was, y doubled.
    write_png(
        &s.path("tall.png"),
        &enlarge(&faces[0], SIDE, 1, 2),
        SIDE,
        2 * SIDE,
    );
    s.ok(&[
        "predict", "p.toml", "--images", "big.png", "tall.png", "--output", "big.csv",
    ]);
    let scaled = read_predictions(&s.path("big.csv"), 1);
    let doubled: Vec<f32> = from_csv[0].iter().map(|v| 2.0 * v + 0.5).collect();
    assert_close(&scaled[0], &doubled, 1e-3, "192-pixel copy: 2x + 0.5");
    let twice: Vec<f32> = from_csv[0].iter().map(|v| 2.0 * v).collect();
    assert_close(&scaled[0], &twice, 0.5 + 1e-3, "192-pixel copy: twice as large");
    let tall: Vec<f32> = from_csv[0]
        .chunks(2)
        .flat_map(|p| [p[0], 2.0 * p[1] + 0.5])
        .collect();
    assert_close(&scaled[1], &tall, 1e-3, "96x192 copy: y doubled");

    // A JPEG: fkp reads the pixels the JPEG decoder gives, as the CSV of those
    // pixels does. A colour PNG (with alpha): grey as Pillow's convert("L").
    let jpeg_path = s.path("face1.jpg");
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&faces[1], SIDE as u32, SIDE as u32, image::ColorType::L8)
        .unwrap();
    std::fs::write(&jpeg_path, &jpeg).unwrap();
    let decoded = image::open(&jpeg_path).unwrap().to_luma8().into_raw();
    assert_ne!(
        decoded, faces[1],
        "JPEG is lossy: this checks the decoded pixels are used"
    );
    let colour: Vec<u8> = faces[2]
        .iter()
        .flat_map(|&v| [v, (u32::from(v) * 4 / 5) as u8, v / 2, 200])
        .collect();
    image::RgbaImage::from_raw(SIDE as u32, SIDE as u32, colour.clone())
        .unwrap()
        .save(s.path("colour.png"))
        .unwrap();
    let grey: Vec<u8> = colour
        .chunks(4)
        .map(|p| {
            let [r, g, b] = [p[0], p[1], p[2]].map(u32::from);
            ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16) as u8
        })
        .collect();
    s.write("decoded.csv", faces_csv(&[decoded, grey]));
    s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "decoded.csv",
        "--output",
        "decoded-preds.csv",
    ]);
    s.ok(&[
        "predict",
        "p.toml",
        "--images",
        "face1.jpg",
        "colour.png",
        "--output",
        "jpeg.csv",
    ]);
    let want = read_predictions(&s.path("decoded-preds.csv"), 0);
    let got = read_predictions(&s.path("jpeg.csv"), 1);
    assert_close(&got[0], &want[0], 1e-3, "JPEG");
    assert_close(&got[1], &want[1], 1e-3, "colour PNG");
}

#[test]
fn unreadable_images_are_named_and_the_others_still_get_their_rows() {
    let s = Scratch::new();
    pipeline(&s, "p", SMALL, "", "");
    let pixels = sample_pixels(200..202);
    write_png(&s.path("a.png"), &pixels[..SIDE * SIDE], SIDE, SIDE);
    write_png(&s.path("b.png"), &pixels[SIDE * SIDE..], SIDE, SIDE);
    let png = std::fs::read(s.path("a.png")).unwrap();
    s.write("cut.png", &png[..png.len() / 2]);
    s.write("empty.jpg", b"");
    s.write("notes.txt", b"not a face\n");
    let args = [
        "predict",
        "p.toml",
        "--images",
        "a.png",
        "cut.png",
        "empty.jpg",
        "notes.txt",
        "b.png",
        "--output",
        "preds.csv",
    ];
    let (code, err) = s.fails(&args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("3 of 5 image(s) could not be predicted (2 row(s) written to preds.csv)"),
        "{err}"
    );
    assert!(err.contains("cut.png: is not a readable PNG image"), "{err}");
    assert!(err.contains("empty.jpg: the file is empty"), "{err}");
    assert!(err.contains("notes.txt: is not an image"), "{err}");
    let rows = std::fs::read_to_string(s.path("preds.csv")).unwrap();
    let files: Vec<&str> = rows
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(files, ["a.png", "b.png"]);

    // --fail-fast: the first one, and nothing written.
    std::fs::remove_file(s.path("preds.csv")).unwrap();
    let mut fast = args.to_vec();
    fast.push("--fail-fast");
    let (code, err) = s.fails(&fast);
    assert_eq!(code, 1);
    assert!(err.contains("cut.png: is not a readable PNG image"), "{err}");
    assert!(!err.contains("empty.jpg"), "{err}");
    assert!(!s.path("preds.csv").exists());

    // A path that is not there, or a folder with no image, fails before anything runs.
    let (_, err) = s.fails(&[
        "predict",
        "p.toml",
        "--images",
        "missing.png",
        "--output",
        "x.csv",
    ]);
    assert!(
        err.contains("--images missing.png: No such file or directory"),
        "{err}"
    );
    std::fs::create_dir_all(s.path("nothing")).unwrap();
    let (_, err) = s.fails(&["predict", "p.toml", "--images", "nothing", "--output", "x.csv"]);
    assert!(
        err.contains("the folder holds no .png, .jpg or .jpeg file"),
        "{err}"
    );
    let (_, err) = s.fails(&[
        "predict",
        "p.toml",
        "--images",
        "a.png",
        "--submission",
        "--output",
        "x.csv",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn draw_writes_each_image_with_its_keypoints() {
    let s = Scratch::new();
    pipeline(&s, "p", SMALL, "", "");
    let pixels = sample_pixels(200..201);
    std::fs::create_dir_all(s.path("in")).unwrap();
    write_png(&s.path("in/face.png"), &pixels, SIDE, SIDE);
    let colour = image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    image::DynamicImage::ImageRgb8(colour)
        .save_with_format(s.path("in/photo.jpeg"), image::ImageFormat::Jpeg)
        .unwrap();
    let draw = [
        "predict",
        "p.toml",
        "--images",
        "in",
        "--output",
        "preds.csv",
        "--draw",
        "drawn",
    ];
    s.ok(&draw);
    let face = image::open(s.path("drawn/face.png")).unwrap();
    assert!(
        face.width() >= 384 && face.height() > 384,
        "enlarged, with a legend"
    );
    let photo = image::open(s.path("drawn/photo.png")).unwrap().to_rgb8();
    assert!(photo.width() >= 300 && photo.height() > 200);
    // Drawn twice the same way: the same bytes.
    let before = std::fs::read(s.path("drawn/face.png")).unwrap();
    s.ok(&draw);
    assert_eq!(before, std::fs::read(s.path("drawn/face.png")).unwrap());
    // Never over an input.
    let (_, err) = s.fails(&[
        "predict", "p.toml", "--images", "in", "--output", "x.csv", "--draw", "in",
    ]);
    assert!(err.contains("would overwrite"), "{err}");
}

// ---- ONNX Runtime ----

/// The Python that has onnx and onnxruntime: FKP_TEST_PYTHON.
fn test_python() -> PathBuf {
    match std::env::var_os("FKP_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => panic!(
            "FKP_TEST_PYTHON is not set: point it at a Python with onnx and onnxruntime \
             (.ci/run installs them into ~/.cache/fkp-ci-venv and sets it)"
        ),
    }
}

/// One model for check.py: its faces and fkp's predictions for them.
struct Job {
    label: String,
    model: PathBuf,
    images: PathBuf,
    count: usize,
    expected: Vec<f32>,
}

/// Runs check.py on `jobs`, prints the agreement table, and fails on any
/// difference over the tolerance. Returns the results, by label.
fn check_in_onnx_runtime(dir: &Path, jobs: &[Job]) -> Vec<serde_json::Value> {
    let mut list = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let expected = dir.join(format!("expected-{i}.f32"));
        let bytes: Vec<u8> = job.expected.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&expected, bytes).unwrap();
        list.push(serde_json::json!({
            "label": job.label,
            "model": job.model,
            "images": job.images,
            "count": job.count,
            "side": SIDE,
            "expected": expected,
            "coords": job.expected.len() / job.count,
        }));
    }
    let jobs_file = dir.join("jobs.json");
    std::fs::write(&jobs_file, serde_json::to_vec(&list).unwrap()).unwrap();
    let out = std::process::Command::new(test_python())
        .arg(repo_file("tests/onnx/check.py"))
        .arg(&jobs_file)
        .output()
        .expect("FKP_TEST_PYTHON runs");
    assert!(
        out.status.success(),
        "check.py failed (are onnx and onnxruntime installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), jobs.len());
    println!("| model | TTA | input | faces | spread px | max |Δ| px, batch | max |Δ| px, one face |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut bad = Vec::new();
    for (result, job) in results.iter().zip(jobs) {
        let (model, tta) = job.label.rsplit_once(' ').unwrap_or((&job.label, ""));
        let (batch, single) = (
            result["max_abs"].as_f64().unwrap(),
            result["single_max_abs"].as_f64().unwrap(),
        );
        // How far apart the faces' predictions are: an agreement means
        // something only where the network's output depends on its input.
        let coords = job.expected.len() / job.count;
        let spread = (0..coords)
            .map(|c| {
                let values = job.expected.iter().skip(c).step_by(coords);
                let (lo, hi) = values.fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                hi - lo
            })
            .fold(0f32, f32::max);
        println!(
            "| {model} | {tta} | {} | {} | {spread:.3} | {batch:.2e} | {single:.2e} |",
            result["input_type"].as_str().unwrap(),
            job.count
        );
        if !(batch <= TOLERANCE_PX && single <= TOLERANCE_PX) {
            bad.push(format!("{}: {batch} / {single} px", job.label));
        }
        if f64::from(spread) < 100.0 * TOLERANCE_PX {
            bad.push(format!(
                "{}: its predictions hardly depend on the face ({spread} px apart)",
                job.label
            ));
        }
        assert_eq!(result["opset"], serde_json::json!([13]));
        assert_eq!(result["output_shape"], serde_json::json!([job.count, 30]));
    }
    assert!(
        bad.is_empty(),
        "ONNX Runtime against fkp (tolerance {TOLERANCE_PX} px): {bad:?}"
    );
    results
}

#[test]
#[ignore = "needs onnxruntime: FKP_TEST_PYTHON, a Python with onnx and onnxruntime (.ci/run sets it up)"]
fn exported_pipelines_predict_what_fkp_predict_does_in_onnx_runtime() {
    test_python(); // before any work: fail at once without it
    let s = Scratch::new();
    let faces = 16;
    s.write("faces.csv", sample_csv(200..200 + faces));
    let images = s.write("faces.u8", sample_pixels(200..200 + faces));
    let mut jobs = Vec::new();
    let cases = [
        ("lenet", "arch = \"lenet\"", ""),
        ("custom residual", CUSTOM, ""),
        ("lenet ensemble of 2", "arch = \"lenet\"", "seeds = [1, 2]"),
        ("custom sigmoid", SIGMOID, ""),
        ("heatmap", HEATMAP, ""),
    ];
    for (i, (label, model, train)) in cases.iter().enumerate() {
        let name = format!("p{i}");
        pipeline(&s, &name, model, train, TTA);
        let toml = format!("{name}.toml");
        for tta in [true, false] {
            let (onnx, preds) = (format!("{name}-{tta}.onnx"), format!("{name}-{tta}.csv"));
            let mut export = vec!["export", &toml, "--output", &onnx];
            let mut predict = vec!["predict", &toml, "--input", "faces.csv", "--output", &preds];
            if !tta {
                export.push("--no-tta");
                predict.push("--no-tta");
            }
            s.ok(&export);
            s.ok(&predict);
            jobs.push(Job {
                label: format!("{label} {}", if tta { "hflip" } else { "none" }),
                model: s.path(&onnx),
                images: images.clone(),
                count: faces,
                expected: read_predictions(&s.path(&preds), 0).concat(),
            });
        }
    }
    // uint8 input, as decoded from image files.
    s.ok(&[
        "export",
        "p0.toml",
        "--input-type",
        "uint8",
        "--output",
        "p0-uint8.onnx",
    ]);
    jobs.push(Job {
        label: "lenet hflip".into(),
        model: s.path("p0-uint8.onnx"),
        images: images.clone(),
        count: faces,
        expected: jobs[0].expected.clone(),
    });
    let results = check_in_onnx_runtime(s.dir.path(), &jobs);
    let meta = &results[4]["metadata"];
    assert_eq!(meta["ensemble_size"], "2");
    assert_eq!(meta["tta"], "hflip");
    assert_eq!(meta["train_key"].as_str().unwrap().split(',').count(), 2);
}

/// Rewrites a safetensors checkpoint: `change(name, values)` for each tensor.
fn rewrite(path: &Path, mut change: impl FnMut(&str, &mut [f32])) {
    let bytes = std::fs::read(path).unwrap();
    let file = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    for name in names {
        let view = file.tensor(&name).unwrap();
        let mut values: Vec<f32> = view
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        change(&name, &mut values);
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, view.shape().to_vec(), data));
    }
    let views: Vec<(String, ::safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F32, shape.clone(), data);
            (name.clone(), view.unwrap())
        })
        .collect();
    std::fs::write(path, ::safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Weights that make every layer count: a fresh network's batch norms are the
/// identity and its biases zero, which would hide a mistake in either.
fn perturb(path: &Path, seed: u64) {
    let mut state = seed;
    let mut uniform = move |lo: f32, hi: f32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
    };
    rewrite(path, |name, values| {
        for v in values.iter_mut() {
            if name.ends_with(".running_var") {
                *v = uniform(0.5, 2.0);
            } else if name.ends_with(".running_mean") {
                *v = uniform(-0.2, 0.2);
            } else if name.ends_with(".scale") {
                *v = uniform(0.5, 1.5);
            } else if name.ends_with(".bias") && !name.starts_with("output") {
                *v += uniform(-0.1, 0.1);
            }
        }
    });
}

/// An initial network's predictions hardly depend on the face (hundredths of
/// a pixel apart), which would let a wrong layer pass. Scales the output
/// layer so they spread over `spread_px` pixels about their mean: with `out`
/// the normalised outputs now and `m` their mean over the faces, the weight
/// times k and the bias k b + (1 - k) m give k (out - m) + m. (k also
/// multiplies float32's rounding of the features, which a trained network's
/// own spread does not: a wide `spread_px` measures that, not the export.)
fn sharpen(path: &Path, predictions_px: &[f32], coords: usize, half: f32, spread_px: f32) {
    let rows = predictions_px.len() / coords;
    let column = |c: usize| {
        predictions_px
            .iter()
            .skip(c)
            .step_by(coords)
            .map(|v| (v - half) / half)
    };
    let mean: Vec<f32> = (0..coords)
        .map(|c| column(c).sum::<f32>() / rows as f32)
        .collect();
    let spread = (0..coords)
        .map(|c| {
            let (lo, hi) = column(c).fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            (hi - lo) * half
        })
        .fold(0f32, f32::max);
    let k = (spread_px / spread.max(1e-6)).max(1.0);
    rewrite(path, |name, values| match name {
        "output.weight" => values.iter_mut().for_each(|w| *w *= k),
        "output.bias" => {
            for (b, m) in values.iter_mut().zip(&mean) {
                *b = k * *b + (1.0 - k) * m;
            }
        }
        _ => {}
    });
}

#[test]
#[ignore = "needs onnxruntime: FKP_TEST_PYTHON, a Python with onnx and onnxruntime (.ci/run sets it up)"]
fn every_preset_exports_the_arithmetic_fkp_predicts_with() {
    test_python(); // before any work: fail at once without it
    // Initial weights (batch norms and biases made non-trivial) and a handful of
    // faces: what is checked is the arithmetic, not what a training learnt.
    let dir = tempfile::tempdir().unwrap();
    let faces = 4;
    let pixels = sample_pixels(200..200 + faces);
    let images = dir.path().join("faces.u8");
    std::fs::write(&images, &pixels).unwrap();
    let coordinate_names = coordinate_names();
    let keypoint_names = fkp::data::faces::keypoint_names(&coordinate_names);
    let flips = FlipMap::from_keypoint_names(&keypoint_names);
    let mut jobs = Vec::new();
    let presets = [
        (Arch::LeNet, 1),
        (Arch::AlexNet, 1),
        (Arch::ResNet18, 1),
        (Arch::ResNet34, 1),
        (Arch::ResNet50, 3),
        (Arch::Darknet53, 3),
    ];
    for (i, (arch, channels)) in presets.into_iter().enumerate() {
        let spec = ModelSpec {
            graph: arch.graph(channels),
            side: SIDE,
            outputs: coordinate_names.len(),
        };
        let weights = dir.path().join(format!("{i}.safetensors"));
        let network = spec.build(&Cpu::seed_from_u64(i as u64)).unwrap();
        network.save_safetensors(&weights).unwrap();
        drop(network);
        perturb(&weights, 17 + i as u64);
        let trained = TrainedModel {
            parameters: spec.check().unwrap().parameters,
            spec,
            scaling: Scaling::for_side(SIDE),
            coordinate_names: coordinate_names.clone(),
            keypoint_names: keypoint_names.clone(),
            device: "cpu".into(),
            seed: i as u64,
            epochs_run: 0,
            best_epoch: 0,
        };
        let meta = dir.path().join(format!("{i}.json"));
        std::fs::write(&meta, serde_json::to_vec(&trained).unwrap()).unwrap();
        let (session, _) = load_trained(&meta, &weights).unwrap();
        let plain =
            predict_ensemble(std::slice::from_ref(&session), &pixels, faces, SIDE, &[], &flips).unwrap();
        drop(session);
        sharpen(&weights, &plain, coordinate_names.len(), SIDE as f32 / 2.0, 1.0);
        // What `fkp predict` runs: the checkpoint loaded into a session, predict_ensemble.
        let (session, trained) = load_trained(&meta, &weights).unwrap();
        let checkpoint = [Checkpoint::read(&weights).unwrap()];
        let trained = [trained];
        for tta in [vec![Tta::HFlip], vec![]] {
            let expected =
                predict_ensemble(std::slice::from_ref(&session), &pixels, faces, SIDE, &tta, &flips).unwrap();
            let name = arch.name();
            let export = fkp::commands::export::describe(
                name,
                "",
                &trained,
                &checkpoint,
                &["initial".to_string()],
                &tta,
                InputType::Float,
            );
            let model = dir.path().join(format!("{i}-{}.onnx", tta.len()));
            std::fs::write(
                &model,
                fkp::commands::export::onnx::encode(&fkp::commands::export::onnx::build(&export).unwrap()),
            )
            .unwrap();
            jobs.push(Job {
                label: format!(
                    "{} {}",
                    arch.name(),
                    if tta.is_empty() { "none" } else { "hflip" }
                ),
                model,
                images: images.clone(),
                count: faces,
                expected,
            });
        }
    }
    check_in_onnx_runtime(dir.path(), &jobs);
}
