//! clipmesh relay (in progress).
