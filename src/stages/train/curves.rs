//! Learning curves: training and validation loss, and validation RMSE in
//! pixels, per epoch.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::EpochLog;
use crate::render::plot::{DrawResult, FONT, Figure, drawing};

pub struct LearningCurves<'a> {
    pub history: &'a [EpochLog],
}

impl Figure for LearningCurves<'_> {
    fn size(&self) -> (u32, u32) {
        (1100, 450)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let (left, right) = root.split_horizontally(550);
        let epochs = self.history.len().max(1) as f64;
        let loss_top = self
            .history
            .iter()
            .flat_map(|h| [h.train_loss, h.val_loss])
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.05;
        let mut loss = drawing(
            ChartBuilder::on(&left)
                .caption("Loss (normalised targets)", (FONT, 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.5..epochs + 0.5, 0.0..loss_top),
        )?;
        drawing(
            loss.configure_mesh()
                .x_desc("epoch")
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .draw(),
        )?;
        for (name, colour, value) in [
            (
                "train",
                RGBColor(0, 114, 178),
                (|h: &EpochLog| h.train_loss) as fn(&EpochLog) -> f64,
            ),
            ("validation", RGBColor(213, 94, 0), |h: &EpochLog| h.val_loss),
        ] {
            drawing(loss.draw_series(LineSeries::new(
                self.history.iter().map(|h| (h.epoch as f64, value(h))),
                colour.stroke_width(2),
            )))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        }
        drawing(
            loss.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .draw(),
        )?;

        let rmse_top = self
            .history
            .iter()
            .map(|h| h.val_rmse_px)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.05;
        let mut rmse = drawing(
            ChartBuilder::on(&right)
                .caption("Validation RMSE (pixels, labelled points)", (FONT, 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.5..epochs + 0.5, 0.0..rmse_top),
        )?;
        drawing(
            rmse.configure_mesh()
                .x_desc("epoch")
                .y_desc("px")
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .draw(),
        )?;
        let green = RGBColor(0, 158, 115);
        drawing(rmse.draw_series(LineSeries::new(
            self.history.iter().map(|h| (h.epoch as f64, h.val_rmse_px)),
            green.stroke_width(2),
        )))?;
        drawing(
            rmse.draw_series(
                self.history
                    .iter()
                    .map(|h| Circle::new((h.epoch as f64, h.val_rmse_px), 3, green.filled())),
            ),
        )?;
        Ok(())
    }
}
