//! The safetensors files fkp writes: tensors, plus a single metadata entry `fkp`
//! holding a JSON object. One entry, because safetensors keeps metadata in a
//! `HashMap` whose order, and so the file's bytes, would change from run to run
//! with two or more. Tensors are stored in a fixed order (safetensors sorts them
//! by dtype and name), so equal content gives an equal file.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const META_KEY: &str = "fkp";

/// One tensor to write: name, element type, shape and little-endian bytes.
pub struct TensorData {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub fn write(path: &Path, tensors: &[TensorData], meta: &impl serde::Serialize) -> Result<(), String> {
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|view| (t.name.clone(), view))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = serde_json::to_string(meta).map_err(|e| e.to_string())?;
    let metadata = HashMap::from([(META_KEY.to_string(), meta)]);
    // Through write_atomic rather than serialize_to_file: same file mode as
    // every other output (serialize_to_file's is 0600), and never half-written.
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

/// The tensors of a file's bytes and its `fkp` metadata.
pub fn read<M: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(SafeTensors<'_>, M), String> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| format!("no `{META_KEY}` metadata: not written by this fkp"))?;
    let meta = serde_json::from_str(meta).map_err(|e| format!("`{META_KEY}` metadata: {e}"))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    Ok((tensors, meta))
}

/// A tensor's bytes as `f32`s.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Meta {
        side: usize,
        names: Vec<String>,
        step: i32,
    }

    #[test]
    fn equal_content_gives_equal_bytes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta {
            side: 2,
            names: vec!["a_x".into(), "a_y".into()],
            step: 7,
        };
        let tensors = [
            TensorData {
                name: "b".into(),
                dtype: Dtype::F32,
                shape: vec![2],
                bytes: f32_bytes(&[1.0, 2.0]),
            },
            TensorData {
                name: "a".into(),
                dtype: Dtype::U8,
                shape: vec![3],
                bytes: vec![1, 2, 3],
            },
        ];
        let files: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let path = dir.path().join(format!("{i}.safetensors"));
                write(&path, &tensors, &meta).unwrap();
                std::fs::read(path).unwrap()
            })
            .collect();
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        let (read_back, again): (_, Meta) = read(&files[0]).unwrap();
        assert_eq!(again, meta);
        assert_eq!(floats(read_back.tensor("b").unwrap().data()), [1.0, 2.0]);
    }
}
