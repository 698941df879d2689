//! `fkp predict --images`: keypoints for PNG and JPEG files of any size and
//! colour, in each image's own pixels.
//!
//! An image is taken to be a face crop like Kaggle's (the face filling most of
//! the frame): it is made grey as Pillow's `convert("L")` does (ITU-R BT.601
//! luma, rounded; alpha ignored), resized to the model's side (each axis on
//! its own, so a non-square image is stretched: by area averaging where it
//! shrinks, bilinear where it grows), predicted like a row of the training
//! file, and the coordinates mapped back to the original's pixels (pixel
//! centres at integers: x = (x' + 0.5) * width / side - 0.5).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Model, PredictError, PredictRequest, write_output};
use crate::console::Console;
use crate::render::plot::{DrawResult, FONT, Figure, drawing, keypoint_colour, render_png};

/// File extensions taken from a folder (any file named on its own is read,
/// whatever its name).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("--images {path}: {message}")]
    Path { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("--draw: {first} and {second} would both be drawn to {target}; rename one")]
    DrawnTwice {
        first: PathBuf,
        second: PathBuf,
        target: PathBuf,
    },
    #[error("--draw: the drawing of {image} would overwrite {target}, an image being predicted")]
    DrawOverInput { image: PathBuf, target: PathBuf },
    #[error("--draw {path}: {message}")]
    DrawDir { path: PathBuf, message: String },
}

/// The image files `paths` name: files as given, and each folder's PNG and
/// JPEG files (by extension, any case; not hidden, not in subfolders), sorted
/// by name. With `draw`, also checks that no two images would be drawn to
/// the same file and that no drawing would replace an input.
pub fn collect(paths: &[PathBuf], draw: Option<&Path>) -> Result<Vec<PathBuf>, ImageError> {
    let mut files = Vec::new();
    for path in paths {
        let fail = |message: String| ImageError::Path {
            path: path.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| fail(format!("cannot list the folder: {e}")))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let image_like = p
                    .extension()
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str()));
                !name.starts_with('.') && image_like && p.is_file()
            })
            .collect();
        if found.is_empty() {
            return Err(fail("the folder holds no .png, .jpg or .jpeg file".into()));
        }
        found.sort();
        files.extend(found);
    }
    if let Some(dir) = draw {
        let mut targets: Vec<(PathBuf, &PathBuf)> = files.iter().map(|f| (drawing_path(dir, f), f)).collect();
        for (target, image) in &targets {
            if files.iter().any(|f| {
                f.canonicalize()
                    .ok()
                    .is_some_and(|c| Some(c) == target.canonicalize().ok())
            }) {
                return Err(ImageError::DrawOverInput {
                    image: (*image).clone(),
                    target: target.clone(),
                });
            }
        }
        targets.sort();
        for pair in targets.windows(2) {
            if pair[0].0 == pair[1].0 && pair[0].1 != pair[1].1 {
                return Err(ImageError::DrawnTwice {
                    first: pair[0].1.clone(),
                    second: pair[1].1.clone(),
                    target: pair[0].0.clone(),
                });
            }
        }
    }
    Ok(files)
}

/// Where `--draw DIR` puts the drawing of `image`: `DIR/<stem>.png`.
pub fn drawing_path(dir: &Path, image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    dir.join(format!("{stem}.png"))
}

/// Reads and decodes an image file, PNG or JPEG, whatever its name says.
pub fn decode(path: &Path) -> Result<DynamicImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let reader = image::io::Reader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read it: {e}"))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => return Err(format!("is a {other:?} image; fkp reads PNG and JPEG")),
        None => return Err("is not an image: its content is neither PNG nor JPEG".into()),
    }
    let format = reader.format();
    let image = reader.decode().map_err(|e| match format {
        Some(ImageFormat::Png) => format!("is not a readable PNG image: {e}"),
        _ => format!("is not a readable JPEG image: {e}"),
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err("the image has no pixels".into());
    }
    Ok(image)
}

/// One grey byte per pixel, row-major: colour as Pillow's `convert("L")`
/// (L = (19595 R + 38470 G + 7471 B + 2^15) >> 16), grey as it is; alpha
/// ignored, 16 bits scaled to 8.
pub fn to_grey(image: &DynamicImage) -> Vec<u8> {
    if !image.color().has_color() {
        return image.to_luma8().into_raw();
    }
    image
        .to_rgb8()
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            ((19595 * r + 38470 * g + 7471 * b + (1 << 15)) >> 16) as u8
        })
        .collect()
}

/// For each output pixel of an axis, the input pixels and their weights
/// (summing to 1): areas where the axis shrinks (or keeps its size), bilinear
/// between pixel centres where it grows.
fn axis_weights(from: usize, to: usize) -> Vec<Vec<(usize, f64)>> {
    let ratio = from as f64 / to as f64;
    (0..to)
        .map(|o| {
            if from >= to {
                let (lo, hi) = (o as f64 * ratio, (o + 1) as f64 * ratio);
                let first = lo.floor() as usize;
                let last = (hi.ceil() as usize).min(from);
                (first..last)
                    .filter_map(|i| {
                        let overlap = hi.min((i + 1) as f64) - lo.max(i as f64);
                        (overlap > 1e-12).then_some((i, overlap / ratio))
                    })
                    .collect()
            } else {
                let centre = ((o as f64 + 0.5) * ratio - 0.5).clamp(0.0, (from - 1) as f64);
                let i = centre.floor() as usize;
                let frac = centre - i as f64;
                if frac == 0.0 || i + 1 >= from {
                    vec![(i, 1.0)]
                } else {
                    vec![(i, 1.0 - frac), (i + 1, frac)]
                }
            }
        })
        .collect()
}

/// A `width` x `height` grey image resized to `side` x `side`. An image that is
/// `side` already comes back unchanged, and one of a whole multiple of it is
/// the mean of each block.
pub fn resize(pixels: &[u8], width: usize, height: usize, side: usize) -> Vec<u8> {
    let across = axis_weights(width, side);
    let down = axis_weights(height, side);
    let mut rows = vec![0f64; height * side];
    for y in 0..height {
        let row = &pixels[y * width..(y + 1) * width];
        for (o, weights) in across.iter().enumerate() {
            rows[y * side + o] = weights.iter().map(|&(i, w)| w * f64::from(row[i])).sum();
        }
    }
    let mut out = vec![0u8; side * side];
    for (o, weights) in down.iter().enumerate() {
        for x in 0..side {
            let value: f64 = weights.iter().map(|&(i, w)| w * rows[i * side + x]).sum();
            out[o * side + x] = value.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Coordinates predicted on the `side` x `side` image, in the original's
/// pixels (x then y of each keypoint).
pub fn to_original(coords: &[f32], width: usize, height: usize, side: usize) -> Vec<f32> {
    let map = |v: f32, size: usize| {
        if size == side {
            v
        } else {
            ((f64::from(v) + 0.5) * size as f64 / side as f64 - 0.5) as f32
        }
    };
    coords
        .chunks(2)
        .flat_map(|p| [map(p[0], width), map(p[1], height)])
        .collect()
}

/// Predicts every image and writes the CSV (and, with `--draw`, the pictures).
pub(super) fn predict_images(
    files: &[PathBuf],
    model: &Model,
    request: &PredictRequest,
    console: &Console,
) -> Result<usize, PredictError> {
    let side = model.trained.spec.side;
    let mut loaded = Vec::new(); // (file, width, height)
    let mut pixels = Vec::new();
    let mut failures = Vec::new();
    for file in files {
        match decode(file) {
            Ok(image) => {
                let (width, height) = (image.width() as usize, image.height() as usize);
                pixels.extend(resize(&to_grey(&image), width, height, side));
                loaded.push((file, width, height));
            }
            Err(message) if request.fail_fast => {
                return Err(ImageError::Unreadable {
                    path: file.clone(),
                    message,
                }
                .into());
            }
            Err(message) => {
                console.status(&format!("skipping {}: {message}", file.display()));
                failures.push((file, message));
            }
        }
    }
    let predictions = match loaded.len() {
        0 => Vec::new(),
        n => model.predict(&pixels, n)?,
    };
    let trained = model.trained;
    let coords = trained.coordinate_names.len();
    let mut csv = csv::Writer::from_writer(Vec::new());
    let write_error = |e: csv::Error| PredictError::Write {
        path: request.output.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let mut header = vec!["file".to_string()];
    header.extend(trained.coordinate_names.iter().cloned());
    csv.write_record(&header).map_err(write_error)?;
    let mut mapped = Vec::with_capacity(loaded.len());
    for ((file, width, height), row) in loaded.iter().zip(predictions.chunks(coords.max(1))) {
        let original = to_original(row, *width, *height, side);
        let mut record = vec![file.display().to_string()];
        record.extend(original.iter().map(|v| v.to_string()));
        csv.write_record(&record).map_err(write_error)?;
        mapped.push(original);
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| write_error(csv::Error::from(e.into_error())))?;
    write_output(request.output, &bytes)?;
    if let Some(dir) = request.draw {
        std::fs::create_dir_all(dir).map_err(|e| ImageError::DrawDir {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        for ((file, ..), coords) in loaded.iter().zip(&mapped) {
            let target = drawing_path(dir, file);
            // Decoded again rather than kept: a folder of photos need not fit in memory.
            let image = decode(file).map_err(|message| ImageError::Unreadable {
                path: (*file).clone(),
                message,
            })?;
            let figure = Annotated {
                image: &image,
                coords,
                names: &trained.keypoint_names,
            };
            let png = render_png(&figure).map_err(|e| PredictError::Write {
                path: target.clone(),
                source: std::io::Error::other(e),
            })?;
            write_output(&target, &png)?;
        }
    }
    if !failures.is_empty() {
        return Err(PredictError::SomeImagesFailed {
            failed: failures.len(),
            total: files.len(),
            written: loaded.len(),
            output: request.output.to_path_buf(),
            list: failures
                .iter()
                .map(|(file, message)| format!("  {}: {message}", file.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    Ok(loaded.len())
}

/// An image with its keypoints: numbered dots in each keypoint's colour, and
/// a legend of the numbers' names below. Small images are drawn enlarged.
struct Annotated<'a> {
    image: &'a DynamicImage,
    coords: &'a [f32],
    names: &'a [String],
}

const LEGEND_COLUMNS: usize = 3;

impl Annotated<'_> {
    /// Whole-number enlargement so that the longer side is at least 384 pixels.
    fn scale(&self) -> u32 {
        let longer = self.image.width().max(self.image.height()).max(1);
        384u32.div_ceil(longer).max(1)
    }

    /// Text size and dot radius, in canvas pixels.
    fn sizes(&self) -> (u32, u32) {
        let longer = self.image.width().max(self.image.height()) * self.scale();
        ((longer / 40).max(12), (longer / 120).max(3))
    }

    fn legend_height(&self) -> u32 {
        let (text, _) = self.sizes();
        let rows = self.names.len().div_ceil(LEGEND_COLUMNS) as u32;
        rows * (text + 6) + 10
    }
}

impl Figure for Annotated<'_> {
    fn size(&self) -> (u32, u32) {
        let s = self.scale();
        let (text, _) = self.sizes();
        (
            (self.image.width() * s).max(text * 48),
            self.image.height() * s + self.legend_height(),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let s = self.scale();
        let (width, height) = (self.image.width() * s, self.image.height() * s);
        let rgb = self.image.to_rgb8();
        let mut scaled = vec![0u8; (width * height * 3) as usize];
        for y in 0..height {
            for x in 0..width {
                let p = rgb.get_pixel(x / s, y / s).0;
                let at = ((y * width + x) * 3) as usize;
                scaled[at..at + 3].copy_from_slice(&p);
            }
        }
        let bitmap = BitMapElement::with_owned_buffer((0, 0), (width, height), scaled)
            .ok_or("the picture's buffer has the wrong size")?;
        drawing(root.draw(&bitmap))?;
        let (text, radius) = self.sizes();
        let canvas = |v: f32| ((f64::from(v) + 0.5) * f64::from(s)).round() as i32;
        for (k, pair) in self.coords.chunks(2).enumerate() {
            let centre = (canvas(pair[0]), canvas(pair[1]));
            let r = radius as i32;
            drawing(root.draw(&Circle::new(centre, r, keypoint_colour(k).filled())))?;
            drawing(root.draw(&Circle::new(centre, r, BLACK.stroke_width(1))))?;
            let label = (k + 1).to_string();
            let at = (centre.0 + r + 1, centre.1 - r - text as i32 / 2);
            drawing(root.draw(&Text::new(
                label.clone(),
                (at.0 + 1, at.1 + 1),
                (FONT, text).into_font().color(&BLACK),
            )))?;
            drawing(root.draw(&Text::new(label, at, (FONT, text).into_font().color(&WHITE))))?;
        }
        let (canvas_width, _) = self.size();
        let column = (canvas_width as i32 - 10) / LEGEND_COLUMNS as i32;
        let top = height as i32 + 6;
        for (k, name) in self.names.iter().enumerate() {
            let x = 6 + (k % LEGEND_COLUMNS) as i32 * column;
            let y = top + (k / LEGEND_COLUMNS) as i32 * (text as i32 + 6);
            let r = (text / 3) as i32;
            drawing(root.draw(&Circle::new(
                (x + r, y + text as i32 / 2),
                r,
                keypoint_colour(k).filled(),
            )))?;
            drawing(root.draw(&Text::new(
                format!("{} {name}", k + 1),
                (x + 2 * r + 4, y),
                (FONT, text.saturating_sub(2).max(10)),
            )))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_keeps_an_image_of_the_side_and_averages_whole_blocks() {
        let pixels: Vec<u8> = (0..16).map(|v| v * 10).collect();
        assert_eq!(resize(&pixels, 4, 4, 4), pixels);
        // Each pixel doubled both ways, then halved: the original again.
        let doubled: Vec<u8> = (0..8)
            .flat_map(|y| (0..8).map(move |x| ((y / 2) * 4 + x / 2) as u8 * 10))
            .collect();
        assert_eq!(resize(&doubled, 8, 8, 4), pixels);
        // A 2x1 block average rounds: (0 + 255) / 2 = 127.5 -> 128.
        assert_eq!(resize(&[0, 255, 0, 255], 2, 2, 1), [128]);
        // Growing interpolates between centres and keeps the ends.
        let grown = resize(&[0, 200, 0, 200], 2, 2, 4);
        assert_eq!(&grown[..4], &[0, 50, 150, 200]);
    }

    #[test]
    fn a_stretched_image_maps_each_axis_back_on_its_own() {
        // Pixel centre 0 of a 96 frame is pixel centre 0.5 of a 192 one.
        assert_eq!(to_original(&[0.0, 0.0], 192, 96, 96), [0.5, 0.0]);
        assert_eq!(to_original(&[47.5, 10.0], 96, 48, 96), [47.5, 4.75]);
        assert_eq!(to_original(&[1.0, 2.0], 96, 96, 96), [1.0, 2.0]);
    }

    #[test]
    fn colour_becomes_grey_as_pillow_makes_it() {
        let image = DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 10, 20, 30]).unwrap(),
        );
        // Pillow: Image.new("RGB", ...).convert("L") gives 76, 150, 18.
        assert_eq!(to_grey(&image), [76, 150, 18]);
    }
}
