//! fkp: declarative, cached pipelines for facial-keypoint experiments.
//!
//! The flow, as the modules are laid out: [`config`] reads pipeline files (TOML
//! with spans, `extends`); [`pipeline`] turns one into its stages, each read by
//! its module in [`stages`], whose [`stages::StageKind`] is the one registry of
//! stage kinds; [`dag`] makes a graph of them with content-addressed cache keys
//! and runs what is not cached; [`data`] reads and writes the face data;
//! [`commands`] holds the command line, one module per command (`compare` lines
//! up pipelines already run, `watch` reruns what each saved edit made stale,
//! `predict` and `export` use a trained model). [`settings`] reads the
//! workspace's `fkp.toml` (`[executor]`: local threads or Slurm jobs, in
//! `dag::build` and `dag::slurm`; `[cache] remote`, in `dag::remote`).

pub mod buffers;
pub mod commands;
pub mod config;
pub mod console;
pub mod dag;
pub mod data;
pub mod fsutil;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod render;
pub mod settings;
pub mod stages;
pub mod sweep;
pub mod text;
pub mod training;
pub mod workspace;
