//! The documents a person reads: `index.md` (for GitHub), `index.html` (one
//! self-contained file, pictures inline, no network) and `report.json`
//! (`fkp.report/1`, with timings). They are rendered from a [`Comparison`] and
//! the volatile timings, both by the report stage at publish time and by
//! `fkp compare`.
//!
//! Everything but the timing section is exact. The timing section sits between
//! [`TIMING_START`] and [`TIMING_END`], so a test can compare the rest.

use std::path::{Path, PathBuf};

use base64::Engine;

use super::comparison::{Comparison, RowTiming};
use super::{COMPARISON_FILE, ReportStageError};
use crate::dag::{DATA_DIR, REPORT_DIR, TIMING_FILE};
use crate::fsutil;
use crate::render::{RenderError, ReportTable, escape_html};

pub const TIMING_START: &str = "<!-- fkp:timing -->";
pub const TIMING_END: &str = "<!-- /fkp:timing -->";

/// The pictures a report draws, with their captions, in the order shown.
pub const FIGURES: [(&str, &str); 5] = [
    ("val_rmse_curves", "Validation RMSE per epoch"),
    ("train_loss_curves", "Training loss per epoch"),
    ("keypoint_rmse", "RMSE per keypoint"),
    ("face_rmse_distribution", "Per-face RMSE"),
    (
        "faces_by_pipeline",
        "The worst validation faces, predicted by every pipeline",
    ),
];

/// The comparison with each row's timing filled in from `timing`, which has
/// one entry per training: a seed ensemble's seconds add up, its images/s are
/// the mean of its members'.
pub fn with_timing(comparison: &Comparison, timing: &[(String, Option<RowTiming>)]) -> Comparison {
    let mut timed = comparison.clone();
    for row in &mut timed.rows {
        let trainings: Vec<Option<&RowTiming>> = timing
            .iter()
            .filter(|(pipeline, _)| *pipeline == row.pipeline)
            .map(|(_, t)| t.as_ref())
            .collect();
        let Some(all) = trainings.into_iter().collect::<Option<Vec<&RowTiming>>>() else {
            row.timing = None;
            continue;
        };
        let rates: Option<Vec<f64>> = all.iter().map(|t| t.images_per_s).collect();
        row.timing = (!all.is_empty()).then(|| RowTiming {
            train_seconds: all.iter().map(|t| t.train_seconds).sum(),
            images_per_s: rates.map(|r| r.iter().sum::<f64>() / r.len() as f64),
        });
    }
    timed
}

/// Renders the views of the report entry at `entry` into `dir`; returns the
/// files written, relative to `dir`.
pub fn publish(entry: &Path, dir: &Path) -> Result<Vec<PathBuf>, ReportStageError> {
    let data = entry.join(DATA_DIR).join(COMPARISON_FILE);
    let bytes = std::fs::read(&data).map_err(|e| RenderError::write(&data, e))?;
    let comparison: Comparison = serde_json::from_slice(&bytes).map_err(|e| ReportStageError::Member {
        pipeline: String::new(),
        path: data.clone(),
        message: e.to_string(),
    })?;
    let timing: Vec<(String, Option<RowTiming>)> = std::fs::read(entry.join(TIMING_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|t| serde_json::from_value(t["stage"].clone()).ok())
        .unwrap_or_default();
    let comparison = with_timing(&comparison, &timing);
    // Published beside its members' own reports, in `reports/<name>/`.
    Ok(write_views(&comparison, dir, &entry.join(REPORT_DIR), "", "../")?)
}

/// Writes `index.md`, `index.html` and `report.json` into `dir`. Pictures are
/// read from `figures` and linked from Markdown as `<figure_prefix><stem>.png`;
/// each pipeline's own report is linked as `<reports_link><name>/`.
pub fn write_views(
    comparison: &Comparison,
    dir: &Path,
    figures: &Path,
    figure_prefix: &str,
    reports_link: &str,
) -> Result<Vec<PathBuf>, RenderError> {
    std::fs::create_dir_all(dir).map_err(|e| RenderError::write(dir, e))?;
    let files = [
        (
            "index.md",
            markdown(comparison, figures, figure_prefix, reports_link),
        ),
        ("index.html", html(comparison, figures, "", reports_link)),
        ("report.json", json(comparison)),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        // A cached report renders the same views: rewriting (and syncing) them
        // would be most of a cached run's time.
        if std::fs::read(&path).map_or(true, |old| old != text.as_bytes()) {
            fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| RenderError::write(&path, e))?;
        }
        written.push(PathBuf::from(name));
    }
    Ok(written)
}

pub fn json(comparison: &Comparison) -> String {
    let mut text = serde_json::to_string_pretty(comparison).unwrap_or_default();
    text.push('\n');
    text
}

fn title(comparison: &Comparison) -> String {
    format!("Report `{}`", comparison.report)
}

/// Heads the table of pipelines that differ only in their seed.
pub const SEEDS_TITLE: &str =
    "Pipelines that differ only in `[train] seed`: mean ± standard deviation (n - 1) over the seeds.";

/// The per-keypoint table's title, with what it shows.
const KEYPOINT_TITLE: &str = "RMSE per keypoint (pixels; * best per keypoint)";

/// The report in Markdown; `reports_link` leads from where it is read to the
/// folder of the pipelines' own reports (`../` beside them, `reports/` from the
/// workspace).
pub fn markdown(comparison: &Comparison, figures: &Path, figure_prefix: &str, reports_link: &str) -> String {
    let mut md = format!("# {}\n\n", title(comparison));
    if let Some(description) = &comparison.description {
        md.push_str(&format!("{description}\n\n"));
    }
    md.push_str(&format!(
        "{} pipelines; {}; ranked by {}{}.\n\n{}\n",
        comparison.rows.len(),
        comparison.scored_on(),
        comparison.sort_by,
        comparison
            .baseline
            .as_ref()
            .map_or(String::new(), |b| format!("; Δ against `{b}`")),
        comparison.without_timing().table().to_markdown()
    ));
    if let Some(seeds) = comparison.seed_table() {
        md.push_str(&format!("\n{SEEDS_TITLE}\n\n{}\n", seeds.to_markdown()));
    }
    md.push_str(&format!(
        "\n{TIMING_START}\n\n### Training time (measured when each model was trained; not part of any cache key)\n\n{}\n{TIMING_END}\n",
        comparison.timing_table().to_markdown()
    ));
    md.push_str(&format!(
        "\n## {KEYPOINT_TITLE}\n\n{}\n",
        comparison.keypoint_table().to_markdown()
    ));
    for (stem, caption) in FIGURES {
        if figures.join(format!("{stem}.png")).is_file() {
            md.push_str(&format!(
                "\n## {caption}\n\n![{caption}]({figure_prefix}{stem}.png)\n"
            ));
        }
    }
    // Only members with [eda] have a data summary.
    if !comparison.data.is_empty() {
        md.push_str(&format!(
            "\n## Data\n\n{}\n",
            data_table(comparison).to_markdown()
        ));
    }
    md.push_str("\n## Pipelines\n");
    for row in &comparison.rows {
        md.push_str(&format!(
            "\n### {}\n\n{}\n\nOwn report: [`{reports_link}{}/`]({reports_link}{}/)\n\n```toml\n{}```\n",
            row.pipeline,
            row.description.as_deref().unwrap_or("(no description)"),
            row.pipeline,
            row.pipeline,
            row.config
        ));
    }
    md
}

/// Faces and labelled share per keypoint, a column per distinct data set.
fn data_table(comparison: &Comparison) -> ReportTable {
    let columns = std::iter::once("".to_string()).chain(
        comparison
            .data
            .iter()
            .map(|d| format!("data of {}", d.pipelines.join(", "))),
    );
    let mut table = ReportTable::new(columns, 1);
    let mut faces = vec!["faces".into()];
    let mut complete = vec!["all keypoints labelled".into()];
    for d in &comparison.data {
        faces.push(d.faces.into());
        complete.push(d.complete_faces.into());
    }
    table.push(faces);
    table.push(complete);
    for (k, keypoint) in comparison.keypoints.iter().enumerate() {
        let mut row = vec![format!("{keypoint} labelled %").into()];
        row.extend(
            comparison
                .data
                .iter()
                .map(|d| d.labelled_pct.get(k).copied().into()),
        );
        table.push(row);
    }
    table
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto}\
.note{color:#666}";

/// The HTML document; `extra` (HTML) goes at the end of the body; `reports_link`
/// as for [`markdown`].
pub fn html(comparison: &Comparison, figures: &Path, extra: &str, reports_link: &str) -> String {
    let title = escape_html(&title(comparison));
    let mut body = format!("<h1>{title}</h1>\n");
    if let Some(description) = &comparison.description {
        body.push_str(&format!("<p>{}</p>\n", escape_html(description)));
    }
    body.push_str(&format!(
        "<p class=\"note\">{} pipelines; {}; ranked by {}{}.</p>\n{}",
        comparison.rows.len(),
        escape_html(&comparison.scored_on()),
        escape_html(&comparison.sort_by),
        comparison.baseline.as_ref().map_or(String::new(), |b| format!(
            "; Δ against <code>{}</code>",
            escape_html(b)
        )),
        comparison.without_timing().table().to_html()
    ));
    if let Some(seeds) = comparison.seed_table() {
        body.push_str(&format!(
            "<p class=\"note\">{}</p>\n{}",
            escape_html(SEEDS_TITLE),
            seeds.to_html()
        ));
    }
    body.push_str(&format!(
        "{TIMING_START}\n<h3>Training time</h3>\n<p class=\"note\">Measured when each model was trained; not part of any cache key.</p>\n{}{TIMING_END}\n",
        comparison.timing_table().to_html()
    ));
    body.push_str(&format!(
        "<h2>{}</h2>\n{}",
        escape_html(KEYPOINT_TITLE),
        comparison.keypoint_table().to_html()
    ));
    for (stem, caption) in FIGURES {
        if let Ok(png) = std::fs::read(figures.join(format!("{stem}.png"))) {
            let data = base64::engine::general_purpose::STANDARD.encode(png);
            body.push_str(&format!(
                "<h2>{caption}</h2>\n<img alt=\"{caption}\" src=\"data:image/png;base64,{data}\">\n"
            ));
        }
    }
    if !comparison.data.is_empty() {
        body.push_str(&format!("<h2>Data</h2>\n{}", data_table(comparison).to_html()));
    }
    body.push_str("<h2>Pipelines</h2>\n");
    let link = escape_html(reports_link);
    for row in &comparison.rows {
        let name = escape_html(&row.pipeline);
        body.push_str(&format!(
            "<h3>{name}</h3>\n<p>{}</p>\n<p>Own report: <a href=\"{link}{name}/\">{link}{name}/</a></p>\n\
             <details><summary>Configuration</summary><pre>{}</pre></details>\n",
            escape_html(row.description.as_deref().unwrap_or("(no description)")),
            escape_html(&row.config)
        ));
    }
    body.push_str(extra);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

/// The text with its timing section removed: what must be the same on every run.
pub fn without_timing_section(text: &str) -> String {
    match (text.find(TIMING_START), text.find(TIMING_END)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{}", &text[..start], &text[end + TIMING_END.len()..])
        }
        _ => text.to_string(),
    }
}
