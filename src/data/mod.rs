//! Face data: reading Kaggle-layout CSV files (plain, gzip or zip) and the
//! Parquet files the ingest stage writes.

pub mod augment;
mod error;
pub mod faces;
pub mod kaggle_csv;
pub mod lookup;
pub mod parquet;
pub mod prepared;
pub mod source;
pub mod summary;
pub mod tensor_file;

pub use error::DataError;
pub use faces::FaceTable;
