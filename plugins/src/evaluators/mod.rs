//! Evaluators, one metric family per file.

mod distribution;
mod gene_statistics;
mod label_fidelity;
mod memorization;
mod paired_prediction;
mod perturbation_response;
mod quality_control;
mod two_sample_classifier;
