//! Turning rows of a prepared split into a batch the network reads: pixels
//! scaled to [0, 1], targets normalised to about [-1, 1], and the loss mask,
//! with augmentation applied to training batches.

use crate::data::augment::{Augment, FlipMap, Sample};
use crate::data::prepared::Split;

/// Targets are trained as `(y - side/2) / (side/2)`; every metric maps back to pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    pub half: f32,
}

impl Normalisation {
    pub fn for_side(side: usize) -> Self {
        Normalisation {
            half: side as f32 / 2.0,
        }
    }

    pub fn to_unit(&self, pixels: f32) -> f32 {
        (pixels - self.half) / self.half
    }

    pub fn to_pixels(&self, unit: f32) -> f32 {
        unit * self.half + self.half
    }
}

/// One batch: `rows` images of `side * side` values, `rows * coords` targets and
/// loss-mask entries (1 or 0, or a row's weight: [`Batch::weigh_complete_rows`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub images: Vec<f32>,
    pub targets: Vec<f32>,
    pub mask: Vec<f32>,
}

/// Builds a batch from `rows` of `split`; when `augment` is given, each image is
/// transformed with draws from `rng` (training batches only).
pub fn assemble(
    split: &Split,
    rows: &[usize],
    side: usize,
    coords: usize,
    augment: Option<(&Augment, &FlipMap, &mut rand_pcg::Pcg64Mcg)>,
) -> Batch {
    let pixels = side * side;
    let norm = Normalisation::for_side(side);
    let mut batch = Batch {
        rows: rows.len(),
        images: Vec::with_capacity(rows.len() * pixels),
        targets: Vec::with_capacity(rows.len() * coords),
        mask: Vec::with_capacity(rows.len() * coords),
    };
    let mut augment = augment;
    for &row in rows {
        let mut image: Vec<f32> = split.images[row * pixels..(row + 1) * pixels]
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        let mut targets = split.targets[row * coords..(row + 1) * coords].to_vec();
        let mut counts: Vec<bool> = split.loss_mask[row * coords..(row + 1) * coords]
            .iter()
            .map(|&m| m == 1)
            .collect();
        if let Some((transforms, flips, rng)) = augment.as_mut() {
            let mut sample = Sample {
                image: &mut image,
                coords: &mut targets,
                counts: &mut counts,
                side,
            };
            transforms.apply(*rng, flips, &mut sample);
        }
        batch.images.extend(image);
        batch.targets.extend(targets.iter().map(|&t| norm.to_unit(t)));
        batch
            .mask
            .extend(counts.iter().map(|&c| if c { 1.0 } else { 0.0 }));
    }
    batch
}

impl Batch {
    /// Multiplies the loss mask of the rows of `split` (as `rows` lists them)
    /// whose every coordinate is labelled by `weight`: the masked loss, a mean
    /// weighted by the mask, then counts each complete face `weight` times.
    /// Kaggle's faces come from two sources, one labelling all 15 keypoints
    /// and one only 4 (`[train] complete_weight`).
    pub fn weigh_complete_rows(&mut self, split: &Split, rows: &[usize], coords: usize, weight: f32) {
        for (i, &row) in rows.iter().enumerate() {
            let labelled = &split.labelled[row * coords..(row + 1) * coords];
            if labelled.iter().all(|&l| l == 1) {
                self.mask[i * coords..(i + 1) * coords]
                    .iter_mut()
                    .for_each(|m| *m *= weight);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> Split {
        Split {
            images: vec![0, 255, 51, 102, 10, 20, 30, 40],
            targets: vec![1.0, 0.5, 0.0, 0.0],
            labelled: vec![1, 1, 0, 0],
            loss_mask: vec![1, 1, 0, 0],
            source_rows: vec![0, 1],
        }
    }

    #[test]
    fn scales_pixels_normalises_targets_and_keeps_the_mask() {
        let batch = assemble(&split(), &[0, 1], 2, 2, None);
        assert_eq!(batch.rows, 2);
        assert_eq!(&batch.images[..4], &[0.0, 1.0, 0.2, 0.4]);
        // side 2: half = 1; (1 - 1) / 1 = 0, (0.5 - 1) / 1 = -0.5
        assert_eq!(&batch.targets[..2], &[0.0, -0.5]);
        assert_eq!(batch.mask, [1.0, 1.0, 0.0, 0.0]);
        let norm = Normalisation::for_side(96);
        assert_eq!(norm.to_pixels(norm.to_unit(37.5)), 37.5);
    }

    #[test]
    fn complete_rows_weigh_more_and_missing_labels_stay_out() {
        // Row 0 is complete, row 1 has one label of two.
        let split = Split {
            images: vec![0; 8],
            targets: vec![1.0, 0.5, 0.0, 0.0],
            labelled: vec![1, 1, 1, 0],
            loss_mask: vec![1, 1, 1, 0],
            source_rows: vec![0, 1],
        };
        let mut batch = assemble(&split, &[1, 0], 2, 2, None);
        batch.weigh_complete_rows(&split, &[1, 0], 2, 3.0);
        assert_eq!(batch.mask, [1.0, 0.0, 3.0, 3.0]);
    }
}
