//! Writing the document's label map as NIfTI or DICOM SEG.

use std::path::Path;

use crate::io::SaveError;
use crate::io::dicom::seg::{SegWriteOptions, SegmentSpec};

use super::document::{Document, LabelFormat};

/// Why the labels could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// DICOM SEG was asked for a volume that did not come from DICOM.
    #[error("DICOM SEG needs a volume opened from DICOM; save as NIfTI instead")]
    NotFromDicom,
    /// No structure has a voxel yet (a DICOM SEG needs at least one segment).
    #[error("there is nothing to save yet: paint a structure first")]
    NothingToSave,
    /// The writer failed.
    #[error(transparent)]
    Write(#[from] SaveError),
}

/// Writes the document's label map to `path` in `format`.
pub fn write_labels(doc: &Document, path: &Path, format: LabelFormat) -> Result<(), ExportError> {
    match format {
        LabelFormat::Nifti => Ok(crate::io::write_label_map(path, doc.session.labels())?),
        LabelFormat::DicomSeg => write_seg(doc, path),
    }
}

/// Writes the document's structures (those with at least one voxel) as a binary DICOM
/// SEG referencing the DICOM series the volume came from.
fn write_seg(doc: &Document, path: &Path) -> Result<(), ExportError> {
    let source = doc.source.dicom().ok_or(ExportError::NotFromDicom)?;
    let present: Vec<u16> = doc
        .session
        .labels()
        .label_counts()
        .iter()
        .map(|c| c.0)
        .collect();
    let segments: Vec<SegmentSpec> = doc
        .session
        .structures()
        .iter()
        .filter(|s| present.contains(&s.value))
        .map(|s| SegmentSpec {
            label: s.value,
            name: s.style.name.clone(),
            color_rgb: s.style.colour,
        })
        .collect();
    if segments.is_empty() {
        return Err(ExportError::NothingToSave);
    }
    crate::io::dicom::seg::write_seg(
        path,
        doc.session.labels(),
        &segments,
        Some(source),
        &SegWriteOptions::default(),
    )?;
    Ok(())
}
