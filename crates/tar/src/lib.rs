//! stasis-tar
