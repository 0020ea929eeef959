//! churn-audit: train N models that differ only in chosen sources of
//! randomness, and measure how much their predictions disagree.
//!
//! Data flows one way: [`config`] → [`data`] → [`train`] → predictions →
//! [`metrics`] → [`report`] → [`gate`]. `metrics`, `report` and `gate` never
//! touch libtorch.

pub mod artifacts;
pub mod cli;
pub mod cluster;
pub mod compare;
pub mod config;
pub mod config_file;
pub mod data;
pub mod error;
pub mod fused;
pub mod gate;
pub mod libtorch;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod output;
pub mod parallel;
pub mod pipeline;
pub mod progress;
pub mod randomness;
pub mod regular_file;
pub mod report;
pub mod saved_model;
pub mod train;

pub use error::{Error, Result};
