//! Predicting the faces evaluate scores, and scoring them in pixels over
//! labelled points only.

use std::path::Path;

use super::EvaluateError;
use super::metrics_json::{KeypointScore, MemberScores, Metrics, ScoreSet, Scores};
use crate::data::augment::FlipMap;
use crate::data::parquet::FacePredictions;
use crate::data::prepared::{Prepared, Split};
use crate::data::{DataError, FaceTable};
use crate::metrics::{pck, per_keypoint, pixel_errors};
use crate::stages::train::TrainedModel;
use crate::training::{Session, Tta, ensemble, predict_pixels_tta};

/// A trained network, ready to predict, with its `model.json`.
pub type LoadedModel = (Box<dyn Session>, TrainedModel);

/// One model's (or the ensemble's) coordinates in pixels for the validation
/// faces and the `data` file's.
pub struct Predicted {
    pub val: Vec<f32>,
    data: Option<Vec<f32>>,
}

impl Predicted {
    fn average(all: &[Predicted]) -> Predicted {
        let vals: Vec<&[f32]> = all.iter().map(|p| p.val.as_slice()).collect();
        let datas: Option<Vec<&[f32]>> = all.iter().map(|p| p.data.as_deref()).collect();
        Predicted {
            val: ensemble::average(&vals),
            data: datas.map(|d| ensemble::average(&d)),
        }
    }
}

/// Every model's predictions, and what the pipeline predicts: their average.
pub struct Predictions {
    /// Each model's, with `tta`.
    each: Vec<Predicted>,
    /// The mean of `each`: the pipeline's predictions.
    pub averaged: Predicted,
    /// Each model's without `tta`; empty without `tta`.
    plain: Vec<Predicted>,
    /// How fast the scored predictions came: volatile, kept in `timing.json`
    /// beside training's images/s, never in a key.
    pub inference: serde_json::Value,
}

/// Targets (0 where unlabelled) and a mask of the labelled ones, of
/// coordinates that are NaN where unlabelled.
pub type LabelledTargets = (Vec<f32>, Vec<u8>);

/// What predictions are scored against.
pub struct Scorer<'a> {
    prepared: &'a Prepared,
    /// The `truth` file's labels for the validation rows.
    full_labels: Option<LabelledTargets>,
    /// The `data` file's faces and labels.
    data: Option<(FaceTable, LabelledTargets)>,
    keypoints: &'a [String],
    mean_shape: Vec<f32>,
}

impl<'a> Scorer<'a> {
    pub fn new(
        prepared: &'a Prepared,
        full_labels: Option<LabelledTargets>,
        data: Option<(FaceTable, LabelledTargets)>,
        keypoints: &'a [String],
    ) -> Scorer<'a> {
        Scorer {
            mean_shape: mean_shape(&prepared.train, prepared.coordinate_names.len()),
            prepared,
            full_labels,
            data,
            keypoints,
        }
    }

    /// The validation labels faces are scored on one by one: the full labels
    /// when there are, else the validation split's own.
    pub fn best_labels(&self) -> (&[f32], &[u8]) {
        match &self.full_labels {
            Some((targets, labelled)) => (targets, labelled),
            None => (&self.prepared.val.targets, &self.prepared.val.labelled),
        }
    }

    /// Every model's predictions with `tta` (and, with `tta`, without), timed.
    pub fn predict_models(
        &self,
        models: &[LoadedModel],
        tta: &[Tta],
        flips: &FlipMap,
    ) -> Result<Predictions, EvaluateError> {
        let predict_each = |tta: &[Tta]| {
            models
                .iter()
                .map(|(session, _)| self.predict(session.as_ref(), tta, flips))
                .collect::<Result<Vec<_>, _>>()
        };
        let started = std::time::Instant::now();
        let each = predict_each(tta)?;
        let images = models.len() * (self.prepared.val.len() + self.data.as_ref().map_or(0, |d| d.0.len()));
        let inference = serde_json::json!({
            "device": models[0].0.device(),
            "images": images,
            "images_per_s": images as f64 / started.elapsed().as_secs_f64().max(1e-9),
        });
        let plain = match tta.is_empty() {
            true => Vec::new(),
            false => predict_each(&[])?,
        };
        Ok(Predictions {
            averaged: Predicted::average(&each),
            each,
            plain,
            inference,
        })
    }

    fn predict(
        &self,
        session: &dyn Session,
        tta: &[Tta],
        flips: &FlipMap,
    ) -> Result<Predicted, EvaluateError> {
        let val = &self.prepared.val;
        let data = match &self.data {
            Some((faces, _)) => Some(predict_pixels_tta(
                session,
                &faces.pixels,
                faces.len(),
                faces.side,
                tta,
                flips,
            )?),
            None => None,
        };
        Ok(Predicted {
            val: predict_pixels_tta(session, &val.images, val.len(), self.prepared.side, tta, flips)?,
            data,
        })
    }

    /// `metrics.json`: the pipeline's scores and, for an ensemble, each member's.
    pub fn metrics(
        &self,
        models: &[LoadedModel],
        predictions: &Predictions,
        tta: &[Tta],
    ) -> Result<Metrics, EvaluateError> {
        let plain = &predictions.plain;
        let members = match models.len() {
            1 => Vec::new(),
            _ => models
                .iter()
                .zip(&predictions.each)
                .enumerate()
                .map(|(i, ((_, model), with_tta))| {
                    Ok(MemberScores {
                        seed: model.seed,
                        epochs_run: model.epochs_run,
                        best_epoch: model.best_epoch,
                        scores: self.score(with_tta)?,
                        without_tta: plain.get(i).map(|p| self.score(p)).transpose()?,
                    })
                })
                .collect::<Result<_, EvaluateError>>()?,
        };
        Ok(Metrics {
            model: models[0].1.clone(),
            scores: self.score(&predictions.averaged)?,
            tta: tta.to_vec(),
            without_tta: match plain.is_empty() {
                true => None,
                false => Some(self.score(&Predicted::average(plain))?),
            },
            members,
        })
    }

    fn score(&self, predicted: &Predicted) -> Result<ScoreSet, EvaluateError> {
        let val = &self.prepared.val;
        let score = |pixels: &[f32], (targets, labelled): (&[f32], &[u8])| {
            score(pixels, targets, labelled, self.keypoints, &self.mean_shape)
        };
        Ok(ScoreSet {
            validation: score(&predicted.val, (&val.targets, &val.labelled))
                .ok_or(EvaluateError::NothingLabelled)?,
            validation_full_labels: self
                .full_labels
                .as_ref()
                .and_then(|(targets, labelled)| score(&predicted.val, (targets, labelled))),
            data: match (&self.data, &predicted.data) {
                (Some((_, (targets, labelled))), Some(pixels)) => score(pixels, (targets, labelled)),
                _ => None,
            },
        })
    }
}

/// The training split's mean of each coordinate over real labels.
fn mean_shape(train: &Split, coords: usize) -> Vec<f32> {
    (0..coords)
        .map(|c| {
            let (sum, n) = (0..train.len())
                .filter(|row| train.labelled[row * coords + c] == 1)
                .fold((0.0f64, 0usize), |(s, n), row| {
                    (s + f64::from(train.targets[row * coords + c]), n + 1)
                });
            (sum / n.max(1) as f64) as f32
        })
        .collect()
}

/// The scores of `pred` against the labelled `targets`; `None` when no point
/// is labelled (no label, no number).
fn score(
    pred: &[f32],
    targets: &[f32],
    labelled: &[u8],
    keypoints: &[String],
    mean_shape: &[f32],
) -> Option<Scores> {
    let coords = keypoints.len() * 2;
    let errors = pixel_errors(pred, targets, labelled)?;
    let baseline: Vec<f32> = (0..pred.len()).map(|i| mean_shape[i % coords]).collect();
    let baseline_errors = pixel_errors(&baseline, targets, labelled)?;
    Some(Scores {
        rows: pred.len() / coords.max(1),
        labelled_points: errors.count,
        rmse_px: errors.rmse,
        mae_px: errors.mae,
        pck_5: pck(pred, targets, labelled, keypoints, 0.05),
        pck_10: pck(pred, targets, labelled, keypoints, 0.10),
        mean_shape_rmse_px: baseline_errors.rmse,
        per_keypoint: keypoints
            .iter()
            .zip(per_keypoint(pred, targets, labelled, coords))
            .map(|(name, (rmse, count))| KeypointScore {
                keypoint: name.clone(),
                labelled_points: count,
                rmse_px: rmse,
            })
            .collect(),
    })
}

/// Each validation face's prediction, scoring labels and RMSE over them (NaN,
/// written as null, for a face with no labelled point).
pub fn face_predictions(
    prepared: &Prepared,
    pixels: &[f32],
    (targets, labelled): (&[f32], &[u8]),
) -> FacePredictions {
    let coords = prepared.coordinate_names.len();
    let face_rmse_px = (0..prepared.val.len())
        .map(|row| {
            let range = row * coords..(row + 1) * coords;
            pixel_errors(&pixels[range.clone()], &targets[range.clone()], &labelled[range])
                .map_or(f64::NAN, |errors| errors.rmse)
        })
        .collect();
    FacePredictions {
        coordinate_names: prepared.coordinate_names.clone(),
        source_rows: prepared.val.source_rows.clone(),
        predicted: pixels.to_vec(),
        truth: labels_or_nan(targets, labelled),
        face_rmse_px,
    }
}

/// The labelled targets, NaN where a coordinate is unlabelled.
pub fn labels_or_nan(targets: &[f32], labelled: &[u8]) -> Vec<f32> {
    targets
        .iter()
        .zip(labelled)
        .map(|(&t, &l)| if l == 1 { t } else { f32::NAN })
        .collect()
}

/// Coordinates that are NaN where unlabelled, as scoring takes them.
pub fn labels_of(coords: &[f32]) -> LabelledTargets {
    let targets = coords.iter().map(|v| if v.is_nan() { 0.0 } else { *v }).collect();
    let labelled = coords.iter().map(|v| u8::from(!v.is_nan())).collect();
    (targets, labelled)
}

/// The `truth` file's labels for the validation rows, matched by source row and
/// checked to be the same faces.
pub fn truth_for(truth: &FaceTable, prepared: &Prepared, path: &Path) -> Result<LabelledTargets, DataError> {
    let pixels = prepared.side * prepared.side;
    let mut coords = Vec::new();
    for (i, &source_row) in prepared.val.source_rows.iter().enumerate() {
        let row = source_row as usize;
        if row >= truth.len() || truth.image(row) != &prepared.val.images[i * pixels..(i + 1) * pixels] {
            return Err(DataError::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "data row {row} is not the same face as the ingested row {row}: `truth` must be the same file with more labels"
                ),
            });
        }
        coords.extend_from_slice(truth.row_coords(row));
    }
    Ok(labels_of(&coords))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_shape_uses_real_training_labels_only() {
        let train = Split {
            images: vec![0; 3],
            targets: vec![2.0, 10.0, 4.0, 0.0, 99.0, 0.0],
            labelled: vec![1, 1, 1, 0, 0, 0],
            loss_mask: vec![1, 1, 1, 0, 1, 0],
            source_rows: vec![0, 1, 2],
        };
        assert_eq!(mean_shape(&train, 2), [3.0, 10.0]);
    }

    #[test]
    fn a_set_without_labelled_points_has_no_scores() {
        let keypoints = ["left_eye_center".to_string()];
        let scored = score(&[1.0, 2.0], &[0.0, 0.0], &[1, 1], &keypoints, &[0.0, 0.0]).unwrap();
        assert_eq!((scored.labelled_points, scored.mean_shape_rmse_px), (2, 0.0));
        assert!(score(&[1.0, 2.0], &[0.0, 0.0], &[0, 0], &keypoints, &[0.0, 0.0]).is_none());
    }

    #[test]
    fn labels_of_nan_coordinates_round_trip() {
        let (targets, labelled) = labels_of(&[3.0, f32::NAN]);
        assert_eq!(
            (targets.as_slice(), labelled.as_slice()),
            (&[3.0, 0.0][..], &[1, 0][..])
        );
        let back = labels_or_nan(&targets, &labelled);
        assert!(back[0] == 3.0 && back[1].is_nan());
    }
}
