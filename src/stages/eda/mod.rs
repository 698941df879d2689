//! The EDA stage: describes the ingested training data with tables and plots.
//!
//! Reads the ingest entry's `train.parquet`. Writes to `reports/<pipeline>/eda/`:
//! `coordinates`, `correlation`, `missing_patterns`, `pixels` and `brightness`
//! tables (each as `.parquet` and `.md`), `summary.md` with all of them, and the
//! plots chosen by `plots` as `.png` and `.svg`. The cache entry's `data/eda.json`
//! holds the same numbers for later stages and scripts.

mod config;
mod figures;
mod stats;

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;

pub use config::{EdaConfig, PlotKind};

use super::{FileInput, Stage, StageContext, StageDef, StageError, StageKind, StageOutcome, StageTables};
use crate::data::summary::Summary;
use crate::data::{DataError, FaceTable, parquet};
use crate::render::faces::{Face, FaceGrid};
use crate::render::{Cell, RenderError, ReportTable, plot};
use crate::stages::ingest;
use figures::{BrightnessHistogram, CoordinateBoxplot, CorrelationHeatmap, MeanFaceCloud};
use stats::{Pattern, PixelStats};

#[derive(Debug, thiserror::Error)]
pub enum EdaError {
    #[error(transparent)]
    Upstream(#[from] super::UpstreamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Report(#[from] RenderError),
}

pub static DEF: StageDef = StageDef {
    name: "eda",
    also_configured_by: &[],
    reads: &[(StageKind::Ingest, ingest::TRAIN_FILE)],
    reads_members: false,
    optional_reads: &[],
    read,
    key_name: |rest| super::toml_key("eda", rest),
};

fn read(tables: &mut StageTables) -> Vec<Box<dyn Stage>> {
    vec![Box::new(EdaStage {
        config: EdaConfig::read(&mut tables.main),
    })]
}

pub struct EdaStage {
    config: EdaConfig,
}

impl Stage for EdaStage {
    fn kind(&self) -> StageKind {
        StageKind::Eda
    }

    fn version(&self) -> u32 {
        2
    }

    fn config(&self) -> serde_json::Value {
        super::key_config(&self.config)
    }

    fn file_inputs(&self) -> Vec<FileInput> {
        Vec::new()
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        Ok(self.describe(ctx)?)
    }
}

/// The statistics as numbers, for scripts and the report stage.
pub const NUMBERS_FILE: &str = "eda.json";

/// The part of [`NUMBERS_FILE`] a report reads back: (keypoints present, rows)
/// per missing-label pattern.
#[derive(serde::Deserialize)]
pub struct Patterns {
    pub patterns: Vec<(Vec<bool>, usize)>,
}

#[derive(serde::Serialize)]
struct EdaNumbers<'a> {
    coordinate_names: &'a [String],
    coordinates: &'a [Summary],
    correlation: &'a [Vec<Option<f64>>],
    patterns: Vec<(Vec<bool>, usize)>,
    image_means: &'a Summary,
    image_stds: &'a Summary,
    brightness_histogram: &'a [u64],
}

/// `300 faces, 15 keypoints; 12 missing-label patterns, the commonest 4 of 15
/// keypoints labelled (205 rows)`.
fn headline(faces: usize, keypoints: &[String], patterns: &[stats::Pattern]) -> String {
    let mut line = format!(
        "{faces} faces, {} keypoints; {} missing-label pattern{}",
        keypoints.len(),
        patterns.len(),
        if patterns.len() == 1 { "" } else { "s" }
    );
    if let Some(top) = patterns.first() {
        let present = top.present.iter().filter(|p| **p).count();
        let which = match present == top.present.len() {
            true => "every keypoint labelled".to_string(),
            false => format!("{present} of {} keypoints labelled", top.present.len()),
        };
        line.push_str(&format!(", the commonest {which} ({} rows)", top.rows));
    }
    line
}

impl EdaStage {
    fn describe(&self, ctx: &StageContext) -> Result<StageOutcome, EdaError> {
        let faces = parquet::read_faces(&ctx.upstream_file(StageKind::Ingest, ingest::TRAIN_FILE)?)?;
        let names = &faces.coordinate_names;
        let keypoints = faces.keypoint_names();

        let summaries = stats::coordinate_summaries(&faces);
        let matrix = stats::correlation_matrix(&faces);
        let patterns = stats::missing_patterns(&faces);
        let pixels = stats::pixel_stats(&faces);

        let dir = ctx.report_dir.join("eda");
        std::fs::create_dir_all(&dir).map_err(|e| RenderError::write(&dir, e))?;
        let coordinates = coordinates_table(names, &summaries);
        let correlation = correlation_table(names, &matrix);
        let missing = patterns_table(&keypoints, &patterns, faces.len());
        let pixel_table = pixels_table(&pixels);
        let brightness = brightness_table(&pixels.histogram);
        coordinates.write_both(&dir, "coordinates", "Coordinates (pixels)")?;
        correlation.write_both(
            &dir,
            "correlation",
            "Pearson correlation (pairwise-complete rows)",
        )?;
        missing.write_both(&dir, "missing_patterns", "Missing-label patterns")?;
        pixel_table.write_both(&dir, "pixels", "Per-image brightness (grey levels 0-255)")?;
        brightness.write_parquet(&dir.join("brightness.parquet"))?;

        self.draw_plots(&dir, &faces, &keypoints, &summaries, &matrix, &pixels)?;

        let numbers = EdaNumbers {
            coordinate_names: names,
            coordinates: &summaries,
            correlation: &matrix,
            patterns: patterns.iter().map(|p| (p.present.clone(), p.rows)).collect(),
            image_means: &pixels.image_means,
            image_stds: &pixels.image_stds,
            brightness_histogram: &pixels.histogram,
        };
        let json_path = ctx.data_dir.join(NUMBERS_FILE);
        crate::fsutil::write_json(&json_path, &numbers).map_err(|e| RenderError::write(&json_path, e))?;

        let summary_path = dir.join("summary.md");
        let markdown = self.summary_markdown(&faces, &coordinates, &missing, &pixel_table, &correlation);
        std::fs::write(&summary_path, markdown).map_err(|e| RenderError::write(&summary_path, e))?;

        let mut top_patterns = missing.clone();
        top_patterns.rows.truncate(8);
        Ok(StageOutcome {
            headline: Some(headline(faces.len(), &keypoints, &patterns)),
            summary: Some(format!(
                "{}\nmost common missing-label patterns ({} in all):\n{}\n{}",
                coordinates.to_terminal(),
                patterns.len(),
                top_patterns.to_terminal(),
                pixel_table.to_terminal()
            )),
            timing: None,
            earlier_seconds: 0.0,
        })
    }

    fn draw_plots(
        &self,
        dir: &Path,
        faces: &FaceTable,
        keypoints: &[String],
        summaries: &[Summary],
        matrix: &[Vec<Option<f64>>],
        pixels: &PixelStats,
    ) -> Result<(), RenderError> {
        let names = &faces.coordinate_names;
        for plot_kind in &self.config.plots {
            match plot_kind {
                PlotKind::Correlation => {
                    plot::save(&CorrelationHeatmap { names, matrix }, dir, "correlation")?
                }
                PlotKind::Boxplot => {
                    let values: Vec<Vec<f64>> = (0..names.len())
                        .map(|c| {
                            (0..faces.len())
                                .map(|row| faces.row_coords(row)[c])
                                .filter(|v| !v.is_nan())
                                .map(f64::from)
                                .collect()
                        })
                        .collect();
                    debug_assert!(values.iter().zip(summaries).all(|(v, s)| v.len() == s.count));
                    let figure = CoordinateBoxplot {
                        names,
                        values: &values,
                        side: faces.side,
                    };
                    plot::save(&figure, dir, "boxplot")?;
                }
                PlotKind::Samples => {
                    let rows = sample_rows(faces, self.config.samples, self.config.seed);
                    let figure = FaceGrid {
                        title: format!(
                            "{} sample faces (seed {}): labelled keypoints only",
                            rows.len(),
                            self.config.seed
                        ),
                        faces: rows
                            .iter()
                            .map(|&row| {
                                let coords = faces.row_coords(row);
                                let labelled = coords.chunks(2).filter(|p| !p[0].is_nan()).count();
                                Face {
                                    image: faces.image(row),
                                    coords,
                                    predicted: None,
                                    caption: format!(
                                        "row {}: {labelled}/{} labelled",
                                        faces.source_rows[row],
                                        keypoints.len()
                                    ),
                                }
                            })
                            .collect(),
                        side: faces.side,
                        keypoint_names: keypoints,
                        columns: None,
                    };
                    plot::save(&figure, dir, "samples")?;
                }
                PlotKind::MeanFace => {
                    let clouds: Vec<Vec<(f32, f32)>> = (0..keypoints.len())
                        .map(|k| {
                            (0..faces.len())
                                .map(|row| (faces.row_coords(row)[2 * k], faces.row_coords(row)[2 * k + 1]))
                                .filter(|(x, y)| !x.is_nan() && !y.is_nan())
                                .collect()
                        })
                        .collect();
                    let figure = MeanFaceCloud {
                        mean_face: &pixels.mean_face,
                        side: faces.side,
                        clouds: &clouds,
                        keypoint_names: keypoints,
                    };
                    plot::save(&figure, dir, "mean_face")?;
                }
                PlotKind::Brightness => plot::save(
                    &BrightnessHistogram {
                        histogram: &pixels.histogram,
                    },
                    dir,
                    "brightness",
                )?,
            }
        }
        Ok(())
    }

    fn summary_markdown(
        &self,
        faces: &FaceTable,
        coordinates: &ReportTable,
        missing: &ReportTable,
        pixels: &ReportTable,
        correlation: &ReportTable,
    ) -> String {
        let plot_line = |kind: PlotKind, stem: &str, alt: &str| {
            if self.config.plots.contains(&kind) {
                format!("\n![{alt}]({stem}.png)\n")
            } else {
                String::new()
            }
        };
        format!(
            "# Exploratory data analysis\n\n{rows} faces, {side}x{side} pixels, {k} keypoints; {complete} rows have every label.\n\n\
             ## Coordinates (pixels)\n\n{coordinates}\n{boxplot}\n## Missing-label patterns\n\n{missing}\n\n\
             ## Images\n\n{pixels}\n{mean}{brightness}{samples}\n## Correlation\n{heatmap}\n{correlation}\n",
            rows = faces.len(),
            side = faces.side,
            k = faces.coordinate_names.len() / 2,
            complete = faces.complete_rows(),
            coordinates = coordinates.to_markdown(),
            boxplot = plot_line(PlotKind::Boxplot, "boxplot", "box plot of every coordinate"),
            missing = missing.to_markdown(),
            pixels = pixels.to_markdown(),
            mean = plot_line(
                PlotKind::MeanFace,
                "mean_face",
                "mean face with keypoint positions"
            ),
            brightness = plot_line(PlotKind::Brightness, "brightness", "brightness histogram"),
            samples = plot_line(
                PlotKind::Samples,
                "samples",
                "sample faces with their labelled keypoints"
            ),
            heatmap = plot_line(PlotKind::Correlation, "correlation", "correlation heatmap"),
            correlation = correlation.to_markdown(),
        )
    }
}

/// Sample rows for the face grid: half from rows missing some label (when there
/// are any), half complete, each half drawn by a seeded shuffle, in row order.
fn sample_rows(faces: &FaceTable, count: usize, seed: u64) -> Vec<usize> {
    let (mut complete, mut incomplete): (Vec<usize>, Vec<usize>) =
        (0..faces.len()).partition(|&row| faces.row_coords(row).iter().all(|v| !v.is_nan()));
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    complete.shuffle(&mut rng);
    incomplete.shuffle(&mut rng);
    let want_incomplete = (count / 2)
        .min(incomplete.len())
        .max(count.saturating_sub(complete.len()));
    let mut rows: Vec<usize> = incomplete.into_iter().take(want_incomplete).collect();
    rows.extend(complete.into_iter().take(count - rows.len().min(count)));
    rows.truncate(count);
    rows.sort_unstable();
    rows
}

fn coordinates_table(names: &[String], summaries: &[Summary]) -> ReportTable {
    let mut table = summary_table("coordinate", 3);
    for (name, s) in names.iter().zip(summaries) {
        table.push(summary_cells(name.clone(), s));
    }
    table
}

/// A table of [`Summary`] rows, the first column naming what each row describes.
fn summary_table(first_column: &str, decimals: usize) -> ReportTable {
    let columns = [
        "count", "missing", "mean", "std", "min", "25%", "50%", "75%", "max",
    ];
    ReportTable::new(std::iter::once(first_column).chain(columns), decimals)
}

fn summary_cells(label: String, s: &Summary) -> Vec<Cell> {
    vec![
        label.into(),
        s.count.into(),
        s.missing.into(),
        s.mean.into(),
        s.std.into(),
        s.min.into(),
        s.q25.into(),
        s.median.into(),
        s.q75.into(),
        s.max.into(),
    ]
}

fn correlation_table(names: &[String], matrix: &[Vec<Option<f64>>]) -> ReportTable {
    let mut table = ReportTable::new(
        std::iter::once("coordinate".to_string()).chain(names.iter().cloned()),
        3,
    );
    for (name, row) in names.iter().zip(matrix) {
        let mut cells = vec![Cell::from(name.clone())];
        cells.extend(row.iter().map(|r| Cell::from(*r)));
        table.push(cells);
    }
    table
}

fn patterns_table(keypoints: &[String], patterns: &[Pattern], rows: usize) -> ReportTable {
    let mut table = ReportTable::new(["keypoints present", "rows", "share %", "which"], 1);
    for pattern in patterns {
        let present: Vec<&str> = keypoints
            .iter()
            .zip(&pattern.present)
            .filter(|(_, p)| **p)
            .map(|(k, _)| k.as_str())
            .collect();
        let absent: Vec<&str> = keypoints
            .iter()
            .zip(&pattern.present)
            .filter(|(_, p)| !**p)
            .map(|(k, _)| k.as_str())
            .collect();
        let which = match (present.len(), absent.len()) {
            (_, 0) => "all".to_string(),
            (0, _) => "none".to_string(),
            (p, a) if p <= a => format!("only {}", present.join(", ")),
            _ => format!("all but {}", absent.join(", ")),
        };
        table.push(vec![
            present.len().into(),
            pattern.rows.into(),
            (100.0 * pattern.rows as f64 / rows.max(1) as f64).into(),
            which.into(),
        ]);
    }
    table
}

fn pixels_table(pixels: &PixelStats) -> ReportTable {
    let mut table = summary_table("per image", 2);
    table.push(summary_cells("mean brightness".to_string(), &pixels.image_means));
    table.push(summary_cells("contrast (std)".to_string(), &pixels.image_stds));
    table
}

fn brightness_table(histogram: &[u64]) -> ReportTable {
    let mut table = ReportTable::new(["grey level", "pixels"], 0);
    for (level, &count) in histogram.iter().enumerate() {
        table.push(vec![level.into(), Cell::Int(count as i64)]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faces(rows: usize) -> FaceTable {
        // Every third row misses its second keypoint.
        let coords = (0..rows)
            .flat_map(|r| {
                let missing = r % 3 == 0;
                [
                    1.0,
                    1.0,
                    if missing { f32::NAN } else { 2.0 },
                    if missing { f32::NAN } else { 2.0 },
                ]
            })
            .collect();
        FaceTable {
            coordinate_names: vec!["a_x".into(), "a_y".into(), "b_x".into(), "b_y".into()],
            side: 4,
            source_rows: (0..rows as u32).collect(),
            image_ids: None,
            coords,
            pixels: vec![0; rows * 16],
        }
    }

    #[test]
    fn samples_mix_incomplete_and_complete_rows_and_follow_the_seed() {
        let t = faces(30);
        let rows = sample_rows(&t, 8, 1);
        assert_eq!(rows.len(), 8);
        let incomplete = rows.iter().filter(|&&r| r % 3 == 0).count();
        assert_eq!(incomplete, 4);
        assert_eq!(rows, sample_rows(&t, 8, 1));
        assert_ne!(rows, sample_rows(&t, 8, 2));
        assert_eq!(sample_rows(&t, 100, 1).len(), 30);
    }

    #[test]
    fn patterns_table_describes_sets_briefly() {
        let keypoints = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let patterns = vec![
            Pattern {
                present: vec![true, true, true],
                rows: 3,
            },
            Pattern {
                present: vec![true, false, false],
                rows: 1,
            },
            Pattern {
                present: vec![true, true, false],
                rows: 1,
            },
        ];
        let table = patterns_table(&keypoints, &patterns, 5);
        let which: Vec<&Cell> = table.rows.iter().map(|r| &r[3]).collect();
        assert_eq!(
            which,
            [
                &Cell::from("all"),
                &Cell::from("only a"),
                &Cell::from("all but c")
            ]
        );
        assert_eq!(table.rows[0][2], Cell::Float(60.0));
    }
}
