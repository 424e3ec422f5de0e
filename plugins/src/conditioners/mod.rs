//! Condition encoders.

mod class_embedding;
mod combined;
mod continuous;
mod perturbation_set;
mod vector;
