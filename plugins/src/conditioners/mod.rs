//! Condition encoders.

mod class_embedding;
