//! fkp's integration tests, as one test binary (the layout of ripgrep's
//! tests/tests.rs): each file beside this one is a module, so the heavy
//! dependencies (dfdx, polars, object_store) are linked once, not once per
//! file. Run one file's tests with `cargo test --release --test tests <module>::`.
//!
//! The modules share one process and run on parallel threads: a test changes
//! no process-wide state (environment, current directory, global thread pool,
//! signal handlers); what the `fkp` binary does with those happens in the
//! child processes the tests start.

mod common;

mod bad_input;
mod eda_prepare;
mod exactness;
mod exit_codes;
mod fuzz;
mod ingest;
mod kaggle_files;
mod kernels;
mod model;
mod onnx;
mod output;
mod remote;
mod report;
mod run_and_cache;
mod serve;
mod slurm;
mod train_evaluate;
mod watch;
mod workspace;
