//! stasis-archive
