//! The evaluation's tables and `metrics.md`, made from `metrics.json`.

use std::path::Path;

use super::metrics_json::{Metrics, ScoreSet};
use crate::render::{Cell, RenderError, ReportTable};

/// The tables of one evaluation: overall, per keypoint, and an ensemble's members.
pub struct MetricsTables<'a> {
    metrics: &'a Metrics,
    overall: ReportTable,
    per_keypoint: ReportTable,
    members: Option<ReportTable>,
}

impl MetricsTables<'_> {
    pub fn of(metrics: &Metrics) -> MetricsTables<'_> {
        MetricsTables {
            metrics,
            overall: overall_table(metrics),
            per_keypoint: keypoint_table(metrics),
            members: members_table(metrics),
        }
    }

    /// Writes `metrics.md` and the tables as Parquet into the report folder.
    pub fn write(&self, report_dir: &Path) -> Result<(), RenderError> {
        let markdown = report_dir.join("metrics.md");
        std::fs::write(&markdown, self.markdown()).map_err(|e| RenderError::write(&markdown, e))?;
        self.overall.write_parquet(&report_dir.join("metrics.parquet"))?;
        self.per_keypoint
            .write_parquet(&report_dir.join("metrics_per_keypoint.parquet"))
    }

    fn markdown(&self) -> String {
        let members_section = match &self.members {
            Some(table) => format!("\n\n## Members of the ensemble\n\n{}", table.to_markdown()),
            None => String::new(),
        };
        format!(
            "# Evaluation\n\n{}\n\n{}{members_section}\n\n## Per keypoint (RMSE, pixels)\n\n{}\n\n\
             {}\n\n![validation faces: dots true, crosses predicted](predictions.png)\n",
            describe_models(self.metrics),
            self.overall.to_markdown(),
            self.per_keypoint.to_markdown(),
            curve_links(self.metrics),
        )
    }

    /// What the terminal shows: the members (if any), overall, per keypoint.
    pub fn summary(&self) -> String {
        let summary = format!(
            "{}\n{}",
            self.overall.to_terminal(),
            self.per_keypoint.to_terminal()
        );
        match &self.members {
            Some(table) => format!("{}\n{summary}", table.to_terminal()),
            None => summary,
        }
    }
}

/// The first line of `metrics.md`: which model, or which ensemble.
fn describe_models(metrics: &Metrics) -> String {
    let model = &metrics.model;
    match metrics.members.as_slice() {
        [] => format!(
            "{} ({} parameters), {} epochs on {}; best epoch {}.",
            model.spec.graph.name, model.parameters, model.epochs_run, model.device, model.best_epoch
        ),
        members => {
            let seeds: Vec<String> = members.iter().map(|m| m.seed.to_string()).collect();
            format!(
                "An ensemble of {} {} models ({} parameters each) on {}, trained with seeds {}: \
                 the scores average their predictions.",
                members.len(),
                model.spec.graph.name,
                model.parameters,
                model.device,
                seeds.join(", ")
            )
        }
    }
}

/// Links to the learning curves: the model's, or each member's in its folder.
fn curve_links(metrics: &Metrics) -> String {
    match metrics.members.as_slice() {
        [] => "![learning curves](learning_curves.png)".to_string(),
        members => members
            .iter()
            .map(|m| {
                format!(
                    "![learning curves, seed {0}](seed-{0}/learning_curves.png)",
                    m.seed
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

/// Each member of an ensemble alone, beside the ensemble: validation RMSE
/// (on full labels where there are), with and without TTA.
fn members_table(metrics: &Metrics) -> Option<ReportTable> {
    if metrics.members.is_empty() {
        return None;
    }
    let (_, scored_on) = metrics.scores.headline();
    let has_tta = !metrics.tta.is_empty();
    let mut columns = vec![
        "model".to_string(),
        "epochs run".to_string(),
        "best epoch".to_string(),
        format!("RMSE px ({scored_on})"),
        format!("PCK@10% ({scored_on})"),
    ];
    if has_tta {
        columns.push(format!("RMSE px without TTA ({scored_on})"));
    }
    let mut table = ReportTable::new(columns, 3);
    let mut push = |name: String, epochs: Cell, best: Cell, scores: &ScoreSet, plain: Option<&ScoreSet>| {
        let (headline, _) = scores.headline();
        let mut row = vec![
            Cell::from(name),
            epochs,
            best,
            headline.rmse_px.into(),
            headline.pck_10.into(),
        ];
        if has_tta {
            row.push(plain.map(|p| p.headline().0.rmse_px).into());
        }
        table.push(row);
    };
    for member in &metrics.members {
        push(
            format!("seed {}", member.seed),
            member.epochs_run.into(),
            member.best_epoch.into(),
            &member.scores,
            member.without_tta.as_ref(),
        );
    }
    push(
        "ensemble (mean of predictions)".to_string(),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
        &metrics.scores,
        metrics.without_tta.as_ref(),
    );
    Some(table)
}

fn overall_table(metrics: &Metrics) -> ReportTable {
    let mut table = ReportTable::new(
        [
            "scored on",
            "faces",
            "points",
            "RMSE px",
            "MAE px",
            "PCK@5%",
            "PCK@10%",
            "mean-shape RMSE px",
        ],
        3,
    );
    let with = if metrics.tta.is_empty() { "" } else { ", with TTA" };
    let plain = metrics.without_tta.as_ref();
    let sets = [
        (
            "validation (sparse labels)",
            with,
            Some(&metrics.scores.validation),
        ),
        (
            "validation (full labels)",
            with,
            metrics.scores.validation_full_labels.as_ref(),
        ),
        ("data file", with, metrics.scores.data.as_ref()),
        (
            "validation (sparse labels)",
            ", without TTA",
            plain.map(|p| &p.validation),
        ),
        (
            "validation (full labels)",
            ", without TTA",
            plain.and_then(|p| p.validation_full_labels.as_ref()),
        ),
        ("data file", ", without TTA", plain.and_then(|p| p.data.as_ref())),
    ];
    for (name, how, scores) in sets {
        if let Some(s) = scores {
            table.push(vec![
                format!("{name}{how}").into(),
                s.rows.into(),
                s.labelled_points.into(),
                s.rmse_px.into(),
                s.mae_px.into(),
                s.pck_5.into(),
                s.pck_10.into(),
                s.mean_shape_rmse_px.into(),
            ]);
        }
    }
    table
}

fn keypoint_table(metrics: &Metrics) -> ReportTable {
    let full = metrics.scores.validation_full_labels.as_ref();
    let mut columns = vec!["keypoint", "points", "validation RMSE px"];
    if full.is_some() {
        columns.extend(["points (full labels)", "RMSE px (full labels)"]);
    }
    let mut table = ReportTable::new(columns, 3);
    for (k, score) in metrics.scores.validation.per_keypoint.iter().enumerate() {
        let mut row = vec![
            Cell::from(score.keypoint.clone()),
            score.labelled_points.into(),
            score.rmse_px.into(),
        ];
        if let Some(full) = full {
            row.push(full.per_keypoint[k].labelled_points.into());
            row.push(full.per_keypoint[k].rmse_px.into());
        }
        table.push(row);
    }
    table
}
