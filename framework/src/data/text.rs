//! Line-oriented reading of plain or gzip-compressed text files, with errors that name the
//! file and line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::error::DataError;

/// Open `path` for buffered line reading, transparently gunzipping `*.gz` files (or any
/// file starting with the gzip magic bytes).
///
/// # Errors
/// [`DataError::Io`] if the file cannot be opened.
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| DataError::io(path, e))?;
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(BufReader::new(f)),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
    }
}

/// Iterate over the lines of `path` as `(line_number, line)` (1-based, line ending removed).
///
/// # Errors
/// Each item is a [`DataError::Io`] naming the line when reading or UTF-8 decoding fails
/// (e.g. a corrupted gzip stream).
pub(crate) fn lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(usize, String), DataError>>, DataError> {
    let reader = open_text(path)?;
    let owned = path.to_path_buf();
    Ok(reader.lines().enumerate().map(move |(i, l)| {
        l.map(|mut s| {
            if s.ends_with('\r') {
                s.pop();
            }
            (i + 1, s)
        })
        .map_err(|e| DataError::Io {
            path: owned.clone(),
            reason: format!("line {}: {}", i + 1, super::error::one_line(e)),
            fix: "the file is truncated, corrupted or not UTF-8 text; re-export it".into(),
        })
    }))
}

/// Find the first of `names` (tried in order) present in `dir`.
pub(crate) fn find_in(dir: &Path, names: &[&str]) -> Option<std::path::PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Make names unique the way anndata's `var_names_make_unique` does: the first occurrence
/// is kept, later ones get `-1`, `-2`, ... appended.
pub fn make_unique(names: &mut [String]) {
    use std::collections::{HashMap, HashSet};
    let mut seen: HashSet<String> = names.iter().cloned().collect();
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut first: HashSet<String> = HashSet::new();
    for name in names.iter_mut() {
        if first.insert(name.clone()) {
            continue;
        }
        let base = name.clone();
        let k = count.entry(base.clone()).or_insert(0);
        loop {
            *k += 1;
            let candidate = format!("{base}-{k}");
            if seen.insert(candidate.clone()) {
                *name = candidate;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names() {
        let mut v: Vec<String> = ["A", "B", "A", "A", "A-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        make_unique(&mut v);
        assert_eq!(v, vec!["A", "B", "A-2", "A-3", "A-1"]);
    }
}
