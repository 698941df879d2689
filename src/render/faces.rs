//! A grid of faces with their keypoints drawn: true labels as filled dots and,
//! when given, predictions as crosses of the same colour. Missing labels are
//! simply not drawn.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot::{DrawResult, FONT, Figure, drawing, grey_bitmap, keypoint_colour, to_canvas};

/// One face of a grid: its pixels, its coordinates (NaN where missing) and a caption.
pub struct Face<'a> {
    pub image: &'a [u8],
    pub coords: &'a [f32],
    /// Predicted coordinates, drawn as crosses.
    pub predicted: Option<&'a [f32]>,
    pub caption: String,
}

pub struct FaceGrid<'a> {
    pub title: String,
    pub faces: Vec<Face<'a>>,
    pub side: usize,
    pub keypoint_names: &'a [String],
    /// Faces per row; `None` makes the grid about square.
    pub columns: Option<usize>,
}

const FACE_SCALE: usize = 3;
const CAPTION_HEIGHT: usize = 24;
const LEGEND_HEIGHT: usize = 110;
const TITLE_HEIGHT: usize = 40;

impl FaceGrid<'_> {
    fn columns(&self) -> usize {
        self.columns
            .unwrap_or_else(|| (self.faces.len() as f64).sqrt().ceil() as usize)
            .max(1)
    }

    fn cell(&self) -> (usize, usize) {
        (
            self.side * FACE_SCALE + 8,
            self.side * FACE_SCALE + CAPTION_HEIGHT + 8,
        )
    }
}

impl Figure for FaceGrid<'_> {
    fn size(&self) -> (u32, u32) {
        let columns = self.columns();
        let rows = self.faces.len().div_ceil(columns);
        let (w, h) = self.cell();
        (
            (w * columns).max(700) as u32,
            (TITLE_HEIGHT + h * rows + LEGEND_HEIGHT) as u32,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let (width, _) = self.size();
        let title_style = TextStyle::from((FONT, 20)).pos(Pos::new(HPos::Center, VPos::Center));
        drawing(root.draw(&Text::new(
            self.title.clone(),
            (width as i32 / 2, TITLE_HEIGHT as i32 / 2),
            title_style,
        )))?;
        let (cell_w, cell_h) = self.cell();
        let columns = self.columns();
        for (index, face) in self.faces.iter().enumerate() {
            let x0 = ((index % columns) * cell_w + 4) as i32;
            let y0 = (TITLE_HEIGHT + (index / columns) * cell_h + 4) as i32;
            drawing(root.draw(&grey_bitmap(face.image, self.side, FACE_SCALE, (x0, y0))))?;
            for (k, pair) in face.coords.chunks(2).enumerate() {
                if pair[0].is_nan() || pair[1].is_nan() {
                    continue; // a missing label is simply not drawn
                }
                let centre = (
                    to_canvas(pair[0], FACE_SCALE, x0),
                    to_canvas(pair[1], FACE_SCALE, y0),
                );
                drawing(root.draw(&Circle::new(centre, 4, keypoint_colour(k).filled())))?;
                drawing(root.draw(&Circle::new(centre, 4, BLACK.stroke_width(1))))?;
            }
            for (k, pair) in face.predicted.unwrap_or(&[]).chunks(2).enumerate() {
                let (x, y) = (
                    to_canvas(pair[0], FACE_SCALE, x0),
                    to_canvas(pair[1], FACE_SCALE, y0),
                );
                let colour = keypoint_colour(k).stroke_width(2);
                drawing(root.draw(&PathElement::new(vec![(x - 4, y - 4), (x + 4, y + 4)], colour)))?;
                drawing(root.draw(&PathElement::new(vec![(x - 4, y + 4), (x + 4, y - 4)], colour)))?;
            }
            let caption_at = (x0, y0 + (self.side * FACE_SCALE) as i32 + 4);
            drawing(root.draw(&Text::new(face.caption.clone(), caption_at, (FONT, 13))))?;
        }
        let legend_top = self.size().1 as i32 - LEGEND_HEIGHT as i32 + 8;
        draw_legend(root, self.keypoint_names, legend_top, width as i32)
    }
}

/// Keypoint colours and names in rows of three.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    names: &[String],
    top: i32,
    width: i32,
) -> DrawResult {
    let per_row = 3;
    let column_width = (width - 20) / per_row;
    for (k, name) in names.iter().enumerate() {
        let x = 10 + (k as i32 % per_row) * column_width;
        let y = top + (k as i32 / per_row) * 18;
        drawing(root.draw(&Circle::new((x + 6, y + 7), 5, keypoint_colour(k).filled())))?;
        drawing(root.draw(&Text::new(name.clone(), (x + 16, y), (FONT, 13))))?;
    }
    Ok(())
}
