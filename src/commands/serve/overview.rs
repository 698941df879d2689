//! `/api/overview`: every pipeline with its stages' states (the status, with
//! `running` and the progress of the stages whose live log says so), the
//! reports that list it, and the pipeline files that do not load.

use std::path::Path;

use serde::Serialize;

use super::hub::{Hub, LoadProblem};
use super::live_view::{BatchProgress, LiveTrack, RunState};
use crate::dag::StateName;
use crate::stages::StageKind;

#[derive(Serialize)]
pub struct Overview {
    /// Counts status changes; the `status` event carries the same number.
    pub generation: u64,
    pub workspace: String,
    pub pipelines: Vec<PipelineView>,
    pub problems: Vec<LoadProblem>,
}

#[derive(Serialize)]
pub struct PipelineView {
    pub name: String,
    /// Relative to the workspace.
    pub file: String,
    pub description: Option<String>,
    /// Whether it has an [evaluate] stage (it can be compared).
    pub evaluated: bool,
    /// The pipelines it lists, when it is a report.
    pub members: Vec<String>,
    /// The reports that list it.
    pub reports: Vec<String>,
    /// Its report page (`reports/<name>/index.html`), when one was written.
    pub report_page: Option<String>,
    pub stages: Vec<StageView>,
}

#[derive(Serialize)]
pub struct StageView {
    pub stage: String,
    /// `cached`, `stale`, `missing`, `partial`, or `running`.
    pub state: &'static str,
    pub reason: Option<String>,
    pub key: Option<String>,
    pub resume_epoch: Option<usize>,
    /// What its live log says, when it has one.
    pub run: Option<RunView>,
}

#[derive(Serialize)]
pub struct RunView {
    pub state: RunState,
    /// Epochs done, of `epochs`.
    pub epoch: usize,
    pub epochs: usize,
    pub batch: Option<BatchProgress>,
    pub eta_s: Option<f64>,
    pub val_rmse_px: Option<f64>,
    pub images_per_s: Option<f64>,
    pub message: Option<String>,
}

impl RunView {
    fn of(track: &LiveTrack) -> RunView {
        let last = track.curve.last();
        RunView {
            state: track.state(),
            epoch: last.map_or(0, |p| p.log.epoch),
            epochs: track.epochs,
            batch: track.batch,
            eta_s: track.eta_s(),
            val_rmse_px: last.map(|p| p.log.val_rmse_px),
            images_per_s: last.and_then(|p| p.images_per_s),
            message: track.message.clone(),
        }
    }
}

impl Overview {
    pub fn of(hub: &Hub) -> Overview {
        let view = hub.view();
        let root = &hub.workspace.root;
        let mut pipelines = Vec::new();
        if let (Some(graph), Some(status)) = (view.graph.as_deref(), &view.status) {
            let (mut members, mut reports) = (vec![Vec::new(); graph.pipelines.len()], Vec::new());
            for index in 0..graph.pipelines.len() {
                let names: Vec<String> = graph
                    .reports_of(index)
                    .into_iter()
                    .map(|r| {
                        members[r].push(graph.pipelines[index].name.clone());
                        graph.pipelines[r].name.clone()
                    })
                    .collect();
                reports.push(names);
            }
            for (index, pipeline) in status.pipelines.iter().enumerate() {
                let stages = pipeline
                    .stages
                    .iter()
                    .map(|stage| {
                        let kind = StageKind::of_label(&stage.stage);
                        // A cached stage's entry tells the whole story, even in the
                        // moment before the follower sees its live log gone.
                        let track = kind
                            .zip(stage.key.as_deref())
                            .filter(|_| stage.state != StateName::Cached)
                            .and_then(|(k, key)| hub.live(k, key));
                        let running = track.as_ref().is_some_and(|t| t.state() == RunState::Running);
                        StageView {
                            stage: stage.stage.clone(),
                            state: if running { "running" } else { stage.state.as_str() },
                            reason: stage.reason.clone(),
                            key: stage.key.clone(),
                            resume_epoch: stage.resume_epoch,
                            run: track.as_ref().map(RunView::of),
                        }
                    })
                    .collect();
                let page = pipeline.reports_dir.join("index.html");
                pipelines.push(PipelineView {
                    name: pipeline.name.clone(),
                    file: relative(&pipeline.file, root),
                    description: graph.pipelines[index].description.clone(),
                    evaluated: graph.pipelines[index].stage(StageKind::Evaluate).is_some(),
                    members: std::mem::take(&mut members[index]),
                    reports: std::mem::take(&mut reports[index]),
                    report_page: page
                        .is_file()
                        .then(|| relative(&page, &hub.workspace.reports_dir)),
                    stages,
                });
            }
        }
        Overview {
            generation: view.generation,
            workspace: root.display().to_string(),
            pipelines,
            problems: view.problems.clone(),
        }
    }
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}
