//! One DICOM file: its bytes (checked by [`super::guard`] before the parser sees
//! them) and what its header tells about it, without the pixel data.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use dicom::core::Tag;
use dicom::dictionary_std::tags;
use dicom::object::file::ReadPreamble;
use dicom::object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

use super::guard;
use super::series::SeriesKind;
use crate::io::error::LoadError;

/// The largest single file read.
const MAX_FILE_BYTES: u64 = 4 << 30;
/// The format name in error messages.
pub(super) const FORMAT: &str = "DICOM";
/// SOP class of DICOM Segmentation objects.
pub const SEGMENTATION_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// Patient and study attributes copied from the source images into derived objects
/// (a DICOM SEG must belong to the same patient and study). Their values are never
/// logged or printed: `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatientStudy {
    attributes: Vec<CopiedAttribute>,
}

impl std::fmt::Debug for PatientStudy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PatientStudy({} attributes, redacted)",
            self.attributes.len()
        )
    }
}

impl PatientStudy {
    /// How many attributes were copied.
    pub fn len(&self) -> usize {
        self.attributes.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    pub(crate) fn attributes(&self) -> &[CopiedAttribute] {
        &self.attributes
    }
}

/// One copied attribute: tag, VR and its raw text value.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CopiedAttribute {
    pub group: u16,
    pub element: u16,
    pub vr: String,
    pub value: String,
}

/// Attributes of the Patient and General Study modules copied into derived objects.
const PATIENT_STUDY_TAGS: [Tag; 13] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DESCRIPTION,
    tags::PATIENT_IDENTITY_REMOVED,
];

/// Geometry and value mapping of one frame.
#[derive(Clone, Debug, Default)]
pub(super) struct FrameInfo {
    pub(super) position: Option<[f64; 3]>,
    pub(super) orientation: Option<[f64; 6]>,
    pub(super) pixel_spacing: Option<[f64; 2]>,
    pub(super) slope: f64,
    pub(super) intercept: f64,
    pub(super) spacing_between_slices: Option<f64>,
}

/// What one file tells about itself, without its pixel data.
#[derive(Clone, Debug)]
pub(super) struct FileHeader {
    pub(super) path: PathBuf,
    pub(super) transfer_syntax: String,
    pub(super) sop_class_uid: String,
    pub(super) sop_instance_uid: String,
    pub(super) study_uid: String,
    pub(super) series_uid: String,
    pub(super) frame_of_reference_uid: String,
    pub(super) modality: String,
    pub(super) series_description: String,
    pub(super) series_number: Option<i64>,
    pub(super) rows: usize,
    pub(super) columns: usize,
    pub(super) samples_per_pixel: u16,
    pub(super) kind: SeriesKind,
    pub(super) multi_frame: bool,
    pub(super) frames: Vec<FrameInfo>,
    pub(super) patient_study: PatientStudy,
}

/// Reads a file if it is DICOM: `Ok(None)` when it is not DICOM at all.
pub(super) fn read_header_file(path: &Path) -> Result<Option<FileHeader>, LoadError> {
    let Some(bytes) = read_if_dicom(path)? else {
        return Ok(None);
    };
    let mut h = header_from_bytes(&bytes, path)?;
    if let Some(h) = &mut h {
        h.path = path.to_path_buf();
    }
    Ok(h)
}

/// Whether `head` (the first bytes of a file) carry the DICOM signature.
pub(crate) fn looks_like_dicom(head: &[u8]) -> bool {
    (head.len() >= 132 && &head[128..132] == b"DICM") || (head.len() >= 4 && &head[..4] == b"DICM")
}

/// The whole file when it starts like DICOM, `None` otherwise (checked on the first
/// 132 bytes, so other files are not read in full).
pub(super) fn read_if_dicom(path: &Path) -> Result<Option<Vec<u8>>, LoadError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let size = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
    let mut head = Vec::with_capacity(132);
    (&mut file)
        .take(132)
        .read_to_end(&mut head)
        .map_err(|e| LoadError::io(path, e))?;
    if !looks_like_dicom(&head) {
        return Ok(None);
    }
    if size > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.into(),
            voxels: size,
            limit: MAX_FILE_BYTES,
        });
    }
    let mut bytes = head;
    bytes.reserve(size.saturating_sub(132) as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| LoadError::io(path, e))?;
    Ok(Some(bytes))
}

/// The bytes from `DICM` on, or `None` when the signature is missing.
fn strip_preamble(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Some(&bytes[128..])
    } else if bytes.len() >= 4 && &bytes[..4] == b"DICM" {
        Some(bytes)
    } else {
        None
    }
}

/// Checks and parses a DICOM file in memory; without `with_pixels`, parsing stops at
/// the pixel data.
pub(super) fn parse(
    bytes: &[u8],
    path: &Path,
    header_only: bool,
) -> Result<DefaultDicomObject, LoadError> {
    let body = strip_preamble(bytes).ok_or(LoadError::UnrecognizedFormat { path: path.into() })?;
    guard::check(body).map_err(|reason| LoadError::corrupt(path, FORMAT, reason))?;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
        if header_only {
            options = options.read_until(tags::PIXEL_DATA);
        }
        options.from_reader(body)
    }));
    match result {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(LoadError::corrupt(path, FORMAT, first_line(&e.to_string()))),
        Err(_) => Err(LoadError::corrupt(
            path,
            FORMAT,
            "the DICOM reader failed on it",
        )),
    }
}

pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

pub(super) fn header_from_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<Option<FileHeader>, LoadError> {
    let Some(body) = strip_preamble(bytes) else {
        return Ok(None);
    };
    let walk = guard::check(body).map_err(|reason| LoadError::corrupt(path, FORMAT, reason))?;
    let obj = parse(bytes, path, true)?;
    Ok(Some(header_from_object(&obj, path, &walk)))
}

// Attribute helpers ----------------------------------------------------------------

pub(super) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

pub(super) fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    (!v.is_empty() && v.iter().all(|x| x.is_finite())).then_some(v)
}

fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    floats(obj, tag).map(|v| v[0])
}

pub(super) fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

pub(super) fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// The first item of sequence `seq` inside functional group `group`.
fn group_item(group: Option<&InMemDicomObject>, seq: Tag) -> Option<&InMemDicomObject> {
    items(group?, seq).first()
}

fn array<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    let v = v?;
    (v.len() >= N).then(|| std::array::from_fn(|i| v[i]))
}

/// Frame information from one functional group item (per-frame or shared).
fn frame_from_group(group: Option<&InMemDicomObject>, into: &mut FrameInfo) {
    if let Some(pos) = group_item(group, tags::PLANE_POSITION_SEQUENCE)
        && let Some(p) = array::<3>(floats(pos, tags::IMAGE_POSITION_PATIENT))
    {
        into.position = Some(p);
    }
    if let Some(o) = group_item(group, tags::PLANE_ORIENTATION_SEQUENCE)
        && let Some(v) = array::<6>(floats(o, tags::IMAGE_ORIENTATION_PATIENT))
    {
        into.orientation = Some(v);
    }
    if let Some(m) = group_item(group, tags::PIXEL_MEASURES_SEQUENCE) {
        if let Some(v) = array::<2>(floats(m, tags::PIXEL_SPACING)) {
            into.pixel_spacing = Some(v);
        }
        if let Some(s) = float(m, tags::SPACING_BETWEEN_SLICES) {
            into.spacing_between_slices = Some(s);
        }
    }
    if let Some(t) = group_item(group, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
        if let Some(s) = float(t, tags::RESCALE_SLOPE) {
            into.slope = s;
        }
        if let Some(i) = float(t, tags::RESCALE_INTERCEPT) {
            into.intercept = i;
        }
    }
}

fn header_from_object(
    obj: &DefaultDicomObject,
    path: &Path,
    walk: &guard::WalkSummary,
) -> FileHeader {
    let has_pixel_data = walk.has_pixel_data;
    let meta = obj.meta();
    let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    // Some writers leave SOP Class UID empty in the data set; the file meta header
    // (Media Storage SOP Class UID) then still names it.
    let sop_class_uid =
        text(obj, tags::SOP_CLASS_UID).unwrap_or_else(|| clean(meta.media_storage_sop_class_uid()));
    let sop_instance_uid = text(obj, tags::SOP_INSTANCE_UID)
        .unwrap_or_else(|| clean(meta.media_storage_sop_instance_uid()));
    let modality = text(obj, tags::MODALITY).unwrap_or_default();
    let kind = if sop_class_uid == SEGMENTATION_SOP_CLASS || modality == "SEG" {
        SeriesKind::Segmentation
    } else if has_pixel_data {
        SeriesKind::Image
    } else {
        SeriesKind::NonImage
    };
    let rows = int(obj, tags::ROWS).unwrap_or(0).clamp(0, u16::MAX as i64) as u64;
    let columns = int(obj, tags::COLUMNS)
        .unwrap_or(0)
        .clamp(0, u16::MAX as i64) as u64;
    let bits_allocated = int(obj, tags::BITS_ALLOCATED).unwrap_or(8).clamp(1, 64) as u64;
    // Never trust Number of Frames for an allocation: cap it by the frames the pixel
    // data can hold (bits for native data, fragments for compressed data).
    let frames_possible = match (walk.native_pixel_bytes, walk.pixel_fragments) {
        (Some(bytes), _) => bytes * 8 / (rows * columns * bits_allocated).max(1),
        (None, Some(fragments)) => fragments,
        (None, None) => 1,
    };
    let frames_declared = int(obj, tags::NUMBER_OF_FRAMES)
        .unwrap_or(1)
        .clamp(1, frames_possible.clamp(1, i64::MAX as u64) as i64);
    let multi_frame = obj.get(tags::NUMBER_OF_FRAMES).is_some();

    let base = FrameInfo {
        position: array::<3>(floats(obj, tags::IMAGE_POSITION_PATIENT)),
        orientation: array::<6>(floats(obj, tags::IMAGE_ORIENTATION_PATIENT)),
        pixel_spacing: array::<2>(floats(obj, tags::PIXEL_SPACING)),
        slope: float(obj, tags::RESCALE_SLOPE).unwrap_or(1.0),
        intercept: float(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
        // only used for a single slice, where no second position gives the spacing
        spacing_between_slices: float(obj, tags::SPACING_BETWEEN_SLICES)
            .or_else(|| float(obj, tags::SLICE_THICKNESS)),
    };
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let frame_count = frames_declared as usize;
    let mut frames = Vec::with_capacity(frame_count);
    for f in 0..frame_count {
        let mut info = base.clone();
        frame_from_group(shared, &mut info);
        frame_from_group(per_frame.get(f), &mut info);
        frames.push(info);
    }

    let mut patient_study = PatientStudy::default();
    for tag in PATIENT_STUDY_TAGS {
        if let Some(e) = obj.get(tag)
            && let Ok(v) = e.to_raw_str()
        {
            let value = v.trim_end_matches(['\0', ' ']).to_string();
            if !value.is_empty() {
                patient_study.attributes.push(CopiedAttribute {
                    group: tag.0,
                    element: tag.1,
                    vr: e.vr().to_string().to_string(),
                    value,
                });
            }
        }
    }

    FileHeader {
        path: path.to_path_buf(),
        transfer_syntax: clean(meta.transfer_syntax()),
        sop_class_uid,
        sop_instance_uid,
        study_uid: text(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        series_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        modality,
        series_description: text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        series_number: int(obj, tags::SERIES_NUMBER),
        rows: rows as usize,
        columns: columns as usize,
        samples_per_pixel: int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).clamp(0, 16) as u16,
        kind,
        multi_frame,
        frames,
        patient_study,
    }
}
