//! Writing the document's label map as NIfTI or DICOM SEG, and an explanation as PNGs.

use std::path::{Path, PathBuf};

use crate::display::view::{ViewMapping, display_box};
use crate::display::{PngError, RgbImage, overlay_rgba};

use crate::io::SaveError;
use crate::io::dicom::seg::{SegWriteOptions, SegmentSpec};

use super::document::{Document, LabelFormat};
use super::propagation::{ExplainView, StageChoice};

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

/// Writes the explanation as the panel shows it, one PNG per support slice and stage
/// shown, into `dir` (created if needed): the support slice in the display window, the
/// heatmap (normalised per stage as in the panel), the visible structures, the ring at
/// the clicked location, oriented as the view and cropped as the panel crops
/// (`display`'s functions, which `icseg explain` draws with too). Files are named
/// `<rank>_slice<NNNN>_<stage>.png`, rank 01 receiving the most attention. Returns the
/// paths written.
pub fn write_explanation_pngs(
    doc: &Document,
    view: &mut ExplainView,
    dir: &Path,
) -> Result<Vec<PathBuf>, PngError> {
    std::fs::create_dir_all(dir).map_err(|source| PngError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let Some(ex) = view.result.as_ref() else {
        return Ok(Vec::new());
    };
    let supports = ex.support_slices.clone();
    let n_stages = ex.stages.len();
    let stages: Vec<usize> = match view.stages {
        StageChoice::One(s) => vec![s],
        StageChoice::All => (0..n_stages).collect(),
    };
    let axis = doc.session.axis();
    let geometry = doc.volume.geometry();
    let (w, h) = geometry.slice_dims(axis);
    let crop = view.crop_box(w, h);
    let click = view.query.1.map(|c| c.round().max(0.0) as usize);
    let mut written = Vec::new();
    for (rank, n) in view.order_by_mass().into_iter().enumerate() {
        let s = supports[n];
        let image = doc.volume.slice(axis, s);
        let mapping = ViewMapping::new(geometry, axis, s);
        let d = display_box(&mapping, crop);
        let pixels = [
            d[0].floor() as usize,
            d[1].floor() as usize,
            d[2].ceil() as usize,
            d[3].ceil() as usize,
        ];
        for &stage in stages.iter().filter(|&&st| st < n_stages) {
            let Some(heat) = view.heatmap(stage, n, w, h) else {
                continue;
            };
            let mut rgb = RgbImage::grey(&image, doc.window);
            rgb.overlay_heat(&heat.values);
            for st in doc.session.structures() {
                let rgba = overlay_rgba(st.style.colour, st.style.opacity, st.style.visible);
                rgb.overlay_structure(&doc.session.mask(s, st.value), rgba);
            }
            rgb.draw_ring(click);
            let name = format!(
                "{:02}_slice{:04}_{}.png",
                rank + 1,
                s + 1,
                STAGE_FILE_NAMES[stage.min(2)]
            );
            let path = dir.join(name);
            rgb.oriented(&mapping).crop(pixels).save_png(&path)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Stage names in file names (1/32, 1/16, 1/8).
const STAGE_FILE_NAMES: [&str; 3] = ["1-32", "1-16", "1-8"];
