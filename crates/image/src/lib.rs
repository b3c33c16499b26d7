//! stasis-image
