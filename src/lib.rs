//! fkp: declarative, cached pipelines for facial-keypoint experiments.
//!
//! The flow, as the modules are laid out: [`config`] reads pipeline files into
//! typed stage configurations; [`dag`] turns them into a graph of stages with
//! content-addressed cache keys and runs what is not cached; [`stages`] holds one
//! module per stage kind; [`data`] reads and writes the face data.

pub mod config;
pub mod console;
pub mod dag;
pub mod data;
pub mod fsutil;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod report;
pub mod stages;
pub mod training;
pub mod workspace;
