//! `reports/<pipeline>/train/augmented.png`: training faces as the network
//! sees them after `[train.augment]`, with the keypoints the loss uses, so a
//! transform that moved the picture without its labels shows at a glance.

use std::path::Path;

use rand::SeedableRng;

use crate::data::augment::{Augment, FlipMap};
use crate::data::prepared::Split;
use crate::render::faces::{Face, FaceGrid};
use crate::render::{RenderError, plot};
use crate::training::{Normalisation, assemble};

/// How many faces the picture shows.
const FACES: usize = 16;

/// Draws the first training faces, augmented with a generator of their own
/// (seeded by the training seed), into `dir/augmented.png` and `.svg`.
pub fn draw(
    split: &Split,
    side: usize,
    coordinate_names: &[String],
    keypoint_names: &[String],
    augment: &Augment,
    seed: u64,
    dir: &Path,
) -> Result<(), RenderError> {
    let rows: Vec<usize> = (0..split.len().min(FACES)).collect();
    let coords = coordinate_names.len();
    let flips = FlipMap::from_keypoint_names(keypoint_names);
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed ^ 0xa06e);
    let batch = assemble(split, &rows, side, coords, Some((augment, &flips, &mut rng)));
    let norm = Normalisation::for_side(side);
    let pixels = side * side;
    let images: Vec<u8> = batch
        .images
        .iter()
        .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    // Points the loss ignores (unlabelled, or pushed out of the picture) are not drawn.
    let points: Vec<f32> = batch
        .targets
        .iter()
        .zip(&batch.mask)
        .map(|(&t, &m)| if m > 0.0 { norm.to_pixels(t) } else { f32::NAN })
        .collect();
    let grid = FaceGrid {
        title: format!("Augmented training faces ({})", describe(augment)),
        faces: rows
            .iter()
            .map(|&i| Face {
                image: &images[i * pixels..(i + 1) * pixels],
                coords: &points[i * coords..(i + 1) * coords],
                predicted: None,
                caption: format!("row {}", split.source_rows[i]),
            })
            .collect(),
        side,
        keypoint_names,
        columns: None,
    };
    plot::save(&grid, dir, "augmented")
}

/// `hflip, rotate_deg=10, ...`: the transforms switched on.
fn describe(augment: &Augment) -> String {
    let mut on = Vec::new();
    if augment.hflip {
        on.push("hflip".to_string());
    }
    for (name, value) in [
        ("shift_px", augment.shift_px),
        ("rotate_deg", augment.rotate_deg),
        ("scale", augment.scale),
        ("brightness", augment.brightness),
        ("contrast", augment.contrast),
    ] {
        if value != 0.0 {
            on.push(format!("{name}={value}"));
        }
    }
    on.join(", ")
}
