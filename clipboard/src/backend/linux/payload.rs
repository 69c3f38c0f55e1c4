//! What the Linux backends serve, shared by the X11 selection owner and the
//! Wayland data sources: [`Payload`] (the bytes of one offered target, ready
//! or converted on first request) and [`file_list_to_apply`] (a file list
//! about to be put on the clipboard, recorded for echo suppression first).

use super::uri_list::{encode_uri_list, parse_uri_list};
use crate::dedupe::{local_files_hash, OwnWrites};
use crate::ClipboardError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What one target serves.
#[derive(Clone)]
pub(crate) enum Payload {
    /// These bytes.
    Bytes(Arc<[u8]>),
    /// Bytes made on the first request for the target (a conversion most
    /// pastes never need), then kept; `None` from the maker refuses it.
    Lazy(Arc<Lazy>),
}

/// A conversion run at most once, on the owner thread.
pub(crate) struct Lazy {
    make: Box<dyn Fn() -> Option<Vec<u8>> + Send + Sync>,
    done: std::sync::OnceLock<Option<Arc<[u8]>>>,
}

impl Payload {
    /// A payload of `bytes`.
    pub(crate) fn bytes(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes.into())
    }

    /// A payload made by `make` when first asked for.
    pub(crate) fn lazy(make: impl Fn() -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self::Lazy(Arc::new(Lazy {
            make: Box::new(make),
            done: std::sync::OnceLock::new(),
        }))
    }

    /// The bytes, converting a lazy payload on first use (`None`: refused).
    pub(crate) fn resolve(&self) -> Option<Arc<[u8]>> {
        match self {
            Self::Bytes(b) => Some(Arc::clone(b)),
            Self::Lazy(l) => l.done.get_or_init(|| (l.make)().map(Arc::from)).clone(),
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::Lazy(_) => f.write_str("Lazy"),
        }
    }
}

/// The absolute paths of a file list about to be put on the clipboard, and
/// its `text/uri-list` body. What the watcher will read back is recorded in
/// `own_writes` first, so the claim is not reported as a local copy (both the
/// X11 writer and the Wayland backend).
pub(crate) fn file_list_to_apply(
    paths: &[PathBuf],
    own_writes: &Mutex<OwnWrites>,
) -> Result<(Vec<PathBuf>, Vec<u8>), ClipboardError> {
    let paths: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| std::path::absolute(p).ok())
        .collect();
    if paths.is_empty() {
        return Err(ClipboardError::Backend("empty file list".into()));
    }
    let uri_list = encode_uri_list(&paths);
    own_writes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .applied(local_files_hash(&parse_uri_list(&uri_list)));
    Ok((paths, uri_list))
}
