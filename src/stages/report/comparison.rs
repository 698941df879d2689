//! The comparison a report shows: one row per pipeline, ranked, with deltas
//! against a baseline, and per-keypoint errors. Built from each member's
//! metrics, history and configuration; serialised as the `fkp.report/1` JSON
//! (docs/report-json.md). Timings are volatile: the entry's copy has none, the
//! published views fill them in from `timing.json`.

use serde::{Deserialize, Serialize};

use crate::render::{Cell, ReportTable};
use crate::stages::evaluate::{Metrics, Scores};
use crate::stages::train::EpochLog;
use crate::stages::{MemberInfo, StageKind};

pub const SCHEMA: &str = "fkp.report/1";

crate::config_choice! {
    /// The column a report is ranked by: a quality metric, never a timing (a
    /// cached report's order must not change with the machine's speed).
    pub enum SortBy {
        Rmse = "rmse",
        Mae = "mae",
        Pck5 = "pck5",
        Pck10 = "pck10",
        Parameters = "parameters",
    }
}

impl SortBy {
    /// The row's value, oriented so that smaller ranks first; missing sorts last.
    fn value(self, row: &Row) -> f64 {
        let value = match self {
            SortBy::Rmse => Some(row.rmse_px),
            SortBy::Mae => Some(row.mae_px),
            SortBy::Pck5 => row.pck_5.map(|v| -v),
            SortBy::Pck10 => row.pck_10.map(|v| -v),
            SortBy::Parameters => Some(row.parameters as f64),
        };
        value.filter(|v| v.is_finite()).unwrap_or(f64::INFINITY)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    pub schema: String,
    /// The report pipeline's name (`compare` when made by `fkp compare`).
    pub report: String,
    pub description: Option<String>,
    pub baseline: Option<String>,
    pub sort_by: String,
    pub keypoints: Vec<String>,
    /// Ranked: `rows[0]` has rank 1.
    pub rows: Vec<Row>,
    /// The data the pipelines were trained on, one entry per distinct data set.
    pub data: Vec<DataSummary>,
    /// Pipelines that differ only in `[train] seed` (a sweep over seeds), with
    /// the mean ± standard deviation of their scores; in listed order.
    #[serde(default)]
    pub seed_groups: Vec<SeedGroup>,
}

/// Pipelines whose configurations differ only in `[train] seed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeedGroup {
    /// What their names share (`sweep--lr-1e-3` of `sweep--lr-1e-3--seed-1`, ...).
    pub name: String,
    pub pipelines: Vec<String>,
    pub rmse_px: Spread,
    pub mae_px: Spread,
    pub pck_5: Option<Spread>,
    pub pck_10: Option<Spread>,
}

/// Mean and sample standard deviation (n - 1) of one metric over a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let square = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
        Spread {
            mean,
            std: if values.len() > 1 {
                (square / (n - 1.0)).sqrt()
            } else {
                0.0
            },
        }
    }

    fn text(&self) -> String {
        format!("{:.3} ± {:.3}", self.mean, self.std)
    }
}

/// Groups the rows whose configuration is the same but for `[train] seed`.
fn seed_groups(rows: &[Row]) -> Vec<SeedGroup> {
    let mut by_config: Vec<(String, Vec<&Row>)> = Vec::new();
    let mut listed: Vec<&Row> = rows.iter().collect();
    listed.sort_by_key(|r| r.member);
    for row in listed {
        let key = without_seed(&row.config);
        match by_config.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(row),
            None => by_config.push((key, vec![row])),
        }
    }
    by_config
        .into_iter()
        .filter(|(_, group)| group.len() > 1)
        .map(|(_, group)| {
            // A metric some member lacks (PCK without eye centres) has no spread.
            let optional = |f: &dyn Fn(&Row) -> Option<f64>| -> Option<Spread> {
                let values: Option<Vec<f64>> = group.iter().map(|r| f(r)).collect();
                values.map(|v| Spread::of(&v))
            };
            let spread =
                |f: &dyn Fn(&Row) -> f64| Spread::of(&group.iter().map(|r| f(r)).collect::<Vec<_>>());
            let names: Vec<String> = group.iter().map(|r| r.pipeline.clone()).collect();
            SeedGroup {
                name: shared_name(&names),
                rmse_px: spread(&|r| r.rmse_px),
                mae_px: spread(&|r| r.mae_px),
                pck_5: optional(&|r| r.pck_5),
                pck_10: optional(&|r| r.pck_10),
                pipelines: names,
            }
        })
        .collect()
}

/// A pipeline's merged TOML without `[train] seed`, or the text as it is when
/// it does not parse.
fn without_seed(config: &str) -> String {
    let Ok(mut document) = config.parse::<toml_edit::DocumentMut>() else {
        return config.to_string();
    };
    if let Some(train) = document.get_mut("train").and_then(|t| t.as_table_like_mut()) {
        train.remove("seed");
    }
    document.to_string()
}

/// The `--`-separated parts of the names that all of them share, in order:
/// `s--lr-1e-3` for `s--lr-1e-3--seed-1` and `s--lr-1e-3--seed-2`.
fn shared_name(names: &[String]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    let shared: Vec<&str> = first
        .split("--")
        .filter(|part| names.iter().all(|n| n.split("--").any(|p| p == *part)))
        .collect();
    match shared.is_empty() {
        true => first.clone(),
        false => shared.join("--"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub rank: usize,
    /// Index of the member this row was built from (in listed order).
    #[serde(skip)]
    pub member: usize,
    pub pipeline: String,
    pub description: Option<String>,
    pub arch: String,
    pub parameters: usize,
    pub channels: u64,
    /// `[prepare] missing`: drop, mean, median or mask.
    pub missing: String,
    /// The augmentations switched on (`hflip`, `shift_px=2`, ...).
    pub augment: Vec<String>,
    pub epochs: u64,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub device: String,
    /// `full labels` (`[evaluate] truth`) or `validation labels`.
    pub scored_on: String,
    pub faces: usize,
    pub points: usize,
    pub rmse_px: f64,
    pub mae_px: f64,
    pub pck_5: Option<f64>,
    pub pck_10: Option<f64>,
    pub mean_shape_rmse_px: f64,
    /// `[evaluate] tta`: the transforms the scores above average over.
    #[serde(default)]
    pub tta: Vec<String>,
    /// With `tta`, the RMSE of plain predictions, scored on the same labels.
    #[serde(default)]
    pub rmse_without_tta_px: Option<f64>,
    /// How many models predict: 1, or the size of a seed ensemble (`[train]
    /// seeds`), whose averaged predictions the scores above are.
    #[serde(default = "one")]
    pub models: usize,
    /// An ensemble's members, each alone (with `tta`), in `seeds` order.
    #[serde(default)]
    pub member_rmse_px: Vec<f64>,
    /// Against the baseline pipeline; `None` without one (and 0 for itself).
    pub delta_rmse_px: Option<f64>,
    pub delta_rmse_pct: Option<f64>,
    /// RMSE per keypoint, in `keypoints` order; `None` where never labelled.
    pub keypoint_rmse_px: Vec<Option<f64>>,
    pub history: Vec<EpochPoint>,
    /// The pipeline's tables with `extends` merged.
    pub config: String,
    /// Volatile: filled in only in published views, never in the cache entry.
    pub timing: Option<RowTiming>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_rmse_px: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowTiming {
    pub train_seconds: f64,
    /// Mean training throughput over the epochs run.
    pub images_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataSummary {
    pub pipelines: Vec<String>,
    pub faces: usize,
    /// Faces with all keypoints labelled.
    pub complete_faces: usize,
    /// % of faces with each keypoint labelled, in `keypoints` order.
    pub labelled_pct: Vec<f64>,
}

/// What one member pipeline contributes.
pub struct MemberResult<'a> {
    pub info: &'a MemberInfo,
    pub metrics: Metrics,
    pub history: Vec<EpochLog>,
}

/// Ranks the members by `sort_by` (ties keep the listed order) and computes
/// deltas against `baseline`.
pub fn build(
    report: &str,
    description: Option<&str>,
    members: &[MemberResult],
    baseline: Option<&str>,
    sort_by: SortBy,
    data: Vec<DataSummary>,
) -> Comparison {
    let mut rows: Vec<Row> = members.iter().enumerate().map(|(i, m)| row(i, m)).collect();
    let base = baseline.and_then(|b| rows.iter().find(|r| r.pipeline == b).map(|r| r.rmse_px));
    for row in &mut rows {
        if let Some(base) = base {
            row.delta_rmse_px = Some(row.rmse_px - base);
            row.delta_rmse_pct = (base > 0.0).then(|| 100.0 * (row.rmse_px - base) / base);
        }
    }
    rows.sort_by(|a, b| sort_by.value(a).total_cmp(&sort_by.value(b)));
    for (i, row) in rows.iter_mut().enumerate() {
        row.rank = i + 1;
    }
    let keypoints = members
        .first()
        .map(|m| m.metrics.model.keypoint_names.clone())
        .unwrap_or_default();
    Comparison {
        schema: SCHEMA.to_string(),
        report: report.to_string(),
        description: description.map(str::to_string),
        baseline: baseline.map(str::to_string),
        sort_by: sort_by.name().to_string(),
        keypoints,
        seed_groups: seed_groups(&rows),
        rows,
        data,
    }
}

fn row(index: usize, member: &MemberResult) -> Row {
    let (scores, scored_on): (&Scores, &str) = member.metrics.scores.headline();
    let model = &member.metrics.model;
    let train = member.info.stage(StageKind::Train);
    let prepare = member.info.stage(StageKind::Prepare);
    let metrics = &member.metrics;
    let text = |value: Option<&serde_json::Value>| value.and_then(|v| v.as_str()).unwrap_or("").to_string();
    Row {
        rank: 0,
        member: index,
        pipeline: member.info.name.clone(),
        description: member.info.description.clone(),
        arch: model.spec.graph.name.clone(),
        parameters: model.parameters,
        channels: train.and_then(|t| t["model"]["channels"].as_u64()).unwrap_or(1),
        missing: text(prepare.map(|p| &p["missing"])),
        augment: train.map(|t| augmentations(&t["augment"])).unwrap_or_default(),
        epochs: train.and_then(|t| t["epochs"].as_u64()).unwrap_or(0),
        epochs_run: model.epochs_run,
        best_epoch: model.best_epoch,
        device: model.device.clone(),
        scored_on: scored_on.to_string(),
        faces: scores.rows,
        points: scores.labelled_points,
        rmse_px: scores.rmse_px,
        mae_px: scores.mae_px,
        pck_5: scores.pck_5,
        pck_10: scores.pck_10,
        mean_shape_rmse_px: scores.mean_shape_rmse_px,
        tta: metrics.tta.iter().map(|t| t.name().to_string()).collect(),
        rmse_without_tta_px: metrics
            .without_tta
            .as_ref()
            .map(|plain| plain.headline().0.rmse_px),
        models: metrics.members.len().max(1),
        member_rmse_px: metrics
            .members
            .iter()
            .map(|m| m.scores.headline().0.rmse_px)
            .collect(),
        delta_rmse_px: None,
        delta_rmse_pct: None,
        keypoint_rmse_px: scores.per_keypoint.iter().map(|k| k.rmse_px).collect(),
        history: member
            .history
            .iter()
            .map(|h| EpochPoint {
                epoch: h.epoch,
                train_loss: h.train_loss,
                val_rmse_px: h.val_rmse_px,
            })
            .collect(),
        config: member.info.toml.clone(),
        timing: None,
    }
}

fn one() -> usize {
    1
}

/// The augmentations an `[train.augment]` configuration switches on.
fn augmentations(augment: &serde_json::Value) -> Vec<String> {
    let Some(fields) = augment.as_object() else {
        return Vec::new();
    };
    fields
        .iter()
        .filter_map(|(name, value)| match value {
            serde_json::Value::Bool(true) => Some(name.clone()),
            // Strengths are f32: printed as such (0.1, not 0.10000000149011612).
            serde_json::Value::Number(n) if n.as_f64().is_some_and(|v| v != 0.0) => {
                Some(format!("{name}={}", n.as_f64().unwrap_or_default() as f32))
            }
            _ => None,
        })
        .collect()
}

impl Comparison {
    /// Where the numbers were scored, for the table's header.
    pub fn scored_on(&self) -> String {
        let mut kinds: Vec<&str> = self.rows.iter().map(|r| r.scored_on.as_str()).collect();
        kinds.dedup();
        match kinds.as_slice() {
            [one] => format!("validation faces, scored against {one}"),
            _ => "validation faces, scored against full labels where `[evaluate] truth` is given, else validation labels (see `scored on`)".to_string(),
        }
    }

    /// The main table. It has the timing columns when the rows carry timings.
    pub fn table(&self) -> ReportTable {
        let timed = self.rows.iter().any(|r| r.timing.is_some());
        // Columns that only some studies need: test-time flips, ensembles.
        let flipped = self.rows.iter().any(|r| !r.tta.is_empty());
        let ensembles = self.rows.iter().any(|r| r.models > 1);
        let mut columns = vec![
            "rank",
            "pipeline",
            "arch",
            "parameters",
            "channels",
            "missing",
            "augment",
            "epochs run",
            "best epoch",
            "device",
        ];
        if timed {
            columns.extend(["train s", "images/s"]);
        }
        if ensembles {
            columns.extend(["models", "mean member RMSE px"]);
        }
        if flipped {
            columns.extend(["TTA", "RMSE px without TTA"]);
        }
        columns.extend([
            "scored on",
            "RMSE px",
            "MAE px",
            "PCK@5%",
            "PCK@10%",
            "mean-shape RMSE px",
        ]);
        // Δ only against a baseline that was compared.
        let against_baseline = self.baseline.is_some();
        if against_baseline {
            columns.extend(["Δ RMSE px", "Δ RMSE %"]);
        }
        let mut table = ReportTable::new(columns, 3);
        for row in &self.rows {
            let augment = if row.augment.is_empty() {
                "none".to_string()
            } else {
                row.augment.join(" ")
            };
            let epochs = if row.epochs_run < row.epochs as usize {
                format!("{} of {} (stopped early)", row.epochs_run, row.epochs)
            } else {
                row.epochs_run.to_string()
            };
            let mut cells: Vec<Cell> = vec![
                row.rank.into(),
                row.pipeline.clone().into(),
                row.arch.clone().into(),
                row.parameters.into(),
                (row.channels as usize).into(),
                row.missing.clone().into(),
                augment.into(),
                epochs.into(),
                row.best_epoch.into(),
                row.device.clone().into(),
            ];
            if timed {
                cells.push(row.timing.as_ref().map(|t| t.train_seconds).into());
                cells.push(row.timing.as_ref().and_then(|t| t.images_per_s).into());
            }
            if ensembles {
                let members = &row.member_rmse_px;
                let mean = (!members.is_empty()).then(|| members.iter().sum::<f64>() / members.len() as f64);
                cells.extend([row.models.into(), mean.into()]);
            }
            if flipped {
                let tta = if row.tta.is_empty() {
                    "none".to_string()
                } else {
                    row.tta.join(" ")
                };
                cells.extend([tta.into(), row.rmse_without_tta_px.into()]);
            }
            cells.extend([
                row.scored_on.clone().into(),
                row.rmse_px.into(),
                row.mae_px.into(),
                row.pck_5.into(),
                row.pck_10.into(),
                row.mean_shape_rmse_px.into(),
            ]);
            if against_baseline {
                cells.extend([row.delta_rmse_px.into(), row.delta_rmse_pct.into()]);
            }
            table.push(cells);
        }
        table
    }

    /// The seed groups, each metric as mean ± std; `None` without groups.
    pub fn seed_table(&self) -> Option<ReportTable> {
        if self.seed_groups.is_empty() {
            return None;
        }
        let mut table = ReportTable::new(
            ["pipelines", "seeds", "RMSE px", "MAE px", "PCK@5%", "PCK@10%"],
            3,
        );
        for group in &self.seed_groups {
            let text = |s: &Option<Spread>| s.as_ref().map_or(String::new(), Spread::text);
            table.push(vec![
                group.name.clone().into(),
                group.pipelines.len().into(),
                group.rmse_px.text().into(),
                group.mae_px.text().into(),
                text(&group.pck_5).into(),
                text(&group.pck_10).into(),
            ]);
        }
        Some(table)
    }

    /// Training time per pipeline (volatile): measured when its entry was built.
    pub fn timing_table(&self) -> ReportTable {
        let mut table = ReportTable::new(["pipeline", "device", "train s", "images/s"], 1);
        for row in &self.rows {
            table.push(vec![
                row.pipeline.clone().into(),
                row.device.clone().into(),
                row.timing.as_ref().map(|t| t.train_seconds).into(),
                row.timing.as_ref().and_then(|t| t.images_per_s).into(),
            ]);
        }
        table
    }

    /// Keypoints × pipelines (in rank order), the best cell of each keypoint
    /// marked with `*`.
    pub fn keypoint_table(&self) -> ReportTable {
        let columns =
            std::iter::once("keypoint".to_string()).chain(self.rows.iter().map(|r| r.pipeline.clone()));
        let mut table = ReportTable::new(columns, 3);
        for (k, name) in self.keypoints.iter().enumerate() {
            let values: Vec<Option<f64>> = self
                .rows
                .iter()
                .map(|r| r.keypoint_rmse_px.get(k).copied().flatten())
                .collect();
            let best = values.iter().flatten().copied().fold(f64::INFINITY, f64::min);
            let mut cells = vec![Cell::from(name.clone())];
            cells.extend(values.iter().map(|v| match v {
                Some(v) if *v == best => Cell::Text(format!("{v:.3} *")),
                other => Cell::from(*other),
            }));
            table.push(cells);
        }
        table
    }

    /// The same comparison without its volatile numbers: what the cache keeps.
    pub fn without_timing(&self) -> Comparison {
        let mut exact = self.clone();
        for row in &mut exact.rows {
            row.timing = None;
        }
        exact
    }
}

/// A row with plausible values, for the report module's tests.
#[cfg(test)]
pub(super) fn sample_row(pipeline: &str, rmse: f64) -> Row {
    Row {
        rank: 0,
        member: 0,
        pipeline: pipeline.to_string(),
        description: None,
        arch: "LeNet".into(),
        parameters: 10,
        channels: 1,
        missing: "mask".into(),
        augment: vec![],
        epochs: 2,
        epochs_run: 2,
        best_epoch: 2,
        device: "cpu".into(),
        scored_on: "full labels".into(),
        faces: 10,
        points: 300,
        rmse_px: rmse,
        mae_px: rmse / 2.0,
        pck_5: Some(50.0),
        pck_10: None,
        mean_shape_rmse_px: 5.0,
        tta: vec![],
        rmse_without_tta_px: None,
        models: 1,
        member_rmse_px: vec![],
        delta_rmse_px: None,
        delta_rmse_pct: None,
        keypoint_rmse_px: vec![Some(rmse), None],
        history: vec![],
        config: String::new(),
        timing: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pck_ranks_higher_first_and_missing_last() {
        let mut a = sample_row("a", 3.0);
        a.pck_5 = Some(40.0);
        let b = sample_row("b", 4.0);
        let mut c = sample_row("c", 1.0);
        c.pck_5 = None;
        assert!(SortBy::Pck5.value(&b) < SortBy::Pck5.value(&a));
        assert!(SortBy::Pck5.value(&a) < SortBy::Pck5.value(&c));
        assert!(SortBy::Rmse.value(&c) < SortBy::Rmse.value(&a));
    }

    #[test]
    fn the_best_keypoint_cell_is_marked() {
        let comparison = Comparison {
            schema: SCHEMA.into(),
            report: "r".into(),
            description: None,
            baseline: None,
            sort_by: "rmse".into(),
            keypoints: vec!["nose_tip".into(), "mouth".into()],
            rows: vec![sample_row("a", 2.0), sample_row("b", 3.0)],
            data: vec![],
            seed_groups: vec![],
        };
        let table = comparison.keypoint_table();
        assert_eq!(table.rows[0][1], Cell::Text("2.000 *".into()));
        assert_eq!(table.rows[0][2], Cell::Float(3.0));
        assert_eq!(table.rows[1][1], Cell::Empty);
    }

    #[test]
    fn pipelines_differing_only_in_their_seed_are_grouped() {
        let config = |lr: &str, seed: u64| format!("[train]\nlr = {lr}\nseed = {seed}\n");
        let mut rows = Vec::new();
        for (i, (name, lr, seed, rmse)) in [
            ("s--lr-1--seed-1", "1.0", 1, 2.0),
            ("s--lr-1--seed-2", "1.0", 2, 4.0),
            ("s--lr-2--seed-1", "2.0", 1, 5.0),
            ("s--lr-1--seed-3", "1.0", 3, 3.0),
        ]
        .into_iter()
        .enumerate()
        {
            let mut row = sample_row(name, rmse);
            row.member = i;
            row.config = config(lr, seed);
            rows.push(row);
        }
        let groups = seed_groups(&rows);
        assert_eq!(groups.len(), 1, "lr 2 has one seed: no group");
        let group = &groups[0];
        assert_eq!(group.name, "s--lr-1");
        assert_eq!(
            group.pipelines,
            ["s--lr-1--seed-1", "s--lr-1--seed-2", "s--lr-1--seed-3"]
        );
        assert_eq!(group.rmse_px, Spread { mean: 3.0, std: 1.0 });
        assert_eq!(group.pck_5.as_ref().unwrap().std, 0.0);
        assert!(
            group.pck_10.is_none(),
            "a metric missing in a member has no spread"
        );
    }

    #[test]
    fn augmentations_list_what_is_on() {
        let augment = serde_json::json!({"hflip": true, "shift_px": 2.0, "rotate_deg": 0.0, "contrast": 0});
        assert_eq!(augmentations(&augment), ["hflip", "shift_px=2"]);
        let noisy = serde_json::json!({"brightness": f64::from(0.1f32)});
        assert_eq!(augmentations(&noisy), ["brightness=0.1"]);
    }
}
