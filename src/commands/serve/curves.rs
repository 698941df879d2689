//! `/api/curves`: each training of a pipeline, epoch by epoch: from its cache
//! entry (`history.csv`, `timing.json`) once built, from its live log while it
//! runs or after it stopped midway. And `/api/reports`: the files of a
//! pipeline's `reports/` folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::hub::Hub;
use super::live_view::{BatchProgress, EpochPoint, RunState};
use crate::dag::{DATA_DIR, StateName, TIMING_FILE};
use crate::stages::StageKind;
use crate::stages::train::{HISTORY_FILE, read_history};

#[derive(Serialize)]
pub struct Curves {
    pub pipeline: String,
    /// One per training (several for a seed ensemble).
    pub runs: Vec<Run>,
}

#[derive(Serialize)]
pub struct Run {
    pub stage: String,
    pub key: Option<String>,
    /// The stage's state (`running` while its live log says so).
    pub state: String,
    /// The run's state, when a live log tells it.
    pub run: Option<RunState>,
    pub epochs: Option<usize>,
    pub points: Vec<EpochPoint>,
    pub batch: Option<BatchProgress>,
    pub eta_s: Option<f64>,
}

impl Curves {
    pub fn of(hub: &Hub, pipeline: &str) -> Option<Curves> {
        let view = hub.view();
        let status = view.status.as_ref()?;
        let found = status.pipelines.iter().find(|p| p.name == pipeline)?;
        let runs = found
            .stages
            .iter()
            .filter(|s| StageKind::Train.matches_label(&s.stage))
            .map(|stage| {
                // (a cached training's entry tells the whole story)
                let cached = stage.state == StateName::Cached;
                let track = (!cached)
                    .then_some(stage.key.as_deref())
                    .flatten()
                    .and_then(|key| hub.live(StageKind::Train, key));
                let points = match (&stage.entry, &track) {
                    (Some(entry), _) if cached => read_history_and_timing(entry).unwrap_or_default(),
                    (_, Some(track)) => track.curve.clone(),
                    _ => Vec::new(),
                };
                let running = track.as_ref().is_some_and(|t| t.state() == RunState::Running);
                Run {
                    stage: stage.stage.clone(),
                    key: stage.key.clone(),
                    state: if running { "running" } else { stage.state.as_str() }.to_string(),
                    run: track.as_ref().map(|t| t.state()),
                    epochs: track.as_ref().map(|t| t.epochs).filter(|&e| e > 0),
                    points,
                    batch: track.as_ref().and_then(|t| t.batch),
                    eta_s: track.as_ref().and_then(|t| t.eta_s()),
                }
            })
            .collect();
        Some(Curves {
            pipeline: pipeline.to_string(),
            runs,
        })
    }
}

/// A built training's epochs: `history.csv` with `timing.json`'s speeds.
fn read_history_and_timing(entry: &Path) -> Option<Vec<EpochPoint>> {
    let history = read_history(&entry.join(DATA_DIR).join(HISTORY_FILE)).ok()?;
    let timing: serde_json::Value = std::fs::read(entry.join(TIMING_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let epochs = timing["stage"]["epochs"].as_array().cloned().unwrap_or_default();
    let timed = |epoch: usize, field: &str| {
        epochs
            .iter()
            .find(|e| e["epoch"].as_u64() == Some(epoch as u64))?[field]
            .as_f64()
    };
    Some(
        history
            .into_iter()
            .map(|log| EpochPoint {
                images_per_s: timed(log.epoch, "images_per_s"),
                seconds: timed(log.epoch, "seconds"),
                at_ms: None,
                log,
            })
            .collect(),
    )
}

/// The files of a pipeline's report folder, relative to `reports/`, sorted.
pub fn report_files(hub: &Hub, pipeline: &str) -> Option<Vec<String>> {
    let view = hub.view();
    let found = view
        .status
        .as_ref()?
        .pipelines
        .iter()
        .find(|p| p.name == pipeline)?;
    let reports = &hub.workspace.reports_dir;
    let mut files = Vec::new();
    let mut folders: Vec<PathBuf> = vec![found.reports_dir.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => folders.push(path),
                Ok(kind) if kind.is_file() => {
                    if let Ok(relative) = path.strip_prefix(reports) {
                        files.push(relative.display().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    files.sort();
    Some(files)
}
