//! Checkpoints: named tensors in safetensors, written atomically; loading reports missing,
//! unexpected and mis-shaped tensors by name.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::nn::Parameters;
use crate::{LatentError, Result};

/// Writes `bytes` to `path` atomically (a synced temporary sibling renamed over it), creating
/// the folder first.
///
/// # Errors
/// [`LatentError::Io`] naming the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| LatentError::io(dir, e))?;
    crate::atomic_file::write_atomic_bytes(path, bytes).map_err(|e| LatentError::io(path, e))
}

/// Named host tensors: name -> (shape, row-major values).
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Collects every parameter of the given components, each under its prefix.
pub fn collect(components: &[(&str, &dyn Parameters)]) -> TensorMap {
    let mut map = TensorMap::new();
    for (prefix, model) in components {
        model.visit(prefix, &mut |name, p| {
            map.insert(name.to_string(), (p.shape(), p.to_vec()));
        });
    }
    map
}

/// Serializes tensors (f32, little endian) with string metadata to safetensors bytes.
///
/// # Errors
/// [`LatentError::Checkpoint`] if serialization fails.
pub fn to_bytes(
    tensors: &TensorMap,
    metadata: BTreeMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let mut views = Vec::with_capacity(raw.len());
    for (n, s, b) in &raw {
        let view =
            TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| LatentError::Checkpoint {
                path: path.into(),
                message: format!("tensor {n}: {e:?}"),
            })?;
        views.push((n.clone(), view));
    }
    let bytes = if views.is_empty() {
        // `safetensors` 0.4 writes an invalid header (`{},"__metadata__":{…}}`) for no tensors
        // with metadata; a model without parameters (the identity autoencoder) has none.
        without_tensors(metadata)
    } else {
        safetensors::serialize(views, &Some(metadata.into_iter().collect())).map_err(|e| {
            LatentError::Checkpoint {
                path: path.into(),
                message: format!("cannot serialize: {e:?}"),
            }
        })?
    };
    sorted_header(&bytes).ok_or_else(|| LatentError::Checkpoint {
        path: path.into(),
        message: "the serialized header is not the JSON object safetensors writes".into(),
    })
}

/// A safetensors file holding no tensors: the header alone, with `metadata` when there is any.
fn without_tensors(metadata: BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let entries = metadata
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(entries));
    }
    let header = serde_json::Value::Object(header).to_string().into_bytes();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out
}

/// `bytes` (a serialized safetensors file) with its JSON header's keys in sorted order, so that
/// the same tensors and metadata always give the same file: `safetensors` 0.4 takes the
/// metadata as a `HashMap` and writes it in that map's (per-process random) order. Tensor data
/// offsets count from the end of the header, so only the header and its length change. `None`
/// when `bytes` is not a safetensors file.
fn sorted_header(bytes: &[u8]) -> Option<Vec<u8>> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(len)?)?;
    // `serde_json::Map` is ordered by key (the `preserve_order` feature is off), so parsing and
    // writing the header again sorts every object's keys, the metadata's included.
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let mut sorted = serde_json::to_vec(&value).ok()?;
    // The format pads the header with spaces to a multiple of 8 bytes (aligned tensor data).
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + sorted.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[8 + len..]);
    Some(out)
}

/// Saves tensors atomically to `path`.
///
/// # Errors
/// [`LatentError::Io`] / [`LatentError::Checkpoint`].
pub fn save(path: &Path, tensors: &TensorMap, metadata: BTreeMap<String, String>) -> Result<()> {
    let bytes = to_bytes(tensors, metadata, path)?;
    write_atomic(path, &bytes)
}

/// Reads a safetensors file into a [`TensorMap`].
///
/// # Errors
/// [`LatentError::Checkpoint`] for a missing, truncated or corrupted file (with the fix).
pub fn load(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| LatentError::Checkpoint {
        path: path.into(),
        message: format!(
            "cannot read weights ({e}); is this a run directory written by `latentlab train`?"
        ),
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| LatentError::Checkpoint {
        path: path.into(),
        message: format!(
            "corrupted or truncated safetensors file ({e:?}); retrain or restore the run directory"
        ),
    })?;
    let mut map = TensorMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(LatentError::Checkpoint {
                path: path.into(),
                message: format!("tensor {name} has dtype {:?}, expected F32", view.dtype()),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        map.insert(name, (view.shape().to_vec(), values));
    }
    Ok(map)
}

/// Copies tensors from `map` into `model` (names under `prefix`). Every parameter must be present
/// with the same shape; extra tensors under the prefix are reported too.
///
/// # Errors
/// [`LatentError::Checkpoint`] listing missing, unexpected and mis-shaped tensors by name.
pub fn restore(
    map: &TensorMap,
    model: &mut dyn Parameters,
    prefix: &str,
    path: &Path,
) -> Result<()> {
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut failure = None;
    model.visit_mut(prefix, &mut |name, mut p| {
        seen.insert(name.to_string());
        match map.get(name) {
            None => missing.push(name.to_string()),
            Some((shape, _)) if *shape != p.shape() => {
                misshaped.push(format!("{name} {:?} (model wants {:?})", shape, p.shape()))
            }
            Some((_, values)) => {
                if let Err(e) = p.set(values) {
                    failure = Some(e);
                }
            }
        }
    });
    let dotted = format!("{prefix}.");
    let unexpected: Vec<_> = map
        .keys()
        .filter(|k| k.starts_with(&dotted) && !seen.contains(*k))
        .cloned()
        .collect();
    if !missing.is_empty() || !misshaped.is_empty() || !unexpected.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing tensors: {}", missing.join(", ")));
        }
        if !misshaped.is_empty() {
            parts.push(format!("mis-shaped tensors: {}", misshaped.join(", ")));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected tensors: {}", unexpected.join(", ")));
        }
        return Err(LatentError::Checkpoint {
            path: path.into(),
            message: format!(
                "{}; the config does not match these weights (was it edited after training?)",
                parts.join("; ")
            ),
        });
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> TensorMap {
        let mut map = TensorMap::new();
        map.insert(
            "b.weight".into(),
            (vec![2, 3], (0..6).map(|v| v as f32).collect()),
        );
        map.insert("a.bias".into(), (vec![3], vec![0.5, -1.0, 2.0]));
        map
    }

    fn metadata() -> BTreeMap<String, String> {
        (0..40)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect()
    }

    /// The same tensors and metadata give the same bytes every time (the metadata map that
    /// `safetensors` takes iterates in a random order per map), the header's keys come out
    /// sorted, and the file loads back to the same tensors and metadata.
    #[test]
    fn serialized_bytes_are_canonical_and_load_back() {
        let path = Path::new("weights.safetensors");
        let first = to_bytes(&tensors(), metadata(), path).unwrap();
        for _ in 0..8 {
            assert_eq!(to_bytes(&tensors(), metadata(), path).unwrap(), first);
        }
        let len = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        assert_eq!(len % 8, 0, "header padded to 8 bytes");
        let header = std::str::from_utf8(&first[8..8 + len]).unwrap();
        let (key1, key10, key2) = (
            header.find("\"key1\"").unwrap(),
            header.find("\"key10\"").unwrap(),
            header.find("\"key2\"").unwrap(),
        );
        assert!(
            key1 < key10 && key10 < key2,
            "metadata keys sorted: {header}"
        );
        assert!(header.find("a.bias").unwrap() < header.find("b.weight").unwrap());

        let st = SafeTensors::deserialize(&first).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&first).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta.len(), 40);
        assert_eq!(meta["key7"], "value 7");
        assert_eq!(st.tensors().len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.safetensors");
        save(&file, &tensors(), metadata()).unwrap();
        assert_eq!(load(&file).unwrap(), tensors());
    }

    /// A model without parameters (the identity autoencoder) saves a valid file, with and
    /// without metadata, that loads back empty.
    #[test]
    fn no_tensors_save_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        for metadata in [BTreeMap::new(), metadata()] {
            let bytes = to_bytes(&TensorMap::new(), metadata.clone(), Path::new("e")).unwrap();
            assert!(SafeTensors::deserialize(&bytes)
                .unwrap()
                .tensors()
                .is_empty());
            let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!(
                meta.metadata().clone().unwrap_or_default().len(),
                metadata.len()
            );
            let file = dir.path().join("empty.safetensors");
            save(&file, &TensorMap::new(), metadata).unwrap();
            assert!(load(&file).unwrap().is_empty());
        }
    }

    /// Bytes that are not a safetensors file are refused, not mangled.
    #[test]
    fn sorted_header_refuses_non_safetensors_bytes() {
        assert!(sorted_header(b"short").is_none());
        assert!(sorted_header(&[255, 255, 255, 255, 255, 255, 255, 255, b'{']).is_none());
        let mut not_json = 4u64.to_le_bytes().to_vec();
        not_json.extend_from_slice(b"{{{{");
        assert!(sorted_header(&not_json).is_none());
    }
}
