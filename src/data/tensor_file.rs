//! The safetensors files fkp writes: tensors, plus a single metadata entry `fkp`
//! holding a JSON object. One entry, because safetensors keeps metadata in a
//! `HashMap` whose order, and so the file's bytes, would change from run to run
//! with two or more. Tensors are stored in a fixed order (safetensors sorts them
//! by dtype and name), so equal content gives an equal file.
//!
//! Files are streamed: [`Writer`] writes the header, then each tensor's bytes
//! straight from the caller's buffer (a chunk at a time from a device), into a
//! temporary sibling that is synced and renamed over the target, so writing
//! one never holds a second copy of its tensors in memory, and a kill never
//! leaves it half-written. The bytes are those of `safetensors::serialize` on
//! the same tensors. [`Reader`] reads a file's tensors back a chunk at a time.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};

pub const META_KEY: &str = "fkp";

/// How many values a chunk of a streamed tensor holds: 256 KiB of `f32`.
pub const CHUNK: usize = 1 << 16;

/// One tensor to write: name, element type, shape and little-endian bytes.
pub struct TensorData<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

pub fn write(path: &Path, tensors: &[TensorData], meta: &impl serde::Serialize) -> Result<(), String> {
    let meta = serde_json::to_string(meta).map_err(|e| e.to_string())?;
    let entries = tensors
        .iter()
        .map(|t| Entry::new(&t.name, t.dtype, &t.shape))
        .collect();
    let mut writer = Writer::create(path, entries, &[(META_KEY, &meta)]).map_err(|e| e.to_string())?;
    for tensor in tensors {
        writer
            .tensor(&tensor.name)
            .and_then(|mut sink| sink.write_all(&tensor.bytes))
            .map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())
}

/// The tensors of a file's bytes and its `fkp` metadata.
pub fn read<M: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(SafeTensors<'_>, M), String> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = fkp_meta(&metadata)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    Ok((tensors, meta))
}

fn fkp_meta<M: serde::de::DeserializeOwned>(metadata: &Metadata) -> Result<M, String> {
    let meta = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| format!("no `{META_KEY}` metadata: not written by this fkp"))?;
    serde_json::from_str(meta).map_err(|e| format!("`{META_KEY}` metadata: {e}"))
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

/// Writes `values` as little-endian bytes, through a small buffer on the stack.
pub fn write_f32s(out: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    let mut bytes = [0u8; 4096];
    for chunk in values.chunks(bytes.len() / 4) {
        for (to, value) in bytes.chunks_exact_mut(4).zip(chunk) {
            to.copy_from_slice(&value.to_le_bytes());
        }
        out.write_all(&bytes[..chunk.len() * 4])?;
    }
    Ok(())
}

/// The bytes of a tensor of `shape` and `dtype`, as safetensors counts them.
fn byte_len(shape: &[usize], dtype: Dtype) -> usize {
    (shape.iter().product::<usize>() * dtype.bitsize()).div_ceil(8)
}

/// A tensor of a file: its name, element type and shape.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl Entry {
    pub fn new(name: &str, dtype: Dtype, shape: &[usize]) -> Entry {
        Entry {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn bytes(&self) -> usize {
        byte_len(&self.shape, self.dtype)
    }
}

/// A tensor's bytes in a file: (start, end), from the end of the header.
type Span = (usize, usize);

/// Where a tensor's bytes go in the file being written, and how many came.
struct Slot {
    start: u64,
    len: u64,
    written: u64,
}

/// A safetensors file being written, a tensor at a time, in any order.
pub struct Writer {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    slots: HashMap<String, Slot>,
    /// The file offset `file` is at.
    position: u64,
}

/// The header safetensors writes for `entries` (sorted as it sorts them: by
/// descending dtype, then name) with `metadata`, padded with spaces to a
/// multiple of 8 bytes, and each tensor's [`Span`].
fn header(entries: &mut [Entry], metadata: &[(&str, &str)]) -> std::io::Result<(Vec<u8>, Vec<Span>)> {
    entries.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(&b.name)));
    if let Some(pair) = entries.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("two tensors named {}", pair[0].name),
        ));
    }
    let mut offsets = Vec::with_capacity(entries.len());
    let mut offset = 0;
    for entry in entries.iter() {
        offsets.push((offset, offset + entry.bytes()));
        offset += entry.bytes();
    }
    struct Header<'a> {
        metadata: &'a [(&'a str, &'a str)],
        entries: &'a [Entry],
        offsets: &'a [Span],
    }
    impl serde::Serialize for Header<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.entries.len() + 1))?;
            if !self.metadata.is_empty() {
                let metadata: BTreeMap<&str, &str> = self.metadata.iter().copied().collect();
                map.serialize_entry("__metadata__", &metadata)?;
            }
            for (entry, &data_offsets) in self.entries.iter().zip(self.offsets) {
                let info = TensorInfo {
                    dtype: entry.dtype,
                    shape: entry.shape.clone(),
                    data_offsets,
                };
                map.serialize_entry(&entry.name, &info)?;
            }
            map.end()
        }
    }
    let mut bytes = serde_json::to_vec(&Header {
        metadata,
        entries,
        offsets: &offsets,
    })?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok((bytes, offsets))
}

impl Writer {
    /// Starts `path`'s new content (in a temporary sibling): the header for
    /// `entries` and `metadata`. Each tensor's bytes follow through
    /// [`Writer::tensor`]; [`Writer::finish`] puts the file in place.
    pub fn create(
        path: &Path,
        mut entries: Vec<Entry>,
        metadata: &[(&str, &str)],
    ) -> std::io::Result<Writer> {
        let (header, offsets) = header(&mut entries, metadata)?;
        let data_start = 8 + header.len() as u64;
        let temp = crate::fsutil::temp_sibling(path);
        let mut writer = Writer {
            file: None,
            temp,
            path: path.to_path_buf(),
            slots: entries
                .into_iter()
                .zip(offsets)
                .map(|(entry, (start, end))| {
                    let slot = Slot {
                        start: data_start + start as u64,
                        len: (end - start) as u64,
                        written: 0,
                    };
                    (entry.name, slot)
                })
                .collect(),
            position: 0,
        };
        let mut file = BufWriter::with_capacity(1 << 16, File::create(&writer.temp)?);
        file.write_all(&(header.len() as u64).to_le_bytes())?;
        file.write_all(&header)?;
        writer.position = data_start;
        writer.file = Some(file);
        Ok(writer)
    }

    /// Where tensor `name`'s bytes go: write all of them, in order.
    pub fn tensor(&mut self, name: &str) -> std::io::Result<Sink<'_>> {
        let slot = self.slots.get(name).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no tensor {name} in the file's header"),
            )
        })?;
        if slot.written != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("tensor {name} written twice"),
            ));
        }
        let start = slot.start;
        let file = self.file.as_mut().expect("open until finished");
        if self.position != start {
            file.seek(SeekFrom::Start(start))?;
            self.position = start;
        }
        Ok(Sink {
            writer: self,
            name: name.to_string(),
        })
    }

    /// Flushes the file to the disk and renames it over the target, once every
    /// tensor's bytes are written.
    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some((name, slot)) = self.slots.iter().find(|(_, slot)| slot.written != slot.len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "tensor {name}: {} of its {} bytes written",
                    slot.written, slot.len
                ),
            ));
        }
        let file = self.file.take().expect("open until finished");
        let result = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .and_then(|()| std::fs::rename(&self.temp, &self.path));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        result
    }
}

/// A file left unfinished (an error, a cancelled save) leaves no temporary file.
impl Drop for Writer {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// One tensor's bytes in a [`Writer`]: refuses more than its header says.
pub struct Sink<'a> {
    writer: &'a mut Writer,
    name: String,
}

impl Write for Sink<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let slot = self
            .writer
            .slots
            .get_mut(&self.name)
            .expect("checked by Writer::tensor");
        if bytes.len() as u64 > slot.len - slot.written {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("tensor {}: more than its {} bytes", self.name, slot.len),
            ));
        }
        let file = self.writer.file.as_mut().expect("open until finished");
        let written = file.write(bytes)?;
        slot.written += written as u64;
        self.writer.position += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A safetensors file read a tensor (and a chunk) at a time.
pub struct Reader {
    file: BufReader<File>,
    path: PathBuf,
    metadata: Metadata,
    data_start: u64,
}

impl Reader {
    /// Reads `path`'s header, checking that every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<Reader, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut file = BufReader::new(file);
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| format!("not a safetensors file ({e})"))?;
        let header_len = u64::from_le_bytes(len);
        // safetensors' own limit on the header.
        if header_len > 100_000_000 || 8 + header_len > file_len {
            return Err("not a safetensors file (its header's length is wrong)".to_string());
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(|e| e.to_string())?;
        let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| format!("a bad header: {e}"))?;
        let data_start = 8 + header_len;
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            let bytes = byte_len(&info.shape, info.dtype);
            if start > end || end - start != bytes || data_start + end as u64 > file_len {
                return Err(format!("tensor {name} is not where its header says"));
            }
        }
        Ok(Reader {
            file,
            path: path.to_path_buf(),
            metadata,
            data_start,
        })
    }

    /// The `fkp` metadata entry, parsed.
    pub fn meta<M: serde::de::DeserializeOwned>(&self) -> Result<M, String> {
        fkp_meta(&self.metadata)
    }

    /// The file's tensors, by name.
    pub fn tensors(&self) -> HashMap<String, &TensorInfo> {
        self.metadata.tensors()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the F32 tensor `name` into `chunk`-sized pieces, handing each to
    /// `each` with the index of its first value.
    pub fn read_f32s(
        &mut self,
        name: &str,
        chunk: &mut [f32],
        mut each: impl FnMut(usize, &[f32]) -> Result<(), String>,
    ) -> Result<(), String> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| format!("no tensor {name}"))?;
        if info.dtype != Dtype::F32 {
            return Err(format!("tensor {name} is {:?}, not F32", info.dtype));
        }
        let (start, end) = info.data_offsets;
        self.file
            .seek(SeekFrom::Start(self.data_start + start as u64))
            .map_err(|e| e.to_string())?;
        let values = (end - start) / 4;
        let mut bytes = [0u8; 4096];
        let mut done = 0;
        while done < values {
            let n = chunk.len().min(values - done);
            for piece in chunk[..n].chunks_mut(bytes.len() / 4) {
                let raw = &mut bytes[..piece.len() * 4];
                self.file.read_exact(raw).map_err(|e| e.to_string())?;
                for (value, b) in piece.iter_mut().zip(raw.chunks_exact(4)) {
                    *value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            each(done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }
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

    fn tensors() -> Vec<TensorData<'static>> {
        vec![
            TensorData {
                name: "b".into(),
                dtype: Dtype::F32,
                shape: vec![2],
                bytes: f32_bytes(&[1.0, 2.0]).into(),
            },
            TensorData {
                name: "a".into(),
                dtype: Dtype::U8,
                shape: vec![3],
                bytes: vec![1, 2, 3].into(),
            },
            TensorData {
                name: "a.scalar".into(),
                dtype: Dtype::F64,
                shape: vec![],
                bytes: 0.1f64.to_le_bytes().to_vec().into(),
            },
            TensorData {
                name: "empty".into(),
                dtype: Dtype::F32,
                shape: vec![0, 4],
                bytes: Vec::new().into(),
            },
            TensorData {
                name: "c".into(),
                dtype: Dtype::U32,
                shape: vec![2, 1],
                bytes: [7u32, 9]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
            },
        ]
    }

    fn meta() -> Meta {
        Meta {
            side: 2,
            names: vec!["a_x".into(), "a_y".into()],
            step: 7,
        }
    }

    #[test]
    fn equal_content_gives_equal_bytes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = tensors();
        let files: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let path = dir.path().join(format!("{i}.safetensors"));
                write(&path, &tensors, &meta()).unwrap();
                std::fs::read(path).unwrap()
            })
            .collect();
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        let (read_back, again): (_, Meta) = read(&files[0]).unwrap();
        assert_eq!(again, meta());
        assert_eq!(floats(read_back.tensor("b").unwrap().data()), [1.0, 2.0]);
    }

    /// The streamed file is byte for byte what safetensors' own `serialize`
    /// makes of the same tensors and metadata, with and without metadata, and
    /// whatever order the tensors are written in.
    #[test]
    fn the_streamed_file_is_safetensors_serialize_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = tensors();
        let meta = serde_json::to_string(&meta()).unwrap();
        let views = || {
            tensors
                .iter()
                .map(|t| {
                    let view =
                        safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap();
                    (t.name.clone(), view)
                })
                .collect::<Vec<_>>()
        };
        for with_metadata in [true, false] {
            let metadata: &[(&str, &str)] = if with_metadata { &[(META_KEY, &meta)] } else { &[] };
            let expected = safetensors::serialize(
                views(),
                with_metadata.then(|| HashMap::from([(META_KEY.to_string(), meta.clone())])),
            )
            .unwrap();
            for reversed in [false, true] {
                let path = dir.path().join("streamed.safetensors");
                let entries = tensors
                    .iter()
                    .map(|t| Entry::new(&t.name, t.dtype, &t.shape))
                    .collect();
                let mut writer = Writer::create(&path, entries, metadata).unwrap();
                let mut order: Vec<&TensorData> = tensors.iter().collect();
                if reversed {
                    order.reverse();
                }
                for t in order {
                    // In small pieces, as a device's chunks come.
                    let mut sink = writer.tensor(&t.name).unwrap();
                    for piece in t.bytes.chunks(3) {
                        sink.write_all(piece).unwrap();
                    }
                }
                writer.finish().unwrap();
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    expected,
                    "metadata {with_metadata}, reversed {reversed}"
                );
            }
        }
        let path = dir.path().join("w.safetensors");
        write(&path, &tensors, &self::meta()).unwrap();
        let expected = safetensors::serialize(
            views(),
            Some(HashMap::from([(META_KEY.to_string(), meta.clone())])),
        );
        assert_eq!(std::fs::read(&path).unwrap(), expected.unwrap());
    }

    #[test]
    fn an_unfinished_file_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let entries = vec![
            Entry::new("a", Dtype::F32, &[2]),
            Entry::new("b", Dtype::F32, &[1]),
        ];
        let mut writer = Writer::create(&path, entries.clone(), &[]).unwrap();
        write_f32s(&mut writer.tensor("a").unwrap(), &[1.0, 2.0]).unwrap();
        assert!(
            write_f32s(&mut writer.tensor("b").unwrap(), &[1.0, 2.0]).is_err(),
            "too many bytes"
        );
        assert!(writer.tensor("c").is_err(), "not in the header");
        assert!(writer.finish().is_err(), "b is incomplete");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let writer = Writer::create(&path, entries, &[]).unwrap();
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let twice = vec![
            Entry::new("a", Dtype::F32, &[2]),
            Entry::new("a", Dtype::U8, &[1]),
        ];
        assert!(Writer::create(&path, twice, &[]).is_err());
    }

    #[test]
    fn the_reader_reads_f32_tensors_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.safetensors");
        let values: Vec<f32> = (0..10_000).map(|i| i as f32 * 0.5).collect();
        let tensors = [
            TensorData {
                name: "v".into(),
                dtype: Dtype::F32,
                shape: vec![values.len()],
                bytes: f32_bytes(&values).into(),
            },
            TensorData {
                name: "u".into(),
                dtype: Dtype::U8,
                shape: vec![1],
                bytes: vec![1].into(),
            },
        ];
        write(&path, &tensors, &meta()).unwrap();
        let mut reader = Reader::open(&path).unwrap();
        assert_eq!(reader.meta::<Meta>().unwrap(), meta());
        assert_eq!(reader.tensors().len(), 2);
        let mut back = vec![0.0; values.len()];
        let mut chunk = vec![0.0; 777];
        reader
            .read_f32s("v", &mut chunk, |start, piece| {
                back[start..start + piece.len()].copy_from_slice(piece);
                Ok(())
            })
            .unwrap();
        assert_eq!(back, values);
        assert!(reader.read_f32s("u", &mut chunk, |_, _| Ok(())).is_err());
        assert!(reader.read_f32s("w", &mut chunk, |_, _| Ok(())).is_err());

        let mut truncated = std::fs::read(&path).unwrap();
        truncated.pop();
        std::fs::write(&path, &truncated).unwrap();
        assert!(Reader::open(&path).is_err());
        std::fs::write(&path, b"short").unwrap();
        assert!(Reader::open(&path).is_err());
    }
}
