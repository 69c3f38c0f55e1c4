//! Turns a copied file list into the files to send: directories are walked
//! recursively, names are made relative to the copied root (`dir/sub/file`),
//! and the walk stops as soon as a limit is passed, so a copied home
//! directory costs a refusal, not a full scan.
//!
//! Symbolic links inside a copied directory are skipped (never followed):
//! they could point anywhere, including back up the tree. A symlink copied
//! directly is followed once, as the user chose it.

use super::TransferError;
use std::path::{Path, PathBuf};

/// Limits of one outgoing item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkLimits {
    /// Most files.
    pub max_files: usize,
    /// Most bytes, all files together.
    pub max_bytes: u64,
}

/// One file to send.
#[derive(Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Where it is on this machine.
    pub path: PathBuf,
    /// Its name relative to the copied root, `/`-separated.
    pub name: String,
    /// Its size when walked.
    pub size: u64,
}

impl std::fmt::Debug for PlannedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlannedFile({} bytes)", self.size)
    }
}

/// Running totals checked against [`WalkLimits`] (the sans-IO part).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    files: usize,
    bytes: u64,
}

impl Budget {
    /// Counts one more file of `size` bytes, or says which limit it breaks.
    pub fn admit(&mut self, size: u64, limits: &WalkLimits) -> Result<(), TransferError> {
        let files = self.files + 1;
        let bytes = self.bytes.saturating_add(size);
        if files > limits.max_files {
            return Err(TransferError::TooManyFiles {
                max: limits.max_files,
            });
        }
        if bytes > limits.max_bytes {
            return Err(TransferError::TooLarge {
                size: bytes,
                max: limits.max_bytes,
            });
        }
        self.files = files;
        self.bytes = bytes;
        Ok(())
    }

    /// Total bytes admitted.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Walks `paths` (files and directories) within `limits`.
pub fn plan_files(
    paths: &[PathBuf],
    limits: &WalkLimits,
) -> Result<Vec<PlannedFile>, TransferError> {
    let mut budget = Budget::default();
    let mut out = Vec::new();
    let mut skipped_links = 0usize;
    for root in paths {
        let meta =
            std::fs::metadata(root).map_err(TransferError::io("cannot read a copied file"))?;
        let base = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unnamed".to_owned());
        if meta.is_file() {
            budget.admit(meta.len(), limits)?;
            out.push(PlannedFile {
                path: root.clone(),
                name: base,
                size: meta.len(),
            });
        } else if meta.is_dir() {
            walk_dir(
                root,
                &base,
                limits,
                &mut budget,
                &mut out,
                &mut skipped_links,
            )?;
        }
    }
    if skipped_links > 0 {
        tracing::debug!(
            skipped_links,
            "symbolic links inside copied folders are not sent"
        );
    }
    Ok(out)
}

fn walk_dir(
    root: &Path,
    base: &str,
    limits: &WalkLimits,
    budget: &mut Budget,
    out: &mut Vec<PlannedFile>,
    skipped_links: &mut usize,
) -> Result<(), TransferError> {
    // Depth-first with an explicit stack: no recursion depth limit to hit.
    let mut stack = vec![(root.to_path_buf(), base.to_owned())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(TransferError::io("cannot read a copied folder"))?
            .collect::<Result<_, _>>()
            .map_err(TransferError::io("cannot read a copied folder"))?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let ty = e
                .file_type()
                .map_err(TransferError::io("cannot read a copied folder"))?;
            let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
            if ty.is_symlink() {
                *skipped_links += 1;
            } else if ty.is_dir() {
                subdirs.push((e.path(), name));
            } else if ty.is_file() {
                let size = e
                    .metadata()
                    .map_err(TransferError::io("cannot read a copied file"))?
                    .len();
                budget.admit(size, limits)?;
                out.push(PlannedFile {
                    path: e.path(),
                    name,
                    size,
                });
            }
        }
        // Reverse so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: WalkLimits = WalkLimits {
        max_files: 100,
        max_bytes: 1 << 20,
    };

    #[test]
    fn budget_refuses_the_first_file_over_a_limit() {
        let lim = WalkLimits {
            max_files: 2,
            max_bytes: 10,
        };
        let mut b = Budget::default();
        b.admit(4, &lim).unwrap();
        assert!(matches!(
            b.admit(7, &lim),
            Err(TransferError::TooLarge { size: 11, max: 10 })
        ));
        b.admit(6, &lim).unwrap();
        assert_eq!(b.bytes(), 10);
        assert!(matches!(
            b.admit(0, &lim),
            Err(TransferError::TooManyFiles { max: 2 })
        ));
    }

    #[test]
    fn directories_become_relative_names() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("top");
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("a.txt"), b"aa").unwrap();
        std::fs::write(d.join("sub/b.bin"), b"bbb").unwrap();
        std::fs::write(d.join("sub/deeper/c"), b"").unwrap();
        std::fs::write(t.path().join("single"), b"1").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/", d.join("link")).unwrap();
        let plan = plan_files(&[d.clone(), t.path().join("single")], &WIDE).unwrap();
        let names: Vec<_> = plan.iter().map(|p| (p.name.as_str(), p.size)).collect();
        assert_eq!(
            names,
            [
                ("top/a.txt", 2),
                ("top/sub/b.bin", 3),
                ("top/sub/deeper/c", 0),
                ("single", 1)
            ]
        );
    }

    #[test]
    fn walk_stops_at_limits() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(t.path().join(format!("f{i}")), [0u8; 10]).unwrap();
        }
        let few = WalkLimits {
            max_files: 3,
            max_bytes: 1000,
        };
        assert!(matches!(
            plan_files(&[t.path().to_path_buf()], &few),
            Err(TransferError::TooManyFiles { max: 3 })
        ));
        let small = WalkLimits {
            max_files: 100,
            max_bytes: 25,
        };
        assert!(matches!(
            plan_files(&[t.path().to_path_buf()], &small),
            Err(TransferError::TooLarge { max: 25, .. })
        ));
        assert!(plan_files(&[t.path().join("missing")], &WIDE).is_err());
    }
}
