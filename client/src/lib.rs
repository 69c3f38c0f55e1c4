//! clipmesh client (in progress).

pub mod clipboard;
