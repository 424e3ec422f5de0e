//! latentlab plugins.
