//! A seeded mutation fuzzer over fkp's two front doors: pipeline files (TOML, with
//! `extends`) and Kaggle-layout data files (plain, gzip and zip). Each case
//! mutates a file of the seed corpus in `tests/fuzz/corpus/` and must end, within
//! a time limit and without a panic, in success or in an error that names the
//! file. Most cases call the library in-process (fast); a few hundred run the real
//! binary, whose exit code must be 0, 1 or 2.
//!
//! `FKP_FUZZ_CASES` scales the number of cases (default 8000); `FKP_FUZZ_SEED`
//! picks another sequence. A failing case is written to the temp dir printed in
//! the failure, to rerun by hand.

use crate::common;

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fkp::console::Console;
use fkp::dag::Graph;
use fkp::data::kaggle_csv::{self, ParseOptions};
use fkp::data::source::Member;
use fkp::pipeline::Pipeline;
use fkp::workspace::Workspace;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::common::{Scratch, output_within};

/// How long one in-process case may take before it counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(10);

/// Fragments that tend to matter to TOML or to the CSV layout.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    ",",
    ".",
    "\n",
    "\r\n",
    "#",
    "\\",
    "\\u0000",
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e308",
    "-0.0",
    "18446744073709551616",
    "9223372036854775807",
    "true",
    "1979-05-27T07:32:00Z",
    "[pipeline]",
    "[ingest]",
    "[eda]",
    "[prepare]",
    "[model]",
    "[train]",
    "[evaluate]",
    "[report]",
    "[train.schedule]",
    "[train.augment]",
    "extends = \"full.toml\"",
    "extends = \"extends.toml\"",
    "train = \"/dev/zero\"",
    "train = \".\"",
    "name = \"..\"",
    "arch = \"resnet50\"",
    "missing = \"drop\"",
    "epochs = 0",
    "val = 1.0",
    "Image",
    "ImageId",
    "_x",
    "_y",
    "left_eye_center_x",
    " ",
    "  ",
    "256",
    "255",
    "\u{feff}",
    "\u{0}",
    "\u{7f}",
    "é",
    "\u{fffd}",
    "PK\u{3}\u{4}",
    "\u{1f}\u{8b}",
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus")
}

/// The corpus files with the given extension: (name, bytes).
fn corpus(extension: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Values put in place of a `key = value` line's value.
const VALUES: &[&str] = &[
    "-1",
    "0",
    "1",
    "2",
    "0.5",
    "1e-12",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "99999999999",
    "true",
    "false",
    "\"\"",
    "\"x\"",
    "\"skip\"",
    "\"mask\"",
    "\"median\"",
    "\"drop\"",
    "\"resnet50\"",
    "\"darknet53\"",
    "\"cuda\"",
    "\"plateau\"",
    "\"onecycle\"",
    "\"faces.csv\"",
    "\"test.csv\"",
    "\"quoted.csv\"",
    "\"missing.csv\"",
    "\"/dev/null\"",
    "\"base.toml\"",
    "\"full.toml\"",
    "[]",
    "[\"boxplot\", \"boxplot\"]",
    "[1, 2]",
    "{}",
    "{ kind = \"none\" }",
    "1979-05-27",
];

/// One to three random edits of `input`: mostly edits that keep it readable
/// (a line dropped, a value replaced, a line repeated), some that break it.
fn mutate(input: &[u8], rng: &mut Pcg64Mcg) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        if rng.random_range(0..3) > 0 {
            bytes = mutate_line(&bytes, rng);
        } else {
            bytes = mutate_bytes(bytes, rng);
        }
    }
    bytes
}

/// Drops, repeats, or changes the value of one line.
fn mutate_line(input: &[u8], rng: &mut Pcg64Mcg) -> Vec<u8> {
    let text = String::from_utf8_lossy(input).into_owned();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let at = rng.random_range(0..lines.len());
    match rng.random_range(0..4) {
        0 => {
            lines.remove(at);
        }
        1 => {
            let line = lines[at].clone();
            lines.insert(rng.random_range(0..=lines.len()), line);
        }
        _ => {
            if let Some((key, _)) = lines[at].split_once('=') {
                let value = VALUES[rng.random_range(0..VALUES.len())];
                lines[at] = format!("{key}= {value}");
            } else if let Some((head, _)) = lines[at].rsplit_once(',') {
                // A CSV row: replace its last fields.
                let value = VALUES[rng.random_range(0..VALUES.len())];
                lines[at] = format!("{head},{value}");
            }
        }
    }
    lines.join("\n").into_bytes()
}

/// A byte-level edit.
fn mutate_bytes(mut bytes: Vec<u8>, rng: &mut Pcg64Mcg) -> Vec<u8> {
    let at = rng.random_range(0..=bytes.len());
    match rng.random_range(0..8) {
        0 if !bytes.is_empty() => {
            let i = at.min(bytes.len() - 1);
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        1 => bytes.insert(at, rng.random()),
        2 => {
            let end = (at + rng.random_range(1..16)).min(bytes.len());
            bytes.drain(at..end);
        }
        3 => {
            let end = (at + rng.random_range(1..64)).min(bytes.len());
            let copy = bytes[at..end].to_vec();
            let to = rng.random_range(0..=bytes.len());
            bytes.splice(to..to, copy);
        }
        4 | 5 => {
            let token = TOKENS[rng.random_range(0..TOKENS.len())];
            bytes.splice(at..at, token.bytes());
        }
        6 => bytes.truncate(at),
        _ => {
            // Swap two lines.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut lines: Vec<&str> = text.split('\n').collect();
            let (a, b) = (rng.random_range(0..lines.len()), rng.random_range(0..lines.len()));
            lines.swap(a, b);
            bytes = lines.join("\n").into_bytes();
        }
    }
    bytes
}

/// Runs `job` on its own thread: `Err` on a panic or when it outlives the limit.
fn guarded<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(job));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
        Err(_) => Err(format!("took more than {CASE_LIMIT:?}")),
    }
}

fn cases() -> usize {
    std::env::var("FKP_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8000)
}

fn seed() -> u64 {
    std::env::var("FKP_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_261_128)
}

/// A scratch folder holding the whole corpus, so `extends` and data paths resolve.
fn corpus_scratch() -> Scratch {
    let s = Scratch::new();
    for ext in ["toml", "csv"] {
        for (name, bytes) in corpus(ext) {
            s.write(&name, bytes);
        }
    }
    s
}

/// Keeps a failing input for rerunning by hand and fails the test.
fn fail(kind: &str, case: usize, bytes: &[u8], why: &str) -> ! {
    let keep = std::env::temp_dir().join(format!("fkp-fuzz-failure-{kind}-{case}"));
    std::fs::write(&keep, bytes).unwrap();
    panic!(
        "{kind} case {case} (seed {}): {why}\ninput kept at {}",
        seed(),
        keep.display()
    );
}

#[test]
fn every_pipeline_file_of_the_corpus_loads() {
    let s = corpus_scratch();
    for (name, _) in corpus("toml") {
        if let Err(errors) = Pipeline::load(&s.path(&name)) {
            panic!("{name}: {errors}");
        }
    }
}

#[test]
fn mutated_pipeline_files_load_or_fail_naming_the_file() {
    let s = corpus_scratch();
    let seeds = corpus("toml");
    let base = std::fs::read(s.path("base.toml")).unwrap();
    let mut rng = Pcg64Mcg::seed_from_u64(seed());
    let dir = s.dir.path().to_string_lossy().into_owned();
    let (mut loaded, mut refused) = (0, 0);
    let started = Instant::now();
    for case in 0..cases() {
        let (_, original) = &seeds[rng.random_range(0..seeds.len())];
        let bytes = mutate(original, &mut rng);
        // Now and then the mutated file is the base that extends.toml extends.
        let path = if rng.random_range(0..4) == 0 {
            s.write("base.toml", &bytes);
            s.path("extends.toml")
        } else {
            s.write("case.toml", &bytes)
        };
        let workspace = Workspace::new(s.dir.path(), Some(Path::new("no-cache-here")));
        let outcome = guarded(move || -> Result<(), String> {
            let pipeline = Pipeline::load(&path).map_err(|e| e.to_string())?;
            let graph = Graph::new(vec![pipeline]).map_err(|e| e.to_string())?;
            fkp::dag::status(&graph, &workspace).map_err(|e| e.to_string())?;
            Ok(())
        });
        match outcome {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(message)) if message.contains(&dir) => refused += 1,
            Ok(Err(message)) => fail(
                "toml",
                case,
                &bytes,
                &format!("the error names no file: {message}"),
            ),
            Err(why) => fail("toml", case, &bytes, &why),
        }
        s.write("base.toml", &base);
    }
    assert!(!s.path("no-cache-here").exists(), "reading created a cache");
    println!(
        "{} pipeline cases in {:.1} s: {loaded} loaded, {refused} refused with the file named",
        loaded + refused,
        started.elapsed().as_secs_f64()
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn mutated_data_files_parse_or_fail_naming_the_file() {
    let s = Scratch::new();
    let seeds = corpus("csv");
    let mut rng = Pcg64Mcg::seed_from_u64(seed() ^ 0xc5f);
    let (mut parsed, mut refused) = (0, 0);
    let started = Instant::now();
    for case in 0..cases() {
        let (_, original) = &seeds[rng.random_range(0..seeds.len())];
        let mut bytes = mutate(original, &mut rng);
        // Compressed files: mutate the archive's bytes too, now and then.
        let name = match rng.random_range(0..10) {
            0 => {
                bytes = gzip(&bytes);
                let mutated = mutate(&bytes, &mut rng);
                bytes = if rng.random_bool(0.5) { mutated } else { bytes };
                "case.csv.gz"
            }
            1 => {
                bytes = common::zip_one("training.csv", &bytes);
                let mutated = mutate(&bytes, &mut rng);
                bytes = if rng.random_bool(0.5) { mutated } else { bytes };
                "training.zip"
            }
            _ => "case.csv",
        };
        let path = s.write(name, &bytes);
        let options = ParseOptions {
            skip_bad_rows: rng.random_bool(0.5),
            coordinate_tolerance: 1.0,
            ignore_coordinates: rng.random_bool(0.2),
            side: None,
        };
        let shown = path.display().to_string();
        let outcome = guarded(move || {
            kaggle_csv::read(&path, Member::Training, options, &Console::silent())
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(Ok(())) => parsed += 1,
            Ok(Err(message)) if message.contains(&shown) && message.len() < 1_000 => refused += 1,
            Ok(Err(message)) => fail("csv", case, &bytes, &format!("unclear error: {message}")),
            Err(why) => fail("csv", case, &bytes, &why),
        }
    }
    println!(
        "{} data cases in {:.1} s: {parsed} parsed, {refused} refused with the file named",
        parsed + refused,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_binary_exits_cleanly_on_mutated_inputs() {
    let s = corpus_scratch();
    let seeds_toml = corpus("toml");
    let seeds_csv = corpus("csv");
    let mut rng = Pcg64Mcg::seed_from_u64(seed() ^ 0xb17);
    let dir = s.dir.path().to_string_lossy().into_owned();
    let runs = (cases() / 15).max(20);
    let started = Instant::now();
    let mut codes = [0usize; 3];
    s.write(
        "data.toml",
        "[ingest]\ntrain = \"case.csv\"\non_bad_row = \"skip\"\n[eda]\nsamples = 2\n[prepare]\nval = 0.3\n",
    );
    for case in 0..runs {
        // Alternately a mutated data file through ingest, eda and prepare, and a
        // mutated pipeline file through status, dag and a dry run.
        let (args, bytes): (Vec<&str>, Vec<u8>) = if case % 2 == 0 {
            let (_, original) = &seeds_csv[rng.random_range(0..seeds_csv.len())];
            let bytes = mutate(original, &mut rng);
            s.write("case.csv", &bytes);
            (vec!["run", "data.toml", "-q"], bytes)
        } else {
            let (_, original) = &seeds_toml[rng.random_range(0..seeds_toml.len())];
            let bytes = mutate(original, &mut rng);
            s.write("case.toml", &bytes);
            let verb = ["status", "dag", "run"][case / 2 % 3];
            let args = if verb == "run" {
                vec!["run", "case.toml", "--dry-run"]
            } else {
                vec![verb, "case.toml"]
            };
            (args, bytes)
        };
        let Some(out) = output_within(&mut s.command(&args), Duration::from_secs(60)) else {
            fail("binary", case, &bytes, &format!("fkp {args:?} hung"));
        };
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(code @ 0..=2) => codes[code as usize] += 1,
            other => fail(
                "binary",
                case,
                &bytes,
                &format!("fkp {args:?} exited {other:?}: {err}"),
            ),
        }
        if !out.status.success() && !err.contains(&dir) && !err.contains("case.") {
            fail(
                "binary",
                case,
                &bytes,
                &format!("fkp {args:?}: the error names no file: {err}"),
            );
        }
    }
    println!(
        "{runs} runs of the binary in {:.1} s: exit 0 {}, exit 1 {}, exit 2 {}",
        started.elapsed().as_secs_f64(),
        codes[0],
        codes[1],
        codes[2]
    );
}
