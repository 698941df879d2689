//! Kaggle's own files, byte for byte: the first rows of the real `IdLookupTable.csv`
//! and `SampleSubmission.csv` (CRLF and all, `tests/fixtures/kaggle/*-head.csv`), the
//! whole of both (gzip of the exact bytes), and the competition archive in the shape
//! `kaggle competitions download` saves it, built from the bundled sample faces.

use crate::common::{Scratch, gunzip_repo_file, repo_file, zip_of};

/// Rows of Kaggle's test.csv, and of its lookup table.
const TEST_FACES: usize = 1783;
const LOOKUP_ROWS: usize = 27_124;

/// The bundled 300 labelled faces, as Kaggle's training.csv lays them out.
fn training_csv() -> Vec<u8> {
    gunzip_repo_file("datasets/faces300-full.csv.gz")
}

/// A test file in Kaggle's layout (`ImageId,Image`, CRLF as Kaggle's files have),
/// ImageId 1..=`faces`, images taken in turn from the bundled sample.
fn test_csv(faces: usize) -> Vec<u8> {
    let training = String::from_utf8(training_csv()).unwrap();
    let images: Vec<&str> = training
        .lines()
        .skip(1)
        .map(|line| line.rsplit(',').next().unwrap())
        .collect();
    let mut text = String::from("ImageId,Image\r\n");
    for id in 1..=faces {
        text.push_str(&format!("{id},{}\r\n", images[(id - 1) % images.len()]));
    }
    text.into_bytes()
}

/// A small network and one epoch: these tests are about files, not accuracy.
const TRAINING: &str = "[prepare]\nmissing = \"mask\"\nval = 0.2\n\
    [model]\nlayers = [{ conv = 4, kernel = 3, stride = 2, padding = 1 }, \"relu\", { maxpool = 4 }, \"flatten\"]\n\
    [train]\ndevice = \"cpu\"\nepochs = 1\nbatch_size = 32\n";

fn row_ids(csv: &str) -> Vec<&str> {
    csv.lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap())
        .collect()
}

/// Checks a submission against Kaggle's sample: its header, every RowId in order,
/// and each location a number inside the 96-pixel image.
fn assert_matches_sample(submission: &str, sample: &str) {
    assert_eq!(submission.lines().next(), Some("RowId,Location"));
    assert_eq!(sample.lines().next(), Some("RowId,Location"));
    assert_eq!(row_ids(submission), row_ids(sample));
    for line in submission.lines().skip(1) {
        let location: f32 = line.split(',').nth(1).unwrap().parse().unwrap();
        assert!((0.0..=96.0).contains(&location), "{line}");
    }
}

#[test]
fn the_competition_archive_gives_a_submission_with_every_row_of_kaggles_sample() {
    let s = Scratch::new();
    let lookup = gunzip_repo_file("tests/fixtures/kaggle/IdLookupTable.csv.gz");
    let sample = gunzip_repo_file("tests/fixtures/kaggle/SampleSubmission.csv.gz");
    assert!(lookup.starts_with(b"RowId,ImageId,FeatureName,Location\r\n1,1,left_eye_center_x\r\n"));
    let archive = zip_of(&[
        ("IdLookupTable.csv", &lookup),
        ("SampleSubmission.csv", &sample),
        ("test.zip", &zip_of(&[("test.csv", &test_csv(TEST_FACES))])),
        ("training.zip", &zip_of(&[("training.csv", &training_csv())])),
    ]);
    s.write("kaggle/facial-keypoints-detection.zip", archive);
    // Named once: `test` and `lookup` come from the archive too.
    s.write(
        "p.toml",
        format!("[ingest]\ntrain = \"kaggle/facial-keypoints-detection.zip\"\n{TRAINING}"),
    );
    s.ok(&["run", "p.toml", "--until", "ingest"]);
    let status = s.status_json(&["p.toml"]);
    let entry = status["pipelines"][0]["stages"][0]["entry"].as_str().unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::path::Path::new(entry).join("data/ingest.json")).unwrap())
            .unwrap();
    assert_eq!(meta["train_rows"], 300, "{meta}");
    assert_eq!(meta["test_rows"], TEST_FACES, "{meta}");
    assert_eq!(meta["lookup_rows"], LOOKUP_ROWS, "{meta}");

    s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "kaggle/facial-keypoints-detection.zip",
        "--submission",
        "--output",
        "submission.csv",
    ]);
    let submission = std::fs::read_to_string(s.path("submission.csv")).unwrap();
    assert_eq!(submission.lines().count(), LOOKUP_ROWS + 1);
    assert_matches_sample(&submission, &String::from_utf8(sample).unwrap());
}

#[test]
fn kaggles_lookup_head_is_ingested_and_predicted_as_shipped() {
    let s = Scratch::new();
    let lookup_head = std::fs::read(repo_file("tests/fixtures/kaggle/IdLookupTable-head.csv")).unwrap();
    // The fixture is Kaggle's bytes: CRLF, a four-column header, three-field rows.
    assert!(lookup_head.starts_with(b"RowId,ImageId,FeatureName,Location\r\n1,1,left_eye_center_x\r\n"));
    let sample_head =
        std::fs::read_to_string(repo_file("tests/fixtures/kaggle/SampleSubmission-head.csv")).unwrap();
    s.write("training.csv", training_csv());
    s.write("test.csv", test_csv(3));
    s.write("IdLookupTable.csv", &lookup_head);
    s.write(
        "p.toml",
        format!(
            "[ingest]\ntrain = \"training.csv\"\ntest = \"test.csv\"\nlookup = \"IdLookupTable.csv\"\n{TRAINING}"
        ),
    );
    s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "test.csv",
        "--submission",
        "--output",
        "submission.csv",
    ]);
    let summary = std::fs::read_to_string(s.path("reports/p/ingest/summary.md")).unwrap();
    assert!(
        summary.contains("60"),
        "the lookup's 60 rows are counted: {summary}"
    );
    let submission = std::fs::read_to_string(s.path("submission.csv")).unwrap();
    assert_eq!(submission.lines().count(), 61);
    assert_matches_sample(&submission, &sample_head);
}

#[test]
fn a_lookup_row_of_the_wrong_width_is_quoted_with_the_header() {
    let s = Scratch::new();
    let mut lookup = std::fs::read(repo_file("tests/fixtures/kaggle/IdLookupTable-head.csv")).unwrap();
    lookup.extend_from_slice(b"61,3,left_eye_center_x,,7\r\n");
    s.write("training.csv", training_csv());
    s.write("test.csv", test_csv(3));
    s.write("IdLookupTable.csv", &lookup);
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"training.csv\"\ntest = \"test.csv\"\nlookup = \"IdLookupTable.csv\"\n",
    );
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "IdLookupTable.csv:62: the row has 5 fields where the header \
             `RowId,ImageId,FeatureName,Location` allows 3 to 4: `61,3,left_eye_center_x,,7`"
        ),
        "{err}"
    );
    assert!(!err.contains("damaged or truncated"), "{err}");
}

/// Windows line endings, a UTF-8 byte-order mark, trailing blank lines and quoted
/// fields, in every file fkp reads from outside: training, test, lookup, pipeline
/// and fkp.toml.
#[test]
fn every_input_file_reads_with_crlf_a_bom_blank_lines_and_quotes() {
    let s = Scratch::new();
    let bom = "\u{feff}";
    let training = String::from_utf8(training_csv()).unwrap();
    let mut lines = training.lines();
    let header = lines.next().unwrap();
    let quoted: Vec<String> = lines
        .take(40)
        .map(|line| {
            let (coords, image) = line.rsplit_once(',').unwrap();
            format!("{coords},\"{image}\"")
        })
        .collect();
    s.write(
        "training.csv",
        format!("{bom}{header}\r\n{}\r\n\r\n\r\n", quoted.join("\r\n")),
    );
    let test = String::from_utf8(test_csv(2)).unwrap();
    s.write("test.csv", format!("{bom}{test}\r\n"));
    s.write(
        "lookup.csv",
        format!(
            "{bom}\"RowId\",\"ImageId\",\"FeatureName\",\"Location\"\r\n\"1\",\"1\",\"nose_tip_x\"\r\n2,2,nose_tip_y,\r\n\r\n"
        ),
    );
    s.write(
        "p.toml",
        format!(
            "{bom}[ingest]\r\ntrain = \"training.csv\"\r\ntest = \"test.csv\"\r\nlookup = \"lookup.csv\"\r\n\r\n[eda]\r\n\r\n"
        ),
    );
    s.write("fkp.toml", format!("{bom}[executor]\r\njobs = 1\r\n\r\n"));
    s.ok(&["run", "p.toml"]);
    let summary = std::fs::read_to_string(s.path("reports/p/ingest/summary.md")).unwrap();
    assert!(summary.contains("40"), "{summary}");

    // Mistakes in such files still point at the right line and column.
    s.write(
        "p.toml",
        format!("{bom}[ingest]\r\ntrain = \"training.csv\"\r\ntset = \"test.csv\"\r\n"),
    );
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("p.toml:3:1"), "{err}");
}
