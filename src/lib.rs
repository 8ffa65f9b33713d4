//! ICSeg: few-click segmentation of medical volumes with an in-context
//! cross-attention network (Ciusdel et al. 2025).
//!
//! # Layers
//!
//! Dependencies point one way; everything but [`ui`] is headless and builds with
//! `--no-default-features`.
//!
//! | module | what | depends on |
//! |---|---|---|
//! | [`volume`] | volumes, label maps, geometry, resampling, the run rule | — |
//! | [`io`] | NIfTI, DICOM series, DICOM SEG read/write | volume |
//! | [`display`] | window/level, view orientation, colour maps, overlays, PNG | volume |
//! | [`model`] | the network (burn) | volume, burn |
//! | [`engine`] | inference worker, support cache, devices | model, volume |
//! | [`session`] | annotations, support set, undo/redo, review state | io, volume |
//! | [`pacs`] | DICOMweb: QIDO-RS search, WADO-RS pull into a cache, STOW-RS push | — |
//! | `dataset` | the cases of a data folder | io, volume |
//! | [`eval`] | simulated annotators, Dice, baselines | dataset, engine, io, model, volume |
//! | [`train`] | episodes, loss, schedule, checkpoints | dataset, engine, io, model, volume |
//! | [`cli`] | headless subcommands | all but ui |
//! | `ui` | the eframe application (feature `gui`) | all |
//! | [`files`], `testing` | atomic writes; where the test data is | — (usable by all) |
//!
//! `tests/layering.rs` holds the code to this table (the full one is in
//! `docs/ARCHITECTURE.md`).
//!
//! # Errors
//!
//! Each boundary has its own `thiserror` enum (`io::LoadError`, `model::WeightsError`,
//! `engine::EngineError`, `train::TrainError`, ...). Messages say what went wrong and
//! what to do, never carry patient identifiers, and end with the file path where there
//! is one. Nothing here panics on user data.

#![warn(missing_docs)]

pub mod cli;
pub mod dataset;
pub mod display;
pub mod engine;
pub mod eval;
pub mod files;
pub mod io;
pub mod model;
pub mod pacs;
pub mod session;
#[doc(hidden)]
pub mod testing;
pub mod train;
#[cfg(feature = "gui")]
pub mod ui;
pub mod volume;
