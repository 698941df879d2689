//! The plots of `[eda]`. Each is a [`Figure`], saved as PNG and SVG.

use plotters::coord::Shift;
use plotters::data::Quartiles;
use plotters::prelude::*;

use crate::render::plot::{DrawResult, FONT, Figure, drawing, grey_bitmap, keypoint_colour, to_canvas};

/// Diverging colour for a correlation in [-1, 1]: blue, white, red.
fn correlation_colour(r: Option<f64>) -> RGBColor {
    let Some(r) = r else {
        return RGBColor(200, 200, 200);
    };
    let (end, t) = if r >= 0.0 {
        ((178.0, 24.0, 43.0), r.min(1.0))
    } else {
        ((33.0, 102.0, 172.0), (-r).min(1.0))
    };
    let mix = |e: f64| (255.0 + (e - 255.0) * t).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

/// The name at a segment of a category axis; `reversed` counts from the top.
fn segment_label(names: &[String], value: &SegmentValue<usize>, reversed: bool) -> String {
    let (SegmentValue::CenterOf(i) | SegmentValue::Exact(i)) = value else {
        return String::new();
    };
    let index = if reversed {
        names.len().checked_sub(1 + i)
    } else {
        Some(*i)
    };
    index.and_then(|i| names.get(i)).cloned().unwrap_or_default()
}

pub struct CorrelationHeatmap<'a> {
    pub names: &'a [String],
    pub matrix: &'a [Vec<Option<f64>>],
}

impl Figure for CorrelationHeatmap<'_> {
    fn size(&self) -> (u32, u32) {
        (1180, 1040)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let n = self.names.len();
        let (main, bar) = root.split_horizontally(1040);
        // Row 0 is drawn at the top: y runs over reversed indices.
        let label_y = |v: &SegmentValue<usize>| segment_label(self.names, v, true);
        let mut chart = drawing(
            ChartBuilder::on(&main)
                .caption(
                    "Pearson correlation of coordinates (pairwise-complete rows)",
                    (FONT, 22),
                )
                .margin(10)
                .x_label_area_size(210)
                .y_label_area_size(210)
                .build_cartesian_2d((0..n).into_segmented(), (0..n).into_segmented()),
        )?;
        drawing(
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(n)
                .x_label_formatter(&|_| String::new())
                .y_labels(n)
                .y_label_formatter(&label_y)
                .y_label_style((FONT, 12))
                .draw(),
        )?;
        drawing(chart.draw_series((0..n).flat_map(|row| {
            (0..n).map(move |col| {
                let y = n - 1 - row;
                Rectangle::new(
                    [
                        (SegmentValue::Exact(col), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(col + 1), SegmentValue::Exact(y + 1)),
                    ],
                    correlation_colour(self.matrix[row][col]).filled(),
                )
            })
        })))?;
        // Column names, written downwards under the grid (plotters' rotated axis
        // labels are centred on their tick and would hide under the cells).
        for (col, name) in self.names.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(SegmentValue::CenterOf(col), SegmentValue::Exact(0)));
            let style = TextStyle::from((FONT, 12)).transform(FontTransform::Rotate90);
            drawing(main.draw(&Text::new(name.clone(), (x + 6, y + 6), style)))?;
        }

        let mut scale = drawing(
            ChartBuilder::on(&bar)
                .margin_top(60)
                .margin_bottom(230)
                .margin_right(50)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..1.0, -1.0..1.0),
        )?;
        drawing(
            scale
                .configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_labels(9)
                .y_label_style((FONT, 12))
                .draw(),
        )?;
        drawing(scale.draw_series((0..100).map(|i| {
            let low = -1.0 + i as f64 * 0.02;
            Rectangle::new(
                [(0.0, low), (1.0, low + 0.02)],
                correlation_colour(Some(low + 0.01)).filled(),
            )
        })))?;
        Ok(())
    }
}

pub struct CoordinateBoxplot<'a> {
    pub names: &'a [String],
    /// Present values of each coordinate.
    pub values: &'a [Vec<f64>],
    pub side: usize,
}

impl Figure for CoordinateBoxplot<'_> {
    fn size(&self) -> (u32, u32) {
        (1000, 60 + 26 * self.names.len() as u32 + 60)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let n = self.names.len();
        let label = |v: &SegmentValue<usize>| segment_label(self.names, v, true);
        let mut chart = drawing(
            ChartBuilder::on(root)
                .caption(
                    "Labelled coordinates (pixels): quartiles, whiskers at 1.5 IQR",
                    (FONT, 22),
                )
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(230)
                .build_cartesian_2d(0f32..self.side as f32, (0..n).into_segmented()),
        )?;
        drawing(
            chart
                .configure_mesh()
                .y_labels(n)
                .y_label_formatter(&label)
                .label_style((FONT, 13))
                .x_desc("pixels")
                .axis_desc_style((FONT, 14))
                .light_line_style(WHITE)
                .draw(),
        )?;
        drawing(
            chart.draw_series(self.values.iter().enumerate().filter(|(_, v)| !v.is_empty()).map(
                |(index, values)| {
                    let colour = keypoint_colour(index / 2);
                    Boxplot::new_horizontal(SegmentValue::CenterOf(n - 1 - index), &Quartiles::new(values))
                        .width(14)
                        .style(colour.stroke_width(2))
                },
            )),
        )?;
        Ok(())
    }
}

pub struct MeanFaceCloud<'a> {
    pub mean_face: &'a [f64],
    pub side: usize,
    /// Positions of each keypoint over all rows where it is labelled.
    pub clouds: &'a [Vec<(f32, f32)>],
    pub keypoint_names: &'a [String],
}

const MEAN_SCALE: usize = 6;

impl Figure for MeanFaceCloud<'_> {
    fn size(&self) -> (u32, u32) {
        let picture = (self.side * MEAN_SCALE) as u32;
        (picture + 280, picture + 60)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let grey: Vec<u8> = self
            .mean_face
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        let origin = (10, 50);
        drawing(root.draw(&Text::new(
            "Mean face and every labelled keypoint position",
            (10, 12),
            (FONT, 20),
        )))?;
        drawing(root.draw(&grey_bitmap(&grey, self.side, MEAN_SCALE, origin)))?;
        for (k, cloud) in self.clouds.iter().enumerate() {
            let colour = keypoint_colour(k).mix(0.35).filled();
            for &(x, y) in cloud {
                let centre = (
                    to_canvas(x, MEAN_SCALE, origin.0),
                    to_canvas(y, MEAN_SCALE, origin.1),
                );
                drawing(root.draw(&Circle::new(centre, 1, colour)))?;
            }
        }
        let legend_x = origin.0 + (self.side * MEAN_SCALE) as i32 + 15;
        for (k, (name, cloud)) in self.keypoint_names.iter().zip(self.clouds).enumerate() {
            let y = origin.1 + k as i32 * 22;
            drawing(root.draw(&Circle::new(
                (legend_x + 6, y + 7),
                6,
                keypoint_colour(k).filled(),
            )))?;
            drawing(root.draw(&Text::new(
                format!("{name} ({})", cloud.len()),
                (legend_x + 18, y),
                (FONT, 13),
            )))?;
        }
        Ok(())
    }
}

pub struct BrightnessHistogram<'a> {
    pub histogram: &'a [u64],
}

impl Figure for BrightnessHistogram<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 500)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let total: u64 = self.histogram.iter().sum::<u64>().max(1);
        let shares: Vec<f64> = self
            .histogram
            .iter()
            .map(|&c| 100.0 * c as f64 / total as f64)
            .collect();
        let top = shares.iter().copied().fold(0.0, f64::max) * 1.05 + 1e-9;
        let mut chart = drawing(
            ChartBuilder::on(root)
                .caption("Brightness: share of all pixels at each grey level", (FONT, 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..256.0, 0.0..top),
        )?;
        drawing(
            chart
                .configure_mesh()
                .x_desc("grey level")
                .y_desc("% of pixels")
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw(),
        )?;
        drawing(
            chart.draw_series(shares.iter().enumerate().map(|(level, &share)| {
                Rectangle::new(
                    [(level as f64, 0.0), (level as f64 + 1.0, share)],
                    RGBColor(70, 110, 170).filled(),
                )
            })),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_colours_run_blue_white_red() {
        assert_eq!(correlation_colour(Some(0.0)), RGBColor(255, 255, 255));
        assert_eq!(correlation_colour(Some(1.0)), RGBColor(178, 24, 43));
        assert_eq!(correlation_colour(Some(-1.0)), RGBColor(33, 102, 172));
        assert_eq!(correlation_colour(None), RGBColor(200, 200, 200));
    }
}
