//! Files written whole or not at all: every output (checkpoints, run files, reports, `.h5ad`)
//! goes to a temporary sibling, is synced, and is renamed over its path, so a crash or an error
//! never leaves a partial file where a finished one is expected.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::{LatentError, Result};

/// Creates the temporary sibling of `path`, lets `fill` write it, syncs it to disk and renames
/// it over `path`; on any error the temporary file is removed and `path` is untouched.
/// `io_error` turns a failed file operation into the caller's error type.
///
/// # Errors
/// What `fill` returns, or a failed create, sync or rename through `io_error`.
pub(crate) fn write_atomic_with<E>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::result::Result<(), E>,
    io_error: impl Fn(io::Error) -> E,
) -> std::result::Result<(), E> {
    let tmp = temp_path(path);
    let result = File::create(&tmp)
        .map_err(&io_error)
        .and_then(|mut f| {
            fill(&mut f)?;
            f.sync_all().map_err(&io_error)
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(&io_error));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic_with`] writing `bytes`.
///
/// # Errors
/// A failed create, write, sync or rename.
pub(crate) fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes), |e| e)
}

/// Writes the folder `dir` whole: `fill` writes a hidden temporary sibling folder, which then
/// takes `dir`'s place (an existing `dir` is moved aside first and removed only once the new
/// one is in place). On any error the temporary folder is removed and `dir` is untouched.
///
/// # Errors
/// What `fill` returns, or [`LatentError::Io`] naming the folder that could not be created,
/// moved or removed.
pub(crate) fn replace_dir_with(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| LatentError::io(parent, e))?;
    let tmp = temp_path(dir);
    let result = fill(&tmp).and_then(|()| {
        if dir.exists() {
            let mut old_name = std::ffi::OsString::from(".");
            old_name.push(dir.file_name().unwrap_or_default());
            old_name.push(format!(".old-{}", std::process::id()));
            let old = dir.with_file_name(old_name);
            std::fs::rename(dir, &old).map_err(|e| LatentError::io(dir, e))?;
            std::fs::rename(&tmp, dir).map_err(|e| LatentError::io(dir, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| LatentError::io(&old, e))
        } else {
            std::fs::rename(&tmp, dir).map_err(|e| LatentError::io(dir, e))
        }
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The hidden temporary sibling `.<name>.tmp-<pid>` of `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_whole_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        write_atomic_bytes(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(entries(dir.path()), vec!["out.bin".to_string()]);
    }

    #[test]
    fn a_failing_fill_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        let result = write_atomic_with(
            &path,
            |f| {
                f.write_all(b"half").map_err(|e| e.to_string())?;
                Err("fill failed".to_string())
            },
            |e| e.to_string(),
        );
        assert_eq!(result, Err("fill failed".to_string()));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), vec!["out.bin".to_string()]);
    }

    #[test]
    fn a_folder_is_replaced_whole_or_left_as_it_was() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let fill = |text: &'static str| {
            move |tmp: &Path| -> Result<()> {
                std::fs::create_dir_all(tmp).map_err(|e| LatentError::io(tmp, e))?;
                write_atomic_bytes(&tmp.join("a.txt"), text.as_bytes())
                    .map_err(|e| LatentError::io(tmp, e))
            }
        };
        replace_dir_with(&dir, fill("first")).unwrap();
        replace_dir_with(&dir, fill("second")).unwrap();
        assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"second");
        let failed = replace_dir_with(&dir, |tmp| {
            fill("third")(tmp)?;
            Err(LatentError::Data("fill failed".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"second");
        assert_eq!(entries(root.path()), vec!["run".to_string()]);
    }

    #[test]
    fn a_missing_folder_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("out.bin");
        assert!(write_atomic_bytes(&path, b"x").is_err());
        assert!(entries(dir.path()).is_empty());
    }
}
