//! Helpers for the end-to-end tests: a scratch workspace, the real `fkp` binary, and
//! small Kaggle-layout CSV files written on the spot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use std::process::Command;

pub const KEYPOINTS: [&str; 3] = ["left_eye_center", "right_eye_center", "nose_tip"];
pub const SIDE: usize = 8;

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The `fkp` command with the scratch folder as the workspace (current
    /// directory), for a test to add to, spawn or run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fkp"));
        command
            .current_dir(self.dir.path())
            .env_remove("FKP_CACHE_DIR")
            .args(args);
        command
    }

    /// Runs `fkp` in the scratch workspace.
    pub fn fkp(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("fkp runs")
    }

    /// Runs `fkp` and insists it succeeds; returns stderr (where stage lines go).
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.fkp(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "fkp {args:?} failed\nstdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// Runs `fkp`, insists it fails, returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.fkp(args);
        assert!(!out.status.success(), "fkp {args:?} should have failed");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Cache entries of a stage kind.
    pub fn entries(&self, kind: &str) -> Vec<PathBuf> {
        list(&self.path(".fkp/entries").join(kind))
    }

    /// Leftover temporary folders: must be empty after any run, failed or not.
    pub fn temp_dirs(&self) -> Vec<PathBuf> {
        list(&self.path(".fkp/tmp"))
    }

    pub fn status_json(&self, pipelines: &[&str]) -> serde_json::Value {
        let mut args = vec!["status", "--json"];
        args.extend(pipelines);
        let out = self.fkp(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }
}

/// Runs `command` with its output captured; `None` if it takes longer than `limit`
/// (it is killed then).
pub fn output_within(command: &mut Command, limit: std::time::Duration) -> Option<Output> {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fkp starts");
    let started = std::time::Instant::now();
    while child.try_wait().expect("fkp can be waited for").is_none() {
        if started.elapsed() > limit {
            child.kill().expect("a hung fkp can be killed");
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Some(child.wait_with_output().expect("fkp's output"))
}

/// Every file under `root`, by path relative to it, with its bytes.
pub fn files_under(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|items| items.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// The header of a labelled file with [`KEYPOINTS`].
pub fn header() -> String {
    let mut columns: Vec<String> = KEYPOINTS
        .iter()
        .flat_map(|k| [format!("{k}_x"), format!("{k}_y")])
        .collect();
    columns.push("Image".to_string());
    columns.join(",")
}

/// A labelled row: coordinates derived from `seed` (some missing when `sparse`),
/// and an 8x8 image.
pub fn row(seed: usize, sparse: bool) -> String {
    let mut fields = Vec::new();
    for k in 0..KEYPOINTS.len() {
        let missing = sparse && k == 1;
        let x = (seed + k) % SIDE;
        let y = (seed * 3 + k) % SIDE;
        if missing {
            fields.extend([String::new(), String::new()]);
        } else {
            fields.extend([format!("{x}.25"), format!("{y}.5")]);
        }
    }
    let pixels: Vec<String> = (0..SIDE * SIDE)
        .map(|i| ((i * 7 + seed * 13) % 256).to_string())
        .collect();
    fields.push(pixels.join(" "));
    fields.join(",")
}

/// A labelled CSV with `rows` rows, every third one missing a keypoint.
pub fn labelled_csv(rows: usize) -> String {
    let mut text = header();
    text.push('\n');
    for i in 0..rows {
        text.push_str(&row(i, i % 3 == 0));
        text.push('\n');
    }
    text
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn zip_one(name: &str, bytes: &[u8]) -> Vec<u8> {
    zip_of(&[(name, bytes)])
}

/// A zip archive of the files `(name, bytes)`, in that order.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A gzip file of the repository (`datasets/faces300-full.csv.gz`), uncompressed.
pub fn gunzip_repo_file(relative: &str) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(repo_file(relative)).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// The folder holding the project's shared real data; the tests that read it are
/// ignored by default and fail when run without it.
pub fn shared_data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    assert!(
        dir.join("faces15-train-sparse.csv.gz").is_file(),
        "{} holds no faces15-train-sparse.csv.gz: these tests need the project's shared data",
        dir.display()
    );
    dir
}

pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Faces whose keypoints are known by construction: a dark `side` x `side`
/// image with a bright 3x3 square centred on each of two "eyes", placed by a
/// simple deterministic generator: the left eye (the subject's) in the right
/// half of the picture, the right eye in the left half, so a mirror maps one
/// onto the other. Every third row misses the right eye's label (the square is
/// still drawn), so masking has something to do.
pub fn blob_csv(rows: usize, side: usize, seed: u64) -> String {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |range: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % range as u64) as usize
    };
    let mut text =
        String::from("left_eye_center_x,left_eye_center_y,right_eye_center_x,right_eye_center_y,Image\n");
    for row in 0..rows {
        let mut image = vec![20u8; side * side];
        let mut fields = Vec::new();
        for k in 0..2 {
            let half = side / 2;
            let x = if k == 0 { half + 1 } else { 3 } + next(half - 4);
            let y = 3 + next(side - 6);
            for dy in 0..3 {
                for dx in 0..3 {
                    image[(y + dy - 1) * side + (x + dx - 1)] = 230;
                }
            }
            if k == 1 && row % 3 == 0 {
                fields.extend([String::new(), String::new()]);
            } else {
                fields.extend([x.to_string(), y.to_string()]);
            }
        }
        let pixels: Vec<String> = image.iter().map(u8::to_string).collect();
        fields.push(pixels.join(" "));
        text.push_str(&fields.join(","));
        text.push('\n');
    }
    text
}
