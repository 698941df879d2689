//! Validation faces for the page: each face's predicted and true keypoints
//! (the evaluate stage's `predictions.parquet`) and its picture (the prepare
//! stage's validation split, as a PNG).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::ImageEncoder;
use serde::Serialize;

use crate::dag::{DATA_DIR, StatusReport};
use crate::data::DataError;
use crate::data::faces::keypoint_names;
use crate::data::parquet::read_predictions;
use crate::data::prepared::Prepared;
use crate::stages::StageKind;
use crate::stages::evaluate::PREDICTIONS_FILE;
use crate::stages::prepare::PREPARED_FILE;

#[derive(Debug, thiserror::Error)]
pub enum FacesError {
    #[error("no pipeline `{0}`")]
    NoPipeline(String),
    #[error("`{pipeline}` has no cached [{stage}] stage yet: run it first")]
    NotCached { pipeline: String, stage: &'static str },
    #[error("`{pipeline}` has {faces} validation faces: there is no face {row}")]
    NoFace {
        pipeline: String,
        faces: usize,
        row: usize,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("cannot encode the face as PNG: {0}")]
    Png(String),
}

impl FacesError {
    /// Whether the request asked for something that is not there (404) rather
    /// than found a file it could not read (500).
    pub fn is_not_found(&self) -> bool {
        !matches!(self, FacesError::Data(_) | FacesError::Png(_))
    }
}

/// One validation face: coordinates in pixels, `null` where unlabelled.
#[derive(Debug, Serialize)]
pub struct Face {
    /// Its row in the validation split (what `/api/face.png` takes).
    pub row: usize,
    /// Its row in the ingested data: the same face in another pipeline on the same data.
    pub source_row: u32,
    pub rmse_px: Option<f64>,
    pub predicted: Vec<Option<f32>>,
    pub truth: Vec<Option<f32>>,
}

#[derive(Debug, Serialize)]
pub struct Faces {
    pub pipeline: String,
    pub coordinate_names: Vec<String>,
    pub keypoints: Vec<String>,
    pub faces: Vec<Face>,
}

/// The cached file of a pipeline's stage, from the status.
fn cached_file(
    status: &StatusReport,
    pipeline: &str,
    kind: StageKind,
    file: &str,
) -> Result<PathBuf, FacesError> {
    let found = status
        .pipelines
        .iter()
        .find(|p| p.name == pipeline)
        .ok_or_else(|| FacesError::NoPipeline(pipeline.to_string()))?;
    found
        .stages
        .iter()
        .filter(|s| kind.matches_label(&s.stage) && s.state == crate::dag::StateName::Cached)
        .find_map(|s| s.entry.as_ref())
        .map(|entry| entry.join(DATA_DIR).join(file))
        .ok_or(FacesError::NotCached {
            pipeline: pipeline.to_string(),
            stage: kind.name(),
        })
}

fn finite<T: num_traits::Float>(values: &[T]) -> Vec<Option<T>> {
    values.iter().map(|v| v.is_finite().then_some(*v)).collect()
}

pub fn faces(status: &StatusReport, pipeline: &str) -> Result<Faces, FacesError> {
    let path = cached_file(status, pipeline, StageKind::Evaluate, PREDICTIONS_FILE)?;
    let predictions = read_predictions(&path)?;
    let width = predictions.coordinate_names.len().max(1);
    let faces = predictions
        .source_rows
        .iter()
        .enumerate()
        .map(|(row, &source_row)| Face {
            row,
            source_row,
            rmse_px: predictions.face_rmse_px[row]
                .is_finite()
                .then_some(predictions.face_rmse_px[row]),
            predicted: finite(&predictions.predicted[row * width..(row + 1) * width]),
            truth: finite(&predictions.truth[row * width..(row + 1) * width]),
        })
        .collect();
    Ok(Faces {
        pipeline: pipeline.to_string(),
        keypoints: keypoint_names(&predictions.coordinate_names),
        coordinate_names: predictions.coordinate_names,
        faces,
    })
}

/// Prepared splits read lately: a face browser asks for dozens of faces of
/// the same one.
#[derive(Default)]
pub struct FaceImages {
    recent: Mutex<Vec<(PathBuf, Arc<Prepared>)>>,
}

/// Prepared files kept in memory (the full development set's is about 32 MB).
const KEEP_PREPARED: usize = 2;

impl FaceImages {
    /// Validation face `row` of `pipeline`'s prepared split, as a grey PNG.
    pub fn png(&self, status: &StatusReport, pipeline: &str, row: usize) -> Result<Vec<u8>, FacesError> {
        let path = cached_file(status, pipeline, StageKind::Prepare, PREPARED_FILE)?;
        let prepared = self.prepared(&path)?;
        let side = prepared.side;
        let faces = prepared.val.len();
        if row >= faces {
            return Err(FacesError::NoFace {
                pipeline: pipeline.to_string(),
                faces,
                row,
            });
        }
        let pixels = &prepared.val.images[row * side * side..(row + 1) * side * side];
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(pixels, side as u32, side as u32, image::ColorType::L8)
            .map_err(|e| FacesError::Png(e.to_string()))?;
        Ok(png)
    }

    fn prepared(&self, path: &Path) -> Result<Arc<Prepared>, FacesError> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = recent.iter().position(|(p, _)| p == path) {
            let hit = recent.remove(index);
            let prepared = hit.1.clone();
            recent.insert(0, hit);
            return Ok(prepared);
        }
        // (read under the lock: two requests for one new file read it once)
        let prepared = Arc::new(Prepared::read(path)?);
        recent.insert(0, (path.to_path_buf(), prepared.clone()));
        recent.truncate(KEEP_PREPARED);
        Ok(prepared)
    }
}
