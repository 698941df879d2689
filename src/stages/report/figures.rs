//! The figures of a cross-pipeline report: learning curves overlaid, per-keypoint
//! RMSE as grouped bars, and the per-face error distribution as box plots. Each
//! pipeline keeps one colour, by its index in the rows, across all of them.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::data::Quartiles;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::comparison::{EpochPoint, Row};
use crate::render::plot::{DrawResult, FONT, Figure, drawing};

/// A colour per pipeline, stable by index: the Okabe–Ito palette (readable with
/// colour-blindness), its faint yellow last, cycling after eight.
pub fn pipeline_colour(index: usize) -> RGBColor {
    const OKABE_ITO: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    OKABE_ITO[index % OKABE_ITO.len()]
}

/// An axis range covering the finite `values` and zero, never empty: a figure
/// with no data (or one repeated value) still gets a drawable axis.
fn value_range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((0.0_f64, 0.0_f64), |(low, high), v| (low.min(v), high.max(v)));
    let span = high - low;
    if span > 0.0 {
        (low, high + 0.05 * span)
    } else {
        (low, low + 1.0)
    }
}

/// The pipelines' legend, top right, over a translucent box.
fn draw_legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> DrawResult {
    drawing(
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw(),
    )
}

/// The per-epoch number a curve figure plots, with its title and unit.
struct EpochMetric {
    title: &'static str,
    unit: &'static str,
    value: fn(&EpochPoint) -> f64,
}

const VALIDATION_RMSE: EpochMetric = EpochMetric {
    title: "Validation RMSE per epoch (pixels, labelled points)",
    unit: "px",
    value: |p| p.val_rmse_px,
};

const TRAIN_LOSS: EpochMetric = EpochMetric {
    title: "Training loss per epoch (normalised targets)",
    unit: "loss",
    value: |p| p.train_loss,
};

/// One line with point markers per pipeline. Non-finite values (a diverged
/// epoch) are left out rather than drawn at a nonsense coordinate.
fn draw_epoch_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[Row],
    metric: &EpochMetric,
) -> DrawResult {
    let points = |row: &Row| -> Vec<(i64, f64)> {
        row.history
            .iter()
            .map(|p| (p.epoch as i64, (metric.value)(p)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    let curves: Vec<Vec<(i64, f64)>> = rows.iter().map(points).collect();
    let epochs = curves.iter().flatten().map(|&(epoch, _)| epoch);
    let first = epochs.clone().min().unwrap_or(1);
    let last = epochs.max().unwrap_or(1);
    let (low, high) = value_range(curves.iter().flatten().map(|&(_, v)| v));
    // A spare epoch either side keeps the end markers off the axes.
    let mut chart = drawing(
        ChartBuilder::on(root)
            .caption(metric.title, (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(first - 1..last + 1, low..high),
    )?;
    drawing(
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(metric.unit)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw(),
    )?;
    for (index, (row, curve)) in rows.iter().zip(&curves).enumerate() {
        let colour = pipeline_colour(index);
        drawing(chart.draw_series(LineSeries::new(curve.iter().copied(), colour.stroke_width(2))))?
            .label(row.pipeline.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        drawing(chart.draw_series(curve.iter().map(|&point| Circle::new(point, 3, colour.filled()))))?;
    }
    if !rows.is_empty() {
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// Validation RMSE per epoch, one line per pipeline.
pub struct ValidationCurves<'a> {
    pub rows: &'a [Row],
}

impl Figure for ValidationCurves<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 500)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        draw_epoch_curves(root, self.rows, &VALIDATION_RMSE)
    }
}

/// Training loss per epoch, one line per pipeline.
pub struct TrainLossCurves<'a> {
    pub rows: &'a [Row],
}

impl Figure for TrainLossCurves<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 500)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        draw_epoch_curves(root, self.rows, &TRAIN_LOSS)
    }
}

/// A chart whose x axis holds one unit-wide slot per category (keypoint or
/// pipeline): slot `i` spans `i..i + 1`.
type SlotChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A slot chart with ticks on the slot boundaries; the names are written by
/// [`draw_slot_names`], as plotters' tick labels cannot sit in a slot's middle.
fn slot_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    slots: usize,
    (low, high): (f64, f64),
    name_area: u32,
) -> Result<SlotChart<'a, DB>, String> {
    let slots = slots.max(1);
    let mut chart = drawing(
        ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(15)
            .x_label_area_size(name_area)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..slots as f64, low..high),
    )?;
    drawing(
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(slots + 1)
            .x_label_formatter(&|_| String::new())
            .y_desc("px")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw(),
    )?;
    Ok(chart)
}

/// Writes each name under its slot, centred, or running downwards when
/// `rotated` (15 keypoint names never fit side by side).
fn draw_slot_names<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &SlotChart<'_, DB>,
    names: &[String],
    rotated: bool,
) -> DrawResult {
    let (base_x, base_y) = root.get_base_pixel();
    let bottom = chart.y_range().start;
    let style = TextStyle::from((FONT, 12));
    let style = match rotated {
        // Rotated text hangs left of its anchor, hence the shift by half a line.
        true => style.transform(FontTransform::Rotate90),
        false => style.pos(Pos::new(HPos::Center, VPos::Top)),
    };
    let shift = if rotated { 6 } else { 0 };
    for (slot, name) in names.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(slot as f64 + 0.5, bottom));
        let at = (x - base_x + shift, y - base_y + 8);
        drawing(root.draw(&Text::new(name.as_str(), at, style.clone())))?;
    }
    Ok(())
}

/// RMSE per keypoint, a bar per pipeline in each keypoint's slot; a keypoint
/// a pipeline never scored has no bar.
pub struct KeypointBars<'a> {
    pub keypoints: &'a [String],
    pub rows: &'a [Row],
}

/// Share of a keypoint's slot the bars fill; the rest separates neighbours.
const BAR_GROUP: f64 = 0.8;

impl KeypointBars<'_> {
    fn value(&self, row: &Row, keypoint: usize) -> Option<f64> {
        let value = row.keypoint_rmse_px.get(keypoint).copied().flatten();
        value.filter(|v| v.is_finite())
    }
}

impl Figure for KeypointBars<'_> {
    fn size(&self) -> (u32, u32) {
        // Each bar keeps at least ~12 px however many pipelines share a slot.
        let slot = 16 + 12 * self.rows.len().max(1) as u32;
        ((140 + slot * self.keypoints.len() as u32).max(900), 600)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let keypoints = 0..self.keypoints.len();
        let values = keypoints
            .clone()
            .flat_map(|k| self.rows.iter().filter_map(move |r| self.value(r, k)));
        let (low, high) = value_range(values);
        // Headroom, a line per pipeline, keeps the legend (top right) off the bars.
        let range = (low, high + 0.1 * (high - low) * self.rows.len() as f64);
        let mut chart = slot_chart(root, "RMSE per keypoint (pixels)", keypoints.len(), range, 190)?;
        let bar_width = BAR_GROUP / self.rows.len().max(1) as f64;
        for (index, row) in self.rows.iter().enumerate() {
            let colour = pipeline_colour(index);
            let bars = keypoints.clone().filter_map(|k| {
                let left = k as f64 + (1.0 - BAR_GROUP) / 2.0 + index as f64 * bar_width;
                let value = self.value(row, k)?;
                Some(Rectangle::new(
                    [(left, 0.0), (left + bar_width, value)],
                    colour.filled(),
                ))
            });
            drawing(chart.draw_series(bars))?
                .label(row.pipeline.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        }
        draw_slot_names(root, &chart, self.keypoints, true)?;
        if !self.rows.is_empty() {
            draw_legend(&mut chart)?;
        }
        Ok(())
    }
}

/// The spread of per-face RMSE, a box plot per pipeline.
pub struct ErrorDistribution<'a> {
    /// Each pipeline's per-face RMSE in pixels, in the rows' order so that
    /// colours match; NaN (a face with no labelled point) is ignored.
    pub pipelines: &'a [(String, Vec<f64>)],
}

impl ErrorDistribution<'_> {
    fn names(&self, faces: &[Vec<f64>]) -> Vec<String> {
        let names = self.pipelines.iter().zip(faces);
        names
            .map(|((name, _), faces)| format!("{name} (n={})", faces.len()))
            .collect()
    }
}

impl Figure for ErrorDistribution<'_> {
    fn size(&self) -> (u32, u32) {
        // Slots widen to fit the longest name, written level under its box.
        let longest = self
            .pipelines
            .iter()
            .map(|(name, _)| name.chars().count() + 8)
            .max();
        let slot = (longest.unwrap_or(0) as u32 * 8).max(130);
        ((160 + slot * self.pipelines.len() as u32).max(600), 550)
    }

    /// Tukey box plots drawn by hand: plotters' `Boxplot` puts its whiskers at
    /// the 1.5 IQR fences themselves, below zero pixels for any skewed error;
    /// here they end at the furthest face within the fences.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let faces: Vec<Vec<f64>> = (self.pipelines.iter())
            .map(|(_, values)| values.iter().copied().filter(|v| v.is_finite()).collect())
            .collect();
        let range = value_range(faces.iter().flatten().copied());
        let mut chart = slot_chart(root, "Per-face RMSE (pixels)", faces.len(), range, 40)?;
        for (index, faces) in faces.iter().enumerate().filter(|(_, f)| !f.is_empty()) {
            let colour = pipeline_colour(index);
            let [lower_fence, q1, median, q3, upper_fence] = Quartiles::new(faces).values().map(f64::from);
            let inside = || {
                faces
                    .iter()
                    .copied()
                    .filter(|&v| (lower_fence..=upper_fence).contains(&v))
            };
            let bottom = inside().fold(q1, f64::min);
            let top = inside().fold(q3, f64::max);
            let (left, centre, right) = (index as f64 + 0.3, index as f64 + 0.5, index as f64 + 0.7);
            let outline = colour.stroke_width(2);
            drawing(chart.draw_series([
                Rectangle::new([(left, q1), (right, q3)], colour.mix(0.15).filled()),
                Rectangle::new([(left, q1), (right, q3)], outline),
            ]))?;
            let lines = [
                [(left, median), (right, median)],
                [(centre, q3), (centre, top)],
                [(centre, q1), (centre, bottom)],
                [(centre - 0.08, top), (centre + 0.08, top)],
                [(centre - 0.08, bottom), (centre + 0.08, bottom)],
            ];
            drawing(chart.draw_series(lines.map(|line| PathElement::new(line, outline))))?;
            // Faces beyond the fences are the interesting ones: show each.
            let outliers = faces.iter().filter(|&&v| v < lower_fence || v > upper_fence);
            drawing(chart.draw_series(outliers.map(|&v| Circle::new((centre, v), 2, colour.mix(0.6)))))?;
        }
        draw_slot_names(root, &chart, &self.names(&faces), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::plot::save;
    use crate::stages::report::comparison::sample_row;

    /// A row with the given validation RMSE per epoch (the loss a tenth of it)
    /// and per-keypoint RMSE; the other fields do not reach the figures.
    fn row(pipeline: &str, val_rmse_px: &[f64], keypoint_rmse_px: Vec<Option<f64>>) -> Row {
        let history = (val_rmse_px.iter().enumerate())
            .map(|(i, &v)| EpochPoint {
                epoch: i + 1,
                train_loss: v / 10.0,
                val_rmse_px: v,
            })
            .collect();
        Row {
            history,
            keypoint_rmse_px,
            ..sample_row(pipeline, 2.0)
        }
    }

    /// Saves `figure` and checks both files, returning the SVG text.
    fn saved(figure: &impl Figure, stem: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        save(figure, dir.path(), stem).unwrap();
        let png = std::fs::read(dir.path().join(format!("{stem}.png"))).unwrap();
        assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"), "{stem}.png");
        std::fs::read_to_string(dir.path().join(format!("{stem}.svg"))).unwrap()
    }

    /// Saves the three figures drawn from rows, returning their SVGs.
    fn saved_row_figures(rows: &[Row], keypoints: &[String]) -> [String; 3] {
        [
            saved(&ValidationCurves { rows }, "validation"),
            saved(&TrainLossCurves { rows }, "train"),
            saved(&KeypointBars { keypoints, rows }, "keypoints"),
        ]
    }

    #[test]
    fn each_figure_names_every_pipeline() {
        let keypoints: Vec<String> = (0..15).map(|k| format!("keypoint_number_{k}_x")).collect();
        let rows = [
            row("lenet", &[6.0, 3.5, 2.5], vec![Some(1.5); 15]),
            // A diverged last epoch, and no keypoint scored.
            row("resnet", &[5.0, 2.0, f64::NAN], vec![None; 15]),
            // Shorter, with a missing keypoint: the bars skip it.
            row("mobile", &[8.0], vec![Some(3.0), None, Some(1.0)]),
        ];
        let spread = |scale: f64| (0..40).map(|f| f as f64 * scale).collect();
        let errors: Vec<(String, Vec<f64>)> = (rows.iter().zip([0.1, 0.2, 0.3]))
            .map(|(r, scale)| (r.pipeline.clone(), spread(scale)))
            .collect();
        let [validation, train, bars] = saved_row_figures(&rows, &keypoints);
        let distribution = saved(&ErrorDistribution { pipelines: &errors }, "errors");
        for svg in [&validation, &train, &bars, &distribution] {
            assert!(rows.iter().all(|r| svg.contains(&r.pipeline)));
        }
        assert!(validation.contains("Validation RMSE per epoch"));
        assert!(train.contains("Training loss per epoch"));
        assert!(keypoints.iter().all(|k| bars.contains(k.as_str())));
    }

    #[test]
    fn empty_and_degenerate_inputs_still_draw() {
        let one_keypoint = ["nose_tip".to_string()];
        let odd = [row("empty", &[], vec![]), row("single", &[4.0], vec![Some(2.0)])];
        for rows in [&[][..], &odd] {
            saved_row_figures(rows, &one_keypoint);
            saved_row_figures(rows, &[]);
        }
        let nan = [("all_nan".into(), vec![f64::NAN; 5]), ("none".into(), vec![])];
        assert!(saved(&ErrorDistribution { pipelines: &nan }, "nan").contains("all_nan (n=0)"));
        let flat = [("flat".into(), vec![0.0; 4])];
        saved(&ErrorDistribution { pipelines: &flat }, "flat");
        saved(&ErrorDistribution { pipelines: &[] }, "nothing");
    }

    #[test]
    fn ranges_are_never_empty_and_colours_cycle() {
        assert_eq!(value_range([]), (0.0, 1.0));
        assert_eq!(value_range([f64::NAN, 0.0]), (0.0, 1.0));
        assert_eq!(value_range([2.0, 4.0]), (0.0, 4.2));
        assert_eq!(pipeline_colour(0), pipeline_colour(8));
        assert_ne!(pipeline_colour(0), pipeline_colour(1));
    }
}
