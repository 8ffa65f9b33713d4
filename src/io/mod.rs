//! Reading and writing medical files: NIfTI, DICOM series and DICOM SEG.
//!
//! Every loader returns a typed error ([`LoadError`]) for bad input and never panics on
//! user data; sizes announced by headers are checked against the bytes present before
//! anything is allocated. Messages carry no patient identifiers.
//!
//! | entry point | does |
//! |---|---|
//! | [`open_volume`] | a NIfTI file, or a DICOM file/folder with exactly one image series |
//! | [`dicom::scan`], [`dicom::load_series`] | list the series of a folder, load the chosen one |
//! | [`read_label_map`], [`write_label_map`] | NIfTI label maps on a volume's grid |
//! | [`nifti::write_volume`] | a volume as NIfTI |
//!
//! Geometry conventions are those of [`crate::volume`] (LPS patient space); NIfTI's
//! RAS is converted on read and write. See `docs/io.md`.

pub mod dicom;
mod error;
mod grid;
pub mod nifti;

use std::path::{Path, PathBuf};

pub use crate::files::write_atomic;
pub use dicom::{DicomSource, SeriesSummary};
pub use error::{LoadError, LoadWarning, SaveError, SeriesProblem};
pub use grid::labels_onto_reference;

use crate::volume::{Geometry, LabelMap, Volume};

/// A volume as loaded, with where it came from and what the user should be told.
#[derive(Clone, Debug)]
pub struct LoadedVolume {
    /// The voxels and their geometry.
    pub volume: Volume,
    /// The file(s) it came from.
    pub source: VolumeSource,
    /// Things the caller should show the user (missing slices, no orientation, ...).
    pub warnings: Vec<LoadWarning>,
}

/// Where a volume came from (serialisable, e.g. into a session file).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum VolumeSource {
    /// A NIfTI file.
    Nifti {
        /// The file.
        path: PathBuf,
    },
    /// A DICOM series; carries what a DICOM SEG needs to reference it.
    Dicom(Box<DicomSource>),
}

impl VolumeSource {
    /// The DICOM series details, when the volume came from DICOM.
    pub fn dicom(&self) -> Option<&DicomSource> {
        match self {
            Self::Dicom(d) => Some(d),
            Self::Nifti { .. } => None,
        }
    }
}

/// The file formats [`open_volume`] recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// NIfTI-1, plain or gzip-compressed.
    Nifti,
    /// A DICOM file or a folder (scanned for DICOM files).
    Dicom,
}

/// Detects the format of a file from its first bytes (not its name); folders are DICOM.
pub fn detect_format(path: &Path) -> Result<Format, LoadError> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
    if meta.is_dir() {
        return Ok(Format::Dicom);
    }
    let mut head = Vec::with_capacity(348);
    std::fs::File::open(path)
        .and_then(|f| f.take(348).read_to_end(&mut head))
        .map_err(|e| LoadError::io(path, e))?;
    if dicom::looks_like_dicom(&head) {
        Ok(Format::Dicom)
    } else if nifti::looks_like_nifti(&head) {
        Ok(Format::Nifti)
    } else {
        Err(LoadError::UnrecognizedFormat { path: path.into() })
    }
}

/// Opens a volume: a NIfTI file (`.nii`, `.nii.gz`), a DICOM file, or a folder that is
/// scanned recursively for DICOM files. A DICOM input with several image series gives
/// [`LoadError::MultipleSeries`]; let the user choose and call [`dicom::load_series`].
pub fn open_volume(path: &Path) -> Result<LoadedVolume, LoadError> {
    match detect_format(path)? {
        Format::Nifti => nifti::read_volume(path),
        Format::Dicom => dicom::open(path),
    }
}

/// Reads a NIfTI label map and places it on `reference` (the grid of the open volume).
/// A map storing the same voxels in another axis order is re-indexed; one that does not
/// lie on the grid gives [`LoadError::NotOnGrid`].
pub fn read_label_map(path: &Path, reference: &Geometry) -> Result<LabelMap, LoadError> {
    nifti::read_label_map(path, reference)
}

/// Writes a label map as NIfTI (`u8` when every label is at most 255, else `u16`),
/// atomically, keeping its geometry in both sform and qform.
pub fn write_label_map(path: &Path, labels: &LabelMap) -> Result<(), SaveError> {
    nifti::write_label_map(path, labels)
}
