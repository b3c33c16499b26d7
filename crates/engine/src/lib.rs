//! stasis-engine
