//! Writing label maps in formats other than NIfTI.

use std::path::Path;

use crate::io::dicom::seg::{SegWriteOptions, SegmentSpec};

use super::document::Document;

/// Writes the document's structures (those with at least one voxel) as a binary DICOM
/// SEG referencing the DICOM series the volume came from.
pub fn write_seg(doc: &Document, path: &Path) -> Result<(), String> {
    let source = doc.source.dicom().ok_or_else(|| {
        "DICOM SEG needs a volume opened from DICOM; save as NIfTI instead".to_owned()
    })?;
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
        return Err("there is nothing to save yet: paint a structure first".into());
    }
    crate::io::dicom::seg::write_seg(
        path,
        doc.session.labels(),
        &segments,
        Some(source),
        &SegWriteOptions::default(),
    )
    .map_err(|e| e.to_string())
}
