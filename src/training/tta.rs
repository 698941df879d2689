//! Test-time augmentation: each face is also predicted mirrored, and the two
//! predictions, the mirrored one undone, are averaged.

use super::{Session, TrainError, predict_pixels};
use crate::data::augment::FlipMap;

crate::config_choice! {
    /// The transforms of `[evaluate] tta`.
    pub enum Tta {
        /// Mirror left to right: x becomes (W - 1) - x and left/right keypoints swap.
        HFlip = "hflip",
    }
}

/// Predictions in pixels for `rows` grey `side` x `side` images, averaged with
/// those of each transform in `tta`, undone.
pub fn predict_pixels_tta(
    session: &dyn Session,
    images: &[u8],
    rows: usize,
    side: usize,
    tta: &[Tta],
    flips: &FlipMap,
) -> Result<Vec<f32>, TrainError> {
    let mut predictions = predict_pixels(session, images, rows, side)?;
    if tta.contains(&Tta::HFlip) {
        let mut mirrored =
            crate::buffers::with_capacity(images.len(), "the mirrored faces of test-time flips")?;
        mirrored.extend(
            images
                .chunks(side.max(1))
                .flat_map(|row| row.iter().rev().copied()),
        );
        let of_mirrored = predict_pixels(session, &mirrored, rows, side)?;
        average_with_mirrored(&mut predictions, &of_mirrored, rows, side, flips);
    }
    Ok(predictions)
}

/// Averages each face's prediction with the prediction for its mirror image,
/// mapped back: keypoint k of the face is its partner's point in the mirror,
/// at x' = (side - 1) - x.
fn average_with_mirrored(
    predictions: &mut [f32],
    of_mirrored: &[f32],
    rows: usize,
    side: usize,
    flips: &FlipMap,
) {
    let coords = predictions.len() / rows.max(1);
    let last = (side - 1) as f32;
    for (face, mirror) in predictions.chunks_mut(coords).zip(of_mirrored.chunks(coords)) {
        for k in 0..coords / 2 {
            let p = flips.partner(k);
            face[2 * k] = (face[2 * k] + (last - mirror[2 * p])) / 2.0;
            face[2 * k + 1] = (face[2 * k + 1] + mirror[2 * p + 1]) / 2.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flips() -> FlipMap {
        let names: Vec<String> = ["left_eye_center", "right_eye_center", "nose_tip"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        FlipMap::from_keypoint_names(&names)
    }

    #[test]
    fn a_mirror_consistent_prediction_is_kept_and_others_are_averaged() {
        // A face with its left eye at (60, 40), right eye at (30, 41), nose at (45, 60),
        // in a 96-pixel image. Its mirror has the left eye where the right eye
        // was mirrored: (95 - 30, 41), and so on.
        let face = [60.0, 40.0, 30.0, 41.0, 45.0, 60.0];
        let consistent = [65.0, 41.0, 35.0, 40.0, 50.0, 60.0];
        let mut predictions = face.to_vec();
        average_with_mirrored(&mut predictions, &consistent, 1, 96, &flips());
        assert_eq!(predictions, face);
        // A mirror prediction 2 px to the right everywhere moves the average 1 px left.
        let shifted: Vec<f32> = consistent
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 2 == 0 { v + 2.0 } else { *v })
            .collect();
        let mut predictions = face.to_vec();
        average_with_mirrored(&mut predictions, &shifted, 1, 96, &flips());
        assert_eq!(predictions, [59.0, 40.0, 29.0, 41.0, 44.0, 60.0]);
    }
}
