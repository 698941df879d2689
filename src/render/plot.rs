//! Plot plumbing: every figure is drawn once, generically, and saved as both PNG
//! and SVG. The font is embedded, so plots render the same on a machine without
//! system fonts.

use std::path::Path;
use std::sync::Once;

use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::RenderError;
use crate::fsutil;

pub const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

fn register_font() {
    REGISTER_FONT.call_once(|| {
        // The bytes are a valid TrueType font compiled into the binary.
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .unwrap_or_else(|_| unreachable!("the embedded font parses"));
    });
}

/// Result of drawing on any backend: errors become strings, as backends differ in type.
pub type DrawResult = Result<(), String>;

/// Converts a plotters error of any backend into the string [`DrawResult`] carries.
pub fn drawing<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| e.to_string())
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// Saves `figure` as `<dir>/<stem>.png` and `<dir>/<stem>.svg`. Both are drawn in
/// memory and written by write-then-rename, so a failure never leaves half a
/// picture and its message is about the file, not the drawing library.
pub fn save(figure: &impl Figure, dir: &Path, stem: &str) -> Result<(), RenderError> {
    let (width, height) = figure.size();
    let png = dir.join(format!("{stem}.png"));
    let encoded = render_png(figure).map_err(|e| RenderError::write(&png, e))?;
    fsutil::write_atomic(&png, &encoded).map_err(|e| RenderError::write(&png, e))?;

    let svg = dir.join(format!("{stem}.svg"));
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        drawing(root.fill(&WHITE)).map_err(|e| RenderError::write(&svg, e))?;
        figure.draw(&root).map_err(|e| RenderError::write(&svg, e))?;
        root.present().map_err(|e| RenderError::write(&svg, e))?;
    }
    fsutil::write_atomic(&svg, text.as_bytes()).map_err(|e| RenderError::write(&svg, e))
}

/// `figure` drawn on white and encoded as PNG, in memory.
pub fn render_png(figure: &impl Figure) -> Result<Vec<u8>, String> {
    register_font();
    let (width, height) = figure.size();
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        drawing(root.fill(&WHITE))?;
        figure.draw(&root)?;
        drawing(root.present())?;
    }
    let mut encoded = Vec::new();
    drawing(PngEncoder::new(&mut encoded).write_image(&rgb, width, height, ColorType::Rgb8))?;
    Ok(encoded)
}

/// A colour per keypoint, stable across plots.
pub fn keypoint_colour(index: usize) -> RGBColor {
    const COLOURS: [RGBColor; 15] = [
        RGBColor(230, 25, 75),
        RGBColor(60, 180, 75),
        RGBColor(255, 225, 25),
        RGBColor(0, 130, 200),
        RGBColor(245, 130, 48),
        RGBColor(145, 30, 180),
        RGBColor(70, 240, 240),
        RGBColor(240, 50, 230),
        RGBColor(210, 245, 60),
        RGBColor(250, 190, 212),
        RGBColor(0, 128, 128),
        RGBColor(220, 190, 255),
        RGBColor(170, 110, 40),
        RGBColor(255, 250, 200),
        RGBColor(128, 0, 0),
    ];
    COLOURS[index % COLOURS.len()]
}

/// A grey image scaled up by an integer factor, as an RGB bitmap element at `pos`.
pub fn grey_bitmap(
    pixels: &[u8],
    side: usize,
    scale: usize,
    pos: (i32, i32),
) -> BitMapElement<'static, (i32, i32)> {
    let out_side = side * scale;
    let mut rgb = vec![0u8; out_side * out_side * 3];
    for y in 0..out_side {
        for x in 0..out_side {
            let grey = pixels[(y / scale) * side + x / scale];
            let at = (y * out_side + x) * 3;
            rgb[at..at + 3].fill(grey);
        }
    }
    BitMapElement::with_owned_buffer(pos, (out_side as u32, out_side as u32), rgb)
        .unwrap_or_else(|| unreachable!("the buffer has exactly width * height * 3 bytes"))
}

/// Where image coordinate `v` (pixel centres at integers) lands in a picture scaled by `scale`.
pub fn to_canvas(v: f32, scale: usize, offset: i32) -> i32 {
    offset + ((v + 0.5) * scale as f32).round() as i32
}
