//! The content-addressed cache under `.fkp/`:
//!
//! ```text
//! .fkp/entries/<stage>/<key>/manifest.json   what the entry is and what made it
//! .fkp/entries/<stage>/<key>/timing.json     how long it took (volatile, never hashed)
//! .fkp/entries/<stage>/<key>/data/           machine outputs, read by later stages
//! .fkp/entries/<stage>/<key>/report/         human outputs, copied to reports/<pipeline>/
//! .fkp/tmp/<stage>-<key>-<pid>-<n>/          an entry being built
//! .fkp/checkpoints/<stage>-<key>/             a stage's resumable progress (train)
//! .fkp/live/<stage>-<key>.jsonl               a running stage's progress, for `fkp serve` (live.rs)
//! .fkp/pipelines/<workspace>/<name>.json     each pipeline's last run in a workspace: what it
//!                                             used ("what changed") and what it published
//! .fkp/file-hashes.json                      input hashes by path, size and mtime
//! .fkp/lock                                   held by the command writing the workspace
//! .fkp/locks/<stage>-<key>                   held while a process builds that key
//! .fkp/jobs/                                  Slurm job scripts, logs and records
//! ```
//!
//! An entry is built in `tmp/` and renamed into `entries/` only when its stage
//! succeeds, so a failed or killed run never leaves a half-written entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::hashing::hash_file;
use super::key::KeyInputs;
use crate::fsutil;
use crate::stages::{StageKind, StageOutcome};
use crate::workspace::Workspace;

pub const MANIFEST: &str = "manifest.json";
const WORKSPACE_MARKER: &str = "workspace";
pub const TIMING: &str = "timing.json";
pub const DATA_DIR: &str = "data";
pub const REPORT_DIR: &str = "report";
const MANIFEST_SCHEMA: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputFile {
    /// Relative to the entry's folder.
    #[serde(with = "crate::fsutil::lossy_path")]
    pub path: PathBuf,
    pub bytes: u64,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub key: String,
    /// What the key was made of, without the input files' paths: an entry is the
    /// same wherever its inputs were (the pipeline's record keeps the paths).
    pub inputs: KeyInputs,
    /// Every file under `data/`, sorted by path.
    pub outputs: Vec<OutputFile>,
    /// Every file under `report/`, sorted by path.
    pub reports: Vec<OutputFile>,
    /// Hash over all `outputs` (downstream keys hash only the files they read).
    pub output_hash: String,
    /// The stage's one-line result (absent from entries built before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    pub summary: Option<String>,
    /// The pipeline that built it (others may share it).
    pub built_by: String,
    pub fkp_version: String,
}

impl Manifest {
    /// A manifest of this schema for `key`, from its JSON; `None` for anything else.
    pub fn parse(bytes: &[u8], key: &str) -> Option<Manifest> {
        serde_json::from_slice::<Manifest>(bytes)
            .ok()
            .filter(|m| m.schema == MANIFEST_SCHEMA && m.key == key)
    }
}

/// An entry's volatile measurements, kept apart from its manifest so that a
/// manifest, like every output, is the same for the same inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    pub seconds: f64,
    pub created_unix: u64,
    /// What the stage measured itself (train: per-epoch seconds and images/s).
    pub stage: Option<serde_json::Value>,
}

/// What a pipeline's last run used, stage by stage (by node label).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineRecord {
    #[serde(with = "crate::fsutil::lossy_path")]
    pub file: PathBuf,
    pub stages: BTreeMap<String, KeyInputs>,
    /// The files each stage last published to `reports/<pipeline>/`, relative to
    /// it, so that files a stage stops writing are removed.
    #[serde(default)]
    pub published: BTreeMap<String, Vec<PathBuf>>,
}

pub struct Store {
    root: PathBuf,
}

/// An entry under construction. Dropping it without [`Store::commit`] removes it.
pub struct Pending {
    dir: PathBuf,
    kind: StageKind,
    key: String,
}

impl Pending {
    /// The folder being filled: it becomes the entry's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    pub fn report_dir(&self) -> PathBuf {
        self.dir.join(REPORT_DIR)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static PENDING_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Store {
    /// The store for a command that writes: its folders are created.
    pub fn open(root: &Path) -> std::io::Result<Store> {
        for dir in ["entries", "tmp", "pipelines", "checkpoints"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Tells backup tools this folder is a cache (https://bford.info/cachedir/).
            fsutil::write_atomic(
                &tag,
                b"Signature: 8a477f597d28d172789f06886806bc55\n# fkp's cache: safe to delete, `fkp run` rebuilds it.\n",
            )?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The store for a command that only reads: nothing is created, and a store
    /// that does not exist yet simply has no entries.
    pub fn open_read_only(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, kind: StageKind, key: &str) -> PathBuf {
        self.root.join("entries").join(kind.name()).join(key)
    }

    /// The entry's manifest, if the entry exists, is readable and still holds
    /// every file it lists, at its size (an entry damaged by hand, or by a clean
    /// killed halfway, counts as missing and is rebuilt).
    pub fn manifest(&self, kind: StageKind, key: &str) -> Option<Manifest> {
        let dir = self.entry_dir(kind, key);
        let manifest = Manifest::parse(&std::fs::read(dir.join(MANIFEST)).ok()?, key)?;
        let intact = manifest.outputs.iter().chain(&manifest.reports).all(|file| {
            std::fs::metadata(dir.join(&file.path)).is_ok_and(|m| m.is_file() && m.len() == file.bytes)
        });
        intact.then_some(manifest)
    }

    pub fn begin(&self, kind: StageKind, key: &str) -> std::io::Result<Pending> {
        let n = PENDING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join("tmp").join(format!(
            "{}-{}-{}-{n}@{}",
            kind.name(),
            &key[..16],
            std::process::id(),
            fsutil::host_name()
        ));
        let pending = Pending {
            dir,
            kind,
            key: key.to_string(),
        };
        std::fs::create_dir_all(pending.data_dir())?;
        std::fs::create_dir_all(pending.report_dir())?;
        Ok(pending)
    }

    /// Seals a pending entry: hashes its outputs, writes its manifest and timing
    /// and renames it into place, replacing an older entry of the same key (a
    /// forced rerun).
    pub fn commit(
        &self,
        pending: Pending,
        inputs: KeyInputs,
        outcome: StageOutcome,
        elapsed: Duration,
        built_by: &str,
    ) -> std::io::Result<Manifest> {
        let outputs = list_outputs(&pending.dir, DATA_DIR)?;
        let reports = list_outputs(&pending.dir, REPORT_DIR)?;
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA,
            key: pending.key.clone(),
            inputs: inputs.without_paths(),
            output_hash: hash_outputs(&outputs, None),
            outputs,
            reports,
            headline: outcome.headline,
            summary: outcome.summary,
            built_by: built_by.to_string(),
            fkp_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        fsutil::write_json(&pending.dir.join(MANIFEST), &manifest)?;
        let timing = Timing {
            seconds: elapsed.as_secs_f64(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            stage: outcome.timing,
        };
        fsutil::write_json(&pending.dir.join(TIMING), &timing)?;
        self.install(pending)?;
        Ok(manifest)
    }

    /// Seals a pending entry filled from elsewhere (a remote cache), whose files
    /// were checked against `manifest`.
    pub fn commit_fetched(&self, pending: Pending, manifest: &Manifest) -> std::io::Result<()> {
        fsutil::write_json(&pending.dir.join(MANIFEST), manifest)?;
        self.install(pending)
    }

    /// Renames a pending entry into place, replacing an older entry of the same
    /// key (a forced rerun).
    fn install(&self, pending: Pending) -> std::io::Result<()> {
        let target = self.entry_dir(pending.kind, &pending.key);
        std::fs::create_dir_all(target.parent().expect("entries have a parent"))?;
        if target.exists() {
            // A rename cannot replace a non-empty folder: the old entry goes first.
            self.remove_entry(&target)?;
        }
        std::fs::rename(&pending.dir, &target)
    }

    /// Removes an entry folder (or a checkpoint, or a leftover): renamed into
    /// `tmp/` first, which is atomic, so a removal killed halfway never leaves a
    /// partial entry in `entries/`; what is left in `tmp/` goes with the next run.
    pub fn remove_entry(&self, dir: &Path) -> std::io::Result<()> {
        let n = PENDING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = self.root.join("tmp").join(format!(
            "removing-{}-{}-{n}",
            &name[..name.len().min(16)],
            std::process::id()
        ));
        std::fs::create_dir_all(self.root.join("tmp"))?;
        std::fs::rename(dir, &aside)?;
        std::fs::remove_dir_all(&aside)
    }

    /// Waits until no other process (another machine's Slurm job, say) is
    /// building this key; the lock goes with the returned file.
    pub fn build_lock(&self, kind: StageKind, key: &str) -> std::io::Result<std::fs::File> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(format!("{}-{key}", kind.name())))?;
        file.lock()?;
        Ok(file)
    }

    /// Where the Slurm executor keeps its job scripts, logs and records.
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// The scripts and logs in `jobs/` of Slurm jobs that no record names any
    /// more (a record goes once a run has seen its job end).
    pub fn ended_job_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let items: Vec<PathBuf> = read_dir_if_any(&self.jobs_dir())?
            .iter()
            .map(|e| e.path())
            .collect();
        let plan_of = |path: &Path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.get(..16).unwrap_or_default().to_string()
        };
        let live: Vec<String> = items
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| plan_of(p))
            .collect();
        let mut ended: Vec<PathBuf> = items
            .into_iter()
            .filter(|p| p.extension().is_none_or(|x| x != "json") && !live.contains(&plan_of(p)))
            .collect();
        ended.sort();
        Ok(ended)
    }

    /// Where a stage keeps progress that must survive a killed run of the same key.
    pub fn checkpoint_dir(&self, kind: StageKind, key: &str) -> PathBuf {
        self.root
            .join("checkpoints")
            .join(format!("{}-{key}", kind.name()))
    }

    /// Every live log (`dag::live`), with the stage kind and key it belongs to.
    pub fn live_logs(&self) -> std::io::Result<Vec<(StageKind, String, PathBuf)>> {
        let mut found = Vec::new();
        for entry in read_dir_if_any(&self.root.join(super::live::LIVE_DIR))? {
            let path = entry.path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if let Some((kind, key)) = stem.split_once('-')
                && let Some(kind) = StageKind::from_name(kind)
            {
                found.push((kind, key.to_string(), path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Every checkpoint folder, with the key it belongs to.
    pub fn checkpoints(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut found = Vec::new();
        for entry in read_dir_if_any(&self.root.join("checkpoints"))? {
            let path = entry.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some((_, key)) = name.split_once('-') {
                found.push((key.to_string(), path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Run records are kept per workspace (a cache may be shared by several):
    /// `pipelines/<workspace id>/`, with the workspace's root in a `workspace` file.
    fn records_dir(&self, workspace: &Workspace) -> PathBuf {
        self.root.join("pipelines").join(workspace.id())
    }

    pub fn record(&self, workspace: &Workspace, pipeline: &str) -> Option<PipelineRecord> {
        let path = self.records_dir(workspace).join(format!("{pipeline}.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Saves a pipeline's record, unless it is unchanged (a cached rerun writes nothing).
    pub fn save_record(
        &self,
        workspace: &Workspace,
        pipeline: &str,
        record: &PipelineRecord,
    ) -> std::io::Result<()> {
        let dir = self.records_dir(workspace);
        let path = dir.join(format!("{pipeline}.json"));
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        std::fs::create_dir_all(&dir)?;
        let marker = dir.join(WORKSPACE_MARKER);
        if !marker.exists() {
            fsutil::write_atomic(&marker, workspace.root.as_os_str().as_encoded_bytes())?;
        }
        fsutil::write_atomic(&path, &bytes)
    }

    /// The records of the other workspaces that share this cache: their
    /// folder, and their records when the workspace still exists where it was.
    pub fn other_workspaces(
        &self,
        workspace: &Workspace,
    ) -> std::io::Result<Vec<(PathBuf, Option<Vec<PipelineRecord>>)>> {
        let own = workspace.id();
        let mut found = Vec::new();
        for entry in read_dir_if_any(&self.root.join("pipelines"))? {
            let dir = entry.path();
            if !dir.is_dir() || entry.file_name() == own.as_str() {
                continue;
            }
            let root = std::fs::read(dir.join(WORKSPACE_MARKER))
                .ok()
                .map(|bytes| fsutil::path_from_bytes(&bytes));
            let alive = root.is_some_and(|root| {
                root.is_dir() && Workspace::new(&root, None).id() == entry.file_name().to_string_lossy()
            });
            let records = alive.then(|| {
                read_dir_if_any(&dir)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                    .collect()
            });
            found.push((dir, records));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Every entry: its stage kind, key and folder.
    pub fn entries(&self) -> std::io::Result<Vec<(StageKind, String, PathBuf)>> {
        let mut found = Vec::new();
        for kind_dir in read_dir_if_any(&self.root.join("entries"))? {
            let Some(kind) = StageKind::from_name(&kind_dir.file_name().to_string_lossy()) else {
                continue;
            };
            for entry in std::fs::read_dir(kind_dir.path())? {
                let entry = entry?;
                found.push((
                    kind,
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Folders under `tmp/` whose builder process is gone: left by a killed run.
    pub fn abandoned_temp_dirs(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for entry in read_dir_if_any(&self.root.join("tmp"))? {
            let path = entry.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // `<stage>-<key16>-<pid>-<n>@<host>` or `removing-<name16>-<pid>-<n>`. A
            // process of another machine (a Slurm job's node) cannot be asked whether it
            // still runs: its folder stays until `fkp clean`.
            let (name, host) = name.split_once('@').unwrap_or((&name, ""));
            if !host.is_empty() && host != fsutil::host_name() {
                continue;
            }
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if pid.is_none_or(|pid| !fsutil::process_alive(pid)) {
                found.push(path);
            }
        }
        found.sort();
        Ok(found)
    }
}

/// A folder's entries; none when the folder does not exist (a read-only look at
/// a workspace that has not run yet).
fn read_dir_if_any(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(items) => items.collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// A hash over the outputs named in `only` (file names under `data/`), or over
/// all of them: what a downstream stage's key is made of.
pub fn hash_outputs(outputs: &[OutputFile], only: Option<&[&str]>) -> String {
    let mut hasher = blake3::Hasher::new();
    for output in outputs {
        let name = output
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if only.is_none_or(|only| only.contains(&name.as_ref())) {
            hasher.update(output.path.to_string_lossy().as_bytes());
            hasher.update(b"\0");
            hasher.update(output.hash.as_bytes());
            hasher.update(b"\n");
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// The files under the entry's `folder` (`data` or `report`), hashed, sorted.
fn list_outputs(entry: &Path, folder: &str) -> std::io::Result<Vec<OutputFile>> {
    let mut outputs = Vec::new();
    let mut stack = vec![entry.join(folder)];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir)? {
            let item = item?;
            let path = item.path();
            if item.file_type()?.is_dir() {
                stack.push(path);
            } else {
                outputs.push(OutputFile {
                    path: path.strip_prefix(entry).expect("under the entry").to_path_buf(),
                    bytes: item.metadata()?.len(),
                    hash: hash_file(&path)?,
                });
            }
        }
    }
    outputs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KeyInputs {
        KeyInputs {
            stage: StageKind::Ingest,
            version: 1,
            config: serde_json::json!({}),
            files: BTreeMap::new(),
            upstream: BTreeMap::new(),
        }
    }

    #[test]
    fn an_entry_appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = inputs().key();
        {
            let pending = store.begin(StageKind::Ingest, &key).unwrap();
            std::fs::write(pending.data_dir().join("half.parquet"), "half").unwrap();
            // Dropped without commit, as when a stage fails.
        }
        assert!(store.manifest(StageKind::Ingest, &key).is_none());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        let pending = store.begin(StageKind::Ingest, &key).unwrap();
        std::fs::write(pending.data_dir().join("out.parquet"), "whole").unwrap();
        let manifest = store
            .commit(
                pending,
                inputs(),
                StageOutcome::default(),
                Duration::from_millis(5),
                "p",
            )
            .unwrap();
        assert_eq!(manifest.outputs.len(), 1);
        assert_eq!(manifest.outputs[0].path, PathBuf::from("data/out.parquet"));
        let reread = store.manifest(StageKind::Ingest, &key).unwrap();
        assert_eq!(reread.output_hash, manifest.output_hash);
        assert_eq!(store.entries().unwrap().len(), 1);
    }

    #[test]
    fn a_forced_rerun_replaces_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = inputs().key();
        for content in ["first", "second"] {
            let pending = store.begin(StageKind::Ingest, &key).unwrap();
            std::fs::write(pending.data_dir().join("out"), content).unwrap();
            store
                .commit(pending, inputs(), StageOutcome::default(), Duration::ZERO, "p")
                .unwrap();
        }
        let out = store.entry_dir(StageKind::Ingest, &key).join("data/out");
        assert_eq!(std::fs::read_to_string(out).unwrap(), "second");
    }
}
