//! clipmesh client (in progress).
