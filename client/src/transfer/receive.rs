//! Writing a received file list to disk, safely.
//!
//! Each transfer gets a fresh folder in the download directory
//! (`clipmesh-<ms>`, numbered on collision, created with `create_dir` so it
//! is new). Every peer-supplied name goes through [`SafePath`]; directories
//! are created one component at a time inside that folder and an existing
//! entry that is not a real directory (a file, a symlink) is refused, so
//! nothing outside the folder is ever touched. Files are created with
//! `create_new` and never overwrite anything. A blob is written to a
//! temporary `.part` file and hard-linked to its final name (which fails
//! rather than replacing an existing file) only after
//! [`clipmesh_proto::blob::BlobOpener::finish`] accepted it.
//!
//! On any failure the transfer's folder is removed again.

use super::{download_blob, BlobClient, Progress, TransferError};
use clipmesh_proto::content::{FileBody, FileEntry};
use clipmesh_proto::filename::{numbered_name, SafePath, MAX_NUMBERED};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// A fresh folder for one received transfer.
#[derive(Debug)]
pub struct TransferFolder {
    root: PathBuf,
}

impl TransferFolder {
    /// Creates `download_dir` if needed and a new folder inside it named
    /// after `at_ms`.
    pub fn create(download_dir: &Path, at_ms: u64) -> Result<Self, TransferError> {
        std::fs::create_dir_all(download_dir)
            .map_err(TransferError::io("cannot create the download folder"))?;
        let base = format!("clipmesh-{at_ms}");
        for n in 0..=MAX_NUMBERED {
            let p = download_dir.join(numbered_name(&base, n));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(Self { root: p }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TransferError::io("cannot create the download folder")(e)),
            }
        }
        Err(TransferError::io("cannot create the download folder")(
            std::io::Error::new(ErrorKind::AlreadyExists, "no free folder name"),
        ))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Removes the folder and everything in it (after a failure).
    /// `remove_dir_all` does not follow symlinks.
    pub fn discard(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(error = %e, "cannot remove an incomplete download");
        }
    }

    /// Creates the directories of `safe` below the folder, refusing to
    /// pass through anything that is not a real directory.
    fn make_dirs(&self, safe: &SafePath) -> Result<PathBuf, TransferError> {
        let mut dir = self.root.clone();
        for c in safe.dirs() {
            dir.push(c);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let meta = std::fs::symlink_metadata(&dir)
                        .map_err(TransferError::io("cannot create a received folder"))?;
                    if !meta.is_dir() {
                        return Err(TransferError::io("cannot create a received folder")(
                            std::io::Error::new(
                                ErrorKind::AlreadyExists,
                                "a received folder name is taken by a file",
                            ),
                        ));
                    }
                }
                Err(e) => return Err(TransferError::io("cannot create a received folder")(e)),
            }
        }
        Ok(dir)
    }

    /// Creates a new file for `safe`, numbering the name on collision.
    pub fn create_file(&self, safe: &SafePath) -> Result<(File, PathBuf), TransferError> {
        let dir = self.make_dirs(safe)?;
        for n in 0..=MAX_NUMBERED {
            let p = dir.join(numbered_name(safe.file_name(), n));
            match OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(f) => return Ok((f, p)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TransferError::io("cannot create a received file")(e)),
            }
        }
        Err(no_free_name())
    }

    /// Creates a temporary file next to where `safe` goes.
    fn create_temp(&self, safe: &SafePath) -> Result<(File, PathBuf), TransferError> {
        let dir = self.make_dirs(safe)?;
        loop {
            let p = dir.join(format!(".clipmesh-{:016x}.part", rand::random::<u64>()));
            match OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(f) => return Ok((f, p)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TransferError::io("cannot create a received file")(e)),
            }
        }
    }

    /// Gives the finished temporary file its final name without ever
    /// replacing an existing file.
    fn place(&self, temp: &Path, safe: &SafePath) -> Result<PathBuf, TransferError> {
        let dir = temp.parent().unwrap_or(&self.root);
        for n in 0..=MAX_NUMBERED {
            let p = dir.join(numbered_name(safe.file_name(), n));
            match std::fs::hard_link(temp, &p) {
                Ok(()) => {
                    let _ = std::fs::remove_file(temp);
                    return Ok(p);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TransferError::io("cannot name a received file")(e)),
            }
        }
        Err(no_free_name())
    }
}

fn no_free_name() -> TransferError {
    TransferError::io("cannot name a received file")(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "no free file name",
    ))
}

/// Writes `entries` into `folder`: inline bodies directly, blob bodies
/// downloaded and verified. Returns the written files. On error the caller
/// should [`TransferFolder::discard`] the folder.
pub fn receive_files(
    client: &BlobClient,
    entries: &[FileEntry],
    folder: &TransferFolder,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Vec<PathBuf>, TransferError> {
    let mut written = Vec::with_capacity(entries.len());
    for entry in entries {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let safe = SafePath::new(&entry.name);
        match &entry.body {
            FileBody::Inline(data) => {
                let (mut f, p) = folder.create_file(&safe)?;
                if let Err(e) = f.write_all(data) {
                    drop(f);
                    let _ = std::fs::remove_file(&p);
                    return Err(TransferError::io("cannot write a received file")(e));
                }
                progress.add(data.len() as u64);
                written.push(p);
            }
            FileBody::Blob { id, sha256, key } => {
                let (mut f, temp) = folder.create_temp(&safe)?;
                let r = download_blob(
                    client, id, key, entry.size, *sha256, &mut f, progress, cancel,
                )
                .and_then(|()| {
                    f.flush()
                        .map_err(TransferError::io("cannot write a received file"))
                });
                drop(f);
                if let Err(e) = r {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
                written.push(folder.place(&temp, &safe)?);
            }
        }
    }
    Ok(written)
}

/// The top-level entries of a transfer (files and folders directly in
/// `folder`), in first-seen order: what goes on the clipboard.
pub fn top_level_paths(folder: &Path, written: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in written {
        let Ok(rel) = p.strip_prefix(folder) else {
            continue;
        };
        let Some(Component::Normal(first)) = rel.components().next() else {
            continue;
        };
        let top = folder.join(first);
        if !out.contains(&top) {
            out.push(top);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> BlobClient {
        BlobClient::new("http://127.0.0.1:9", "t", &crate::tls::TrustRoots::webpki())
    }

    fn inline(name: &str, data: &[u8]) -> FileEntry {
        FileEntry {
            name: name.into(),
            size: data.len() as u64,
            body: FileBody::Inline(data.to_vec()),
        }
    }

    #[test]
    fn hostile_names_stay_inside_and_nothing_is_overwritten() {
        let t = tempfile::tempdir().unwrap();
        let dl = t.path().join("dl");
        let folder = TransferFolder::create(&dl, 7).unwrap();
        let names = [
            "../../etc/passwd",
            "/abs",
            "C:\\x",
            "CON",
            "a/../../b",
            "ctl\u{1}\n.txt",
            "dup.txt",
            "dup.txt",
            "..",
        ];
        let entries: Vec<_> = names.iter().map(|n| inline(n, n.as_bytes())).collect();
        let cancel = CancellationToken::new();
        let written = receive_files(
            &client(),
            &entries,
            &folder,
            &Progress::detached(0),
            &cancel,
        )
        .unwrap();
        assert_eq!(written.len(), names.len());
        let root = folder.path().canonicalize().unwrap();
        for (p, n) in written.iter().zip(names) {
            let c = p.canonicalize().unwrap();
            assert!(c.starts_with(&root), "{n:?} escaped to {c:?}");
            assert_eq!(std::fs::read(p).unwrap(), n.as_bytes());
        }
        let rel: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(folder.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            rel,
            [
                "etc/passwd",
                "abs",
                "C_/x",
                "_CON",
                "a/b",
                "ctl__.txt",
                "dup.txt",
                "dup (1).txt",
                "unnamed"
            ]
        );
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        let tops = top_level_paths(folder.path(), &written);
        assert_eq!(tops.len(), 9);
        assert_eq!(tops[0], folder.path().join("etc"));
    }

    #[test]
    fn folders_are_fresh_and_a_file_blocks_a_folder_name() {
        let t = tempfile::tempdir().unwrap();
        let a = TransferFolder::create(t.path(), 1).unwrap();
        let b = TransferFolder::create(t.path(), 1).unwrap();
        assert_ne!(a.path(), b.path());
        let entries = [inline("x", b"1"), inline("x/y", b"2")];
        let cancel = CancellationToken::new();
        assert!(receive_files(&client(), &entries, &a, &Progress::detached(0), &cancel).is_err());
        a.discard();
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
