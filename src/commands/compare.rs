//! `fkp compare`: the report's table for pipelines already run, read from the
//! cache without running anything and without the workspace's write lock. A
//! pipeline that is not fully cached is listed as stale or missing, with why,
//! never scored from old outputs. `--against` adds "was → now (Δ)" for every
//! metric of an earlier report JSON and marks regressions.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{Context, Error, Exit, print_out};
use crate::config::Choice;
use crate::dag::{self, DagError, Graph, StatusReport};
use crate::fsutil::relative_link;
use crate::render::{Cell, ReportTable};
use crate::render::{RenderError, escape_html};
use crate::stages::report::{
    self, Compared, Comparison, MemberFiles, ReportStageError, RowTiming, SortBy, train_timing, views,
};
use crate::stages::{MemberInfo, StageKind};
use crate::workspace::Workspace;

/// Where each pipeline's own report is, from the workspace (the current folder).
const WORKSPACE_REPORTS_LINK: &str = "reports/";

/// A quality metric regresses when it worsens by more than this many percent
/// of its earlier value (RMSE, MAE) or this many percentage points (PCK).
pub const REGRESSION_TOLERANCE: f64 = 1.0;

#[derive(Args)]
pub(super) struct CompareArgs {
    /// Pipeline files (TOML) with [evaluate], or report files.
    #[arg(required = true, value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
    /// An earlier report JSON (report.json, or `--format json` output):
    /// adds "was → now (Δ)" for every metric and marks regressions.
    #[arg(long, value_name = "FILE.json")]
    against: Option<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also write index.md, index.html, report.json and the pictures here.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// With --against: exit 3 when a quality metric regressed (after printing).
    #[arg(long, requires = "against")]
    fail_on_regression: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Md,
    Json,
    Html,
}

pub(super) fn execute(args: CompareArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&args.pipelines)?;
    let result = compare(&graph, &context.workspace, args.against.as_deref())?;
    if let Some(dir) = &args.output {
        result.write(dir)?;
    }
    print_out(&match args.format {
        Format::Table => result.to_terminal(),
        Format::Md => result.to_markdown(),
        Format::Json => result.to_json(),
        Format::Html => result.to_html()?,
    })?;
    let Some(against) = args.against.filter(|_| args.fail_on_regression) else {
        return Ok(Exit::Success);
    };
    // A gate that compared nothing has not passed.
    if result.comparison.rows.is_empty() {
        return Err(Error::NothingCompared { against });
    }
    if result.regressions() > 0 {
        context.console.error(&format!(
            "{} regressions against {} (--fail-on-regression)",
            result.regressions(),
            against.display()
        ));
        return Ok(Exit::Regressions);
    }
    Ok(Exit::Success)
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Dag(#[from] DagError),
    #[error(transparent)]
    Report(#[from] ReportStageError),
    #[error("pipeline `{0}` has no [evaluate] stage and lists no pipelines: nothing to compare")]
    NothingToCompare(String),
    #[error("--output {0} is not a folder")]
    OutputNotAFolder(PathBuf),
    #[error("cannot read --against {path}: {message}")]
    Against { path: PathBuf, message: String },
}

/// A pipeline left out of the table, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotCompared {
    pub pipeline: String,
    /// `stale` or `missing`.
    pub state: String,
    pub reason: String,
}

/// One metric of one pipeline, then and now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricChange {
    pub pipeline: String,
    pub metric: String,
    pub was: Option<f64>,
    pub now: Option<f64>,
    pub delta: Option<f64>,
    /// Quality metrics only; timings are shown, never judged.
    pub regression: bool,
}

/// What `fkp compare` produces: the comparison, what it could not score, and
/// the changes against an earlier report.
#[derive(Debug, Serialize)]
pub struct CompareResult {
    #[serde(flatten)]
    pub comparison: Comparison,
    pub not_compared: Vec<NotCompared>,
    pub against: Option<PathBuf>,
    pub changes: Vec<MetricChange>,
    /// What the table lacks and why (a baseline that is not compared: no Δ columns).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What the pictures are drawn from.
    #[serde(skip)]
    compared: Compared,
    /// The workspace's `reports/`, which each pipeline's row links to.
    #[serde(skip)]
    reports_dir: PathBuf,
}

/// Compares the evaluated pipelines among `graph`'s (a report's members when
/// a report file is named, with its baseline and order).
pub fn compare(
    graph: &Graph,
    workspace: &Workspace,
    against: Option<&Path>,
) -> Result<CompareResult, CompareError> {
    let status = dag::status(graph, workspace)?;
    compare_within(
        graph,
        &status,
        workspace,
        ReportSettings::of(graph),
        None,
        against,
    )
}

/// Compares the pipelines picked among `graph`'s (by index; each with
/// [evaluate]), with Δ columns against `baseline`: `fkp serve`'s selections.
pub fn compare_picked(
    graph: &Graph,
    status: &StatusReport,
    workspace: &Workspace,
    picked: &[usize],
    baseline: Option<String>,
) -> Result<CompareResult, CompareError> {
    let settings = ReportSettings {
        reports: Vec::new(),
        this: None,
        baseline,
        sort_by: SortBy::Rmse,
    };
    compare_within(graph, status, workspace, settings, Some(picked), None)
}

fn compare_within(
    graph: &Graph,
    status: &StatusReport,
    workspace: &Workspace,
    settings: ReportSettings,
    picked: Option<&[usize]>,
    against: Option<&Path>,
) -> Result<CompareResult, CompareError> {
    let (cached, not_compared) = cached_pipelines(graph, status, &settings.reports, picked)?;
    let infos: Vec<MemberInfo> = cached.iter().map(|&index| graph.describe(index)).collect();
    let members: Vec<(&MemberInfo, MemberFiles)> = infos
        .iter()
        .zip(&cached)
        .map(|(info, &index)| (info, member_files(status, index)))
        .collect();
    let is_compared = |name: &str| infos.iter().any(|info| info.name == name);
    let notes = match &settings.baseline {
        Some(name) if !is_compared(name) => vec![baseline_note(name, &not_compared)],
        _ => Vec::new(),
    };
    let baseline = settings.baseline.as_deref().filter(|name| is_compared(name));
    let compared = report::gather(settings.this.as_ref(), &members, baseline, settings.sort_by)?;
    let timing = train_timings(status, &cached, &infos);
    let comparison = views::with_timing(&compared.comparison, &timing);
    let changes = match against {
        Some(path) => changes_against(&comparison, &read_against(path)?),
        None => Vec::new(),
    };
    Ok(CompareResult {
        comparison,
        not_compared,
        against: against.map(Path::to_path_buf),
        changes,
        notes,
        compared,
        reports_dir: workspace.reports_dir.clone(),
    })
}
/// What a report file named on the command line says about the comparison.
struct ReportSettings {
    /// The pipelines that are reports.
    reports: Vec<usize>,
    /// The one report's own name and description, when one is named.
    this: Option<MemberInfo>,
    baseline: Option<String>,
    sort_by: SortBy,
}

impl ReportSettings {
    /// The named report's settings; defaults when none or several are named.
    fn of(graph: &Graph) -> ReportSettings {
        let reports: Vec<usize> = (0..graph.pipelines.len())
            .filter(|&p| {
                graph
                    .nodes_of(p)
                    .any(|n| graph.nodes[n].kind == StageKind::Report)
            })
            .collect();
        let [one] = reports.as_slice() else {
            return ReportSettings {
                reports,
                this: None,
                baseline: None,
                sort_by: SortBy::Rmse,
            };
        };
        let settings = graph.pipelines[*one]
            .stage(StageKind::Report)
            .map(|s| s.config())
            .unwrap_or_default();
        let sort_by = settings["sort_by"]
            .as_str()
            .and_then(|name| SortBy::NAMES.iter().position(|n| *n == name))
            .map_or(SortBy::Rmse, SortBy::from_index);
        ReportSettings {
            this: Some(graph.describe(*one)),
            baseline: settings["baseline"].as_str().map(str::to_string),
            sort_by,
            reports,
        }
    }
}

/// The evaluated pipelines whose stages are all cached, and the others with
/// why. A report without [evaluate] stands for its members; a pipeline named
/// alone must have [evaluate].
fn cached_pipelines(
    graph: &Graph,
    status: &StatusReport,
    reports: &[usize],
    picked: Option<&[usize]>,
) -> Result<(Vec<usize>, Vec<NotCompared>), CompareError> {
    let mut cached = Vec::new();
    let mut not_compared = Vec::new();
    let is_picked = |index: &usize| picked.is_none_or(|picked| picked.contains(index));
    for (index, pipeline) in graph.pipelines.iter().enumerate().filter(|(i, _)| is_picked(i)) {
        if pipeline.stage(StageKind::Evaluate).is_none() {
            if reports.contains(&index) || graph.is_member(index) {
                continue;
            }
            return Err(CompareError::NothingToCompare(pipeline.name.clone()));
        }
        let waiting = status.pipelines[index]
            .stages
            .iter()
            .filter(|s| s.stage != StageKind::Report.name())
            .find(|s| s.state != dag::StateName::Cached);
        match waiting {
            Some(stage) => not_compared.push(NotCompared {
                pipeline: pipeline.name.clone(),
                state: serde_json::to_value(&stage.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                reason: format!("[{}] {}", stage.stage, stage.reason.clone().unwrap_or_default()),
            }),
            None => cached.push(index),
        }
    }
    Ok((cached, not_compared))
}

/// A cached pipeline's files that a report reads, in the entries status found
/// (a seed ensemble's first training's); `None` for a stage the pipeline lacks.
fn member_files(status: &StatusReport, pipeline: usize) -> MemberFiles {
    MemberFiles::locate(|kind, file| {
        let entry = entry_dirs(status, pipeline, kind).into_iter().next()?;
        Some(entry.join(dag::DATA_DIR).join(file))
    })
}

/// Every training's timing (each of a seed ensemble's), by pipeline name.
fn train_timings(
    status: &StatusReport,
    pipelines: &[usize],
    infos: &[MemberInfo],
) -> Vec<(String, Option<RowTiming>)> {
    let mut timing = Vec::new();
    for (&index, info) in pipelines.iter().zip(infos) {
        for dir in entry_dirs(status, index, StageKind::Train) {
            let train = std::fs::read(dir.join(dag::TIMING_FILE))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .and_then(|t: serde_json::Value| train_timing(&t));
            timing.push((info.name.clone(), train));
        }
    }
    timing
}

/// Why the table has no Δ columns: the baseline is not among the compared.
fn baseline_note(baseline: &str, not_compared: &[NotCompared]) -> String {
    let state = not_compared
        .iter()
        .find(|n| n.pipeline == baseline)
        .map_or("not compared".to_string(), |n| n.state.clone());
    format!("no Δ columns: the baseline `{baseline}` is {state}, so there is nothing to measure against")
}

/// The entry of every instance of `kind` (each training of a seed ensemble).
fn entry_dirs(status: &StatusReport, pipeline: usize, kind: StageKind) -> Vec<PathBuf> {
    status.pipelines[pipeline]
        .stages
        .iter()
        .filter(|s| kind.matches_label(&s.stage))
        .filter_map(|s| s.entry.clone())
        .collect()
}

fn read_against(path: &Path) -> Result<Comparison, CompareError> {
    let error = |message: String| CompareError::Against {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| error(format!("not JSON: {e}")))?;
    match json["schema"].as_str() {
        Some(report::SCHEMA) => {}
        Some(other) => {
            return Err(error(format!(
                "its schema is `{}`, not `{}`: not an fkp report of this version",
                crate::text::excerpt(other),
                report::SCHEMA
            )));
        }
        None => {
            return Err(error(format!(
                "no `schema`: not an fkp report JSON ({})",
                report::SCHEMA
            )));
        }
    }
    serde_json::from_value(json).map_err(|e| error(format!("a damaged {} report: {e}", report::SCHEMA)))
}

/// Whether a change of a metric is a regression: `higher_is_worse` for errors.
fn regressed(was: f64, now: f64, higher_is_worse: bool, relative: bool) -> bool {
    let worse_by = if higher_is_worse { now - was } else { was - now };
    let allowed = if relative {
        was.abs() * REGRESSION_TOLERANCE / 100.0
    } else {
        REGRESSION_TOLERANCE
    };
    worse_by > allowed
}

/// Every metric of every pipeline in `now`, against the same pipeline in `was`.
pub fn changes_against(now: &Comparison, was: &Comparison) -> Vec<MetricChange> {
    type Get = fn(&report::Row) -> Option<f64>;
    /// (higher is worse, tolerance relative) of a judged metric.
    type Judged = Option<(bool, bool)>;
    let metrics: [(&str, Get, Judged); 6] = [
        ("rmse_px", |r| Some(r.rmse_px), Some((true, true))),
        ("mae_px", |r| Some(r.mae_px), Some((true, true))),
        ("pck_5", |r| r.pck_5, Some((false, false))),
        ("pck_10", |r| r.pck_10, Some((false, false))),
        (
            "train_seconds",
            |r| r.timing.as_ref().map(|t| t.train_seconds),
            None,
        ),
        (
            "images_per_s",
            |r| r.timing.as_ref().and_then(|t| t.images_per_s),
            None,
        ),
    ];
    let mut changes = Vec::new();
    for row in &now.rows {
        let old = was.rows.iter().find(|r| r.pipeline == row.pipeline);
        for (metric, get, judged) in metrics {
            let (was_value, now_value) = (old.and_then(get), get(row));
            let delta = was_value.zip(now_value).map(|(w, n)| n - w);
            let regression = match (judged, was_value, now_value) {
                (Some((higher_is_worse, relative)), Some(w), Some(n)) => {
                    regressed(w, n, higher_is_worse, relative)
                }
                _ => false,
            };
            changes.push(MetricChange {
                pipeline: row.pipeline.clone(),
                metric: metric.to_string(),
                was: was_value,
                now: now_value,
                delta,
                regression,
            });
        }
    }
    changes
}

impl CompareResult {
    pub fn regressions(&self) -> usize {
        self.changes.iter().filter(|c| c.regression).count()
    }

    /// "was → now (Δ)" per pipeline and metric.
    pub fn changes_table(&self) -> ReportTable {
        let mut metrics: Vec<&str> = Vec::new();
        for change in &self.changes {
            if !metrics.contains(&change.metric.as_str()) {
                metrics.push(&change.metric);
            }
        }
        let columns = std::iter::once("pipeline")
            .chain(metrics.iter().copied())
            .chain(std::iter::once("regressions"));
        let mut table = ReportTable::new(columns, 3);
        for row in &self.comparison.rows {
            let mine: Vec<&MetricChange> = self
                .changes
                .iter()
                .filter(|c| c.pipeline == row.pipeline)
                .collect();
            let mut cells = vec![Cell::from(row.pipeline.clone())];
            for metric in &metrics {
                let text = mine
                    .iter()
                    .find(|c| c.metric == *metric)
                    .map_or(String::new(), |c| {
                        let show = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
                        let delta = c.delta.map_or(String::new(), |d| format!(" ({d:+.3})"));
                        let mark = if c.regression { " ✗" } else { "" };
                        format!("{} → {}{delta}{mark}", show(c.was), show(c.now))
                    });
                cells.push(text.into());
            }
            cells.push(mine.iter().filter(|c| c.regression).count().into());
            table.push(cells);
        }
        table
    }

    /// The pipelines left out and what the table lacks, a line each.
    fn not_compared_text(&self) -> String {
        let left_out = self
            .not_compared
            .iter()
            .map(|n| format!("not compared: `{}` is {}: {}\n", n.pipeline, n.state, n.reason));
        let notes = self.notes.iter().map(|note| format!("{note}\n"));
        left_out.chain(notes).collect()
    }

    pub fn to_terminal(&self) -> String {
        let mut text = match self.comparison.rows.is_empty() {
            true => "no pipeline is fully cached yet: nothing to compare\n".to_string(),
            false => format!(
                "{}\n{}\n{}{}",
                self.comparison.scored_on(),
                self.comparison.table().to_terminal(),
                self.comparison.seed_table().map_or(String::new(), |t| format!(
                    "{}\n{}\n",
                    views::SEEDS_TITLE,
                    t.to_terminal()
                )),
                self.comparison.keypoint_table().to_terminal()
            ),
        };
        if let Some(path) = &self.against {
            text.push_str(&format!(
                "\nagainst {} ({} regressions; tolerance {REGRESSION_TOLERANCE}% for RMSE/MAE, {REGRESSION_TOLERANCE} percentage point for PCK):\n{}",
                path.display(),
                self.regressions(),
                self.changes_table().to_terminal()
            ));
        }
        text.push('\n');
        text.push_str(&self.not_compared_text());
        text
    }

    /// Printed: read from the workspace, where the pipelines' reports are `reports/<name>/`.
    pub fn to_markdown(&self) -> String {
        let mut text = views::markdown(&self.comparison, Path::new(""), "", WORKSPACE_REPORTS_LINK);
        text.push_str(&self.against_markdown());
        text
    }

    /// The `--against` section, in Markdown (empty without `--against`).
    pub fn against_markdown(&self) -> String {
        let mut text = String::new();
        if let Some(path) = &self.against {
            text.push_str(&format!(
                "\n## Against {}\n\n{} regressions (a quality metric worse by more than {REGRESSION_TOLERANCE}% for RMSE/MAE, {REGRESSION_TOLERANCE} percentage point for PCK; timings are not judged).\n\n{}\n",
                path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                self.regressions(),
                self.changes_table().to_markdown()
            ));
        }
        if !self.not_compared.is_empty() || !self.notes.is_empty() {
            text.push_str(&format!("\n{}", self.not_compared_text()));
        }
        text
    }

    /// Writes the report's documents and pictures into `dir`: `index.md`,
    /// `index.html`, `report.json` (this result, `--against` changes included).
    pub fn write(&self, dir: &Path) -> Result<(), CompareError> {
        if dir.exists() && !dir.is_dir() {
            return Err(CompareError::OutputNotAFolder(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| RenderError::write(dir, e))
            .map_err(ReportStageError::from)?;
        if !self.comparison.rows.is_empty() {
            self.compared.draw(report::DEFAULT_FACES, dir)?;
        }
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            crate::fsutil::write_atomic(&path, text.as_bytes())
                .map_err(|e| ReportStageError::from(RenderError::write(&path, e)))
        };
        // Links to the pipelines' own reports lead there from wherever `dir` is.
        let absolute = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let reports_link = match self.reports_dir.parent() {
            Some(root) => relative_link(
                &absolute(dir),
                &absolute(root).join(self.reports_dir.file_name().unwrap_or_default()),
            ),
            None => WORKSPACE_REPORTS_LINK.to_string(),
        };
        let mut markdown = views::markdown(&self.comparison, dir, "", &reports_link);
        markdown.push_str(&self.against_markdown());
        write("index.md", markdown)?;
        write(
            "index.html",
            views::html(&self.comparison, dir, &self.against_html(), &reports_link),
        )?;
        write("report.json", self.to_json())?;
        Ok(())
    }

    /// The self-contained HTML, its pictures drawn in a scratch folder and inlined.
    pub fn to_html(&self) -> Result<String, CompareError> {
        let scratch = tempfile::tempdir()
            .map_err(|e| ReportStageError::from(RenderError::write(&std::env::temp_dir(), e)))?;
        if !self.comparison.rows.is_empty() {
            self.compared.draw(report::DEFAULT_FACES, scratch.path())?;
        }
        Ok(views::html(
            &self.comparison,
            scratch.path(),
            &self.against_html(),
            WORKSPACE_REPORTS_LINK,
        ))
    }

    /// The `--against` section and the pipelines left out, in HTML.
    fn against_html(&self) -> String {
        let mut html = String::new();
        if let Some(path) = &self.against {
            html.push_str(&format!(
                "<h2>Against {}</h2>\n<p class=\"note\">{} regressions (a quality metric worse by more than {REGRESSION_TOLERANCE}% for RMSE/MAE, {REGRESSION_TOLERANCE} percentage point for PCK; timings are not judged).</p>\n{}",
                escape_html(&path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())),
                self.regressions(),
                self.changes_table().to_html()
            ));
        }
        for line in self.not_compared_text().lines() {
            html.push_str(&format!("<p class=\"note\">{}</p>\n", escape_html(line)));
        }
        html
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}
