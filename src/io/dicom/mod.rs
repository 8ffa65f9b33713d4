//! DICOM image series: scanning files and folders, grouping by series, and building a
//! [`Volume`] from one series.
//!
//! # Building a volume
//!
//! The images (or the frames of multi-frame objects) of a series are sorted by the
//! projection of their Image Position (Patient) on the slice normal (row × column
//! cosine). Slice spacing comes from those positions, never from Slice Thickness. The
//! checks that keep a wrong volume from being shown silently:
//!
//! - sizes, orientations and pixel spacings must agree ([`SeriesProblem`] otherwise);
//! - two images at one position (phases, echoes) are an error;
//! - gaps that are whole multiples of the usual spacing are missing slices: they are
//!   filled with the lowest value and reported ([`LoadWarning::MissingSlices`]);
//! - gaps varying by up to a quarter of the spacing give an even grid with
//!   [`LoadWarning::IrregularSpacing`]; more is [`SeriesProblem::IrregularSpacing`];
//! - slices stacked obliquely to their normal (gantry tilt) keep their true positions
//!   through a sheared grid and [`LoadWarning::GantryTilt`].
//!
//! Voxel values are the stored values (masked to Bits Stored, sign-extended) times
//! Rescale Slope plus Rescale Intercept (per frame for enhanced multi-frame objects).
//!
//! # Robustness
//!
//! Each file is read whole (files are slices or a multi-frame object), checked by
//! [`guard`] so that no declared length exceeds the bytes present, then parsed. The
//! decoded size is checked against [`MAX_VOXELS`] and, for compressed data, against a
//! generous compression ratio before any decoder runs. Panics inside the third-party
//! parser and decoders are caught and reported as damaged files.

mod codec_check;
mod guard;
pub mod seg;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use dicom::core::Tag;
use dicom::dictionary_std::tags;
use dicom::encoding::TransferSyntaxIndex;
use dicom::object::file::ReadPreamble;
use dicom::object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom::transfer_syntax::TransferSyntaxRegistry;
use dicom_pixeldata::PixelDecoder;

use super::error::{LoadError, LoadWarning, SeriesProblem};
use super::{LoadedVolume, VolumeSource};
use crate::volume::{Geometry, Modality, Volume};

/// The largest volume accepted, in voxels.
pub const MAX_VOXELS: u64 = 1 << 30;
/// The largest single file read.
const MAX_FILE_BYTES: u64 = 4 << 30;
/// Compressed pixel data may decode to at most this many times its size (plus
/// [`MIN_DECODE_ALLOWANCE`]); lossless codecs stay far below on real images.
const MAX_COMPRESSION_RATIO: u64 = 1000;
const MIN_DECODE_ALLOWANCE: u64 = 64 << 20;
/// Folder depth scanned below the chosen folder.
const MAX_FOLDER_DEPTH: usize = 16;
const FORMAT: &str = "DICOM";
/// SOP class of DICOM Segmentation objects.
pub const SEGMENTATION_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// What kind of objects a series holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeriesKind {
    /// Images that form a volume (CT, MR, ...).
    Image,
    /// DICOM Segmentation objects.
    Segmentation,
    /// Objects without pixel data (reports, structured documents, ...).
    NonImage,
}

/// One series found by [`scan`]; carries no patient identifiers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeriesSummary {
    /// Series Instance UID, to pass to [`load_series`].
    pub series_instance_uid: String,
    /// Series Number, when present.
    pub series_number: Option<i64>,
    /// Modality code (CT, MR, SEG, ...).
    pub modality: String,
    /// Series Description (may be empty).
    pub description: String,
    /// What the series holds.
    pub kind: SeriesKind,
    /// Number of files.
    pub files: usize,
    /// Number of slices (frames of all files).
    pub slices: usize,
    /// Image width (Columns) of the first image.
    pub columns: usize,
    /// Image height (Rows) of the first image.
    pub rows: usize,
    /// Transfer syntax UIDs used, sorted.
    pub transfer_syntaxes: Vec<String>,
}

impl SeriesSummary {
    /// Readable names of the transfer syntaxes.
    pub fn transfer_syntax_names(&self) -> Vec<String> {
        self.transfer_syntaxes
            .iter()
            .map(|uid| transfer_syntax_name(uid))
            .collect()
    }
}

impl std::fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let number = self
            .series_number
            .map(|n| format!("#{n} "))
            .unwrap_or_default();
        let description = if self.description.is_empty() {
            "(no description)"
        } else {
            &self.description
        };
        write!(
            f,
            "{number}{} {description}: {} × {} × {} slices",
            self.modality, self.columns, self.rows, self.slices
        )
    }
}

/// A readable name for a transfer syntax UID.
pub fn transfer_syntax_name(uid: &str) -> String {
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{} ({uid})", ts.name()),
        None => format!("unknown ({uid})"),
    }
}

/// The result of scanning a file or folder.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Every series found, image series first, then by series number.
    pub series: Vec<SeriesSummary>,
    /// Files that were not readable DICOM objects.
    pub skipped_files: usize,
    headers: Vec<FileHeader>,
    /// The first file that looked like DICOM but could not be read.
    first_damaged: Option<PathBuf>,
}

impl Scan {
    /// The image series (those that can become a volume).
    pub fn image_series(&self) -> impl Iterator<Item = &SeriesSummary> {
        self.series.iter().filter(|s| s.kind == SeriesKind::Image)
    }
}

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

/// Where a slice of the volume came from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SliceReference {
    /// SOP Class UID of the source image.
    pub sop_class_uid: String,
    /// SOP Instance UID of the source image.
    pub sop_instance_uid: String,
    /// 1-based frame number inside a multi-frame image.
    pub frame_number: Option<u32>,
}

/// What a DICOM SEG writer needs to reference the series a volume was built from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DicomSource {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Frame of Reference UID (empty when the images have none).
    pub frame_of_reference_uid: String,
    /// Modality code.
    pub modality: String,
    /// Series Description.
    pub series_description: String,
    /// Transfer syntax of the first image.
    pub transfer_syntax: String,
    /// For each slice `k` of the volume, its source image; `None` for a filled-in
    /// missing slice.
    pub slices: Vec<Option<SliceReference>>,
    /// Patient and study attributes to copy into derived objects (redacted in `Debug`).
    pub patient_study: PatientStudy,
}

/// Geometry and value mapping of one frame.
#[derive(Clone, Debug, Default)]
struct FrameInfo {
    position: Option<[f64; 3]>,
    orientation: Option<[f64; 6]>,
    pixel_spacing: Option<[f64; 2]>,
    slope: f64,
    intercept: f64,
    spacing_between_slices: Option<f64>,
}

/// What one file tells about itself, without its pixel data.
#[derive(Clone, Debug)]
struct FileHeader {
    path: PathBuf,
    transfer_syntax: String,
    sop_class_uid: String,
    sop_instance_uid: String,
    study_uid: String,
    series_uid: String,
    frame_of_reference_uid: String,
    modality: String,
    series_description: String,
    series_number: Option<i64>,
    rows: usize,
    columns: usize,
    samples_per_pixel: u16,
    kind: SeriesKind,
    multi_frame: bool,
    frames: Vec<FrameInfo>,
    patient_study: PatientStudy,
}

// ---------------------------------------------------------------------------------
// Public entry points

/// Scans a DICOM file or a folder (recursively) and groups what it finds by series.
pub fn scan(path: &Path) -> Result<Scan, LoadError> {
    let files = collect_files(path)?;
    let single_file = files.len() == 1 && path.is_file();
    let mut headers = Vec::new();
    let mut skipped = 0;
    let mut first_damaged = None;
    for file in &files {
        match read_header_file(file) {
            Ok(Some(h)) => headers.push(h),
            Ok(None) => skipped += 1,
            Err(e) => {
                if single_file {
                    return Err(e);
                }
                skipped += 1;
                first_damaged.get_or_insert_with(|| file.clone());
            }
        }
    }
    if single_file && headers.is_empty() {
        return Err(LoadError::UnrecognizedFormat { path: path.into() });
    }
    Ok(Scan {
        series: summarize(&headers),
        skipped_files: skipped,
        headers,
        first_damaged,
    })
}

/// Loads the series `series_uid` found under `path` (a folder or a file).
pub fn load_series(path: &Path, series_uid: &str) -> Result<LoadedVolume, LoadError> {
    let scan = scan(path)?;
    load_from_scan(path, &scan, series_uid)
}

/// Opens a DICOM file or folder holding exactly one image series.
pub fn open(path: &Path) -> Result<LoadedVolume, LoadError> {
    let scan = scan(path)?;
    let images: Vec<&SeriesSummary> = scan.image_series().collect();
    match images.len() {
        0 => {
            let single = scan.headers.len() == 1 && scan.skipped_files == 0;
            if single && scan.headers[0].kind == SeriesKind::NonImage {
                return Err(LoadError::NoPixelData { path: path.into() });
            }
            if single && scan.headers[0].kind == SeriesKind::Segmentation {
                return Err(seg_as_image(path));
            }
            if let Some(damaged) = &scan.first_damaged
                && let Err(e) = read_header_file(damaged)
            {
                // Only damaged DICOM files: report the first one's problem rather
                // than "no images".
                return Err(e);
            }
            Err(LoadError::NoDicomImages {
                path: path.into(),
                files_seen: scan.skipped_files + scan.headers.len(),
            })
        }
        1 => {
            let uid = images[0].series_instance_uid.clone();
            load_from_scan(path, &scan, &uid)
        }
        _ => Err(LoadError::MultipleSeries {
            series: images.into_iter().cloned().collect(),
        }),
    }
}

/// Builds a volume from one DICOM file held in memory (`name` labels messages).
/// The entry point of the fuzz target.
pub fn read_bytes(bytes: &[u8], name: &Path) -> Result<LoadedVolume, LoadError> {
    let header = header_from_bytes(bytes, name)?
        .ok_or(LoadError::UnrecognizedFormat { path: name.into() })?;
    match header.kind {
        SeriesKind::Image => {}
        SeriesKind::NonImage => return Err(LoadError::NoPixelData { path: name.into() }),
        SeriesKind::Segmentation => return Err(seg_as_image(name)),
    }
    let plan = plan_volume(name, &[&header])?;
    let mut voxels = vec![0f32; plan.geometry.voxel_count()];
    let obj = parse(bytes, name, false)?;
    fill_from_object(
        &obj,
        0,
        &header,
        &plan,
        &mut voxels,
        name,
        bytes.len() as u64,
    )?;
    finish(plan, voxels, &[&header], name)
}

fn seg_as_image(path: &Path) -> LoadError {
    LoadError::unsupported(
        path,
        "a DICOM segmentation (SEG) opened as an image; open its image series first, then load the segmentation onto it",
    )
}

// ---------------------------------------------------------------------------------
// Scanning

fn collect_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| LoadError::io(&dir, e))?;
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let p = entry.path();
            if kind.is_dir() {
                if depth < MAX_FOLDER_DEPTH {
                    stack.push((p, depth + 1));
                }
            } else if kind.is_file() || (kind.is_symlink() && p.is_file()) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a file if it is DICOM: `Ok(None)` when it is not DICOM at all.
fn read_header_file(path: &Path) -> Result<Option<FileHeader>, LoadError> {
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
fn read_if_dicom(path: &Path) -> Result<Option<Vec<u8>>, LoadError> {
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
fn parse(bytes: &[u8], path: &Path, header_only: bool) -> Result<DefaultDicomObject, LoadError> {
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

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn header_from_bytes(bytes: &[u8], path: &Path) -> Result<Option<FileHeader>, LoadError> {
    let Some(body) = strip_preamble(bytes) else {
        return Ok(None);
    };
    let structure =
        guard::check(body).map_err(|reason| LoadError::corrupt(path, FORMAT, reason))?;
    let obj = parse(bytes, path, true)?;
    Ok(Some(header_from_object(&obj, path, &structure)))
}

// Attribute helpers ----------------------------------------------------------------

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    (!v.is_empty() && v.iter().all(|x| x.is_finite())).then_some(v)
}

fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    floats(obj, tag).map(|v| v[0])
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
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
    structure: &guard::Structure,
) -> FileHeader {
    let has_pixel_data = structure.has_pixel_data;
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
    let frames_possible = match (structure.native_pixel_bytes, structure.pixel_fragments) {
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

fn summarize(headers: &[FileHeader]) -> Vec<SeriesSummary> {
    let mut by_series: BTreeMap<&str, Vec<&FileHeader>> = BTreeMap::new();
    for h in headers {
        by_series.entry(&h.series_uid).or_default().push(h);
    }
    let mut out: Vec<SeriesSummary> = by_series
        .into_iter()
        .map(|(uid, files)| {
            let first = files[0];
            let mut ts: Vec<String> = files.iter().map(|h| h.transfer_syntax.clone()).collect();
            ts.sort();
            ts.dedup();
            let kind = if files.iter().any(|h| h.kind == SeriesKind::Image) {
                SeriesKind::Image
            } else {
                first.kind
            };
            SeriesSummary {
                series_instance_uid: uid.to_string(),
                series_number: first.series_number,
                modality: first.modality.clone(),
                description: first.series_description.clone(),
                kind,
                files: files.len(),
                slices: files.iter().map(|h| h.frames.len()).sum(),
                columns: first.columns,
                rows: first.rows,
                transfer_syntaxes: ts,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (
            a.kind != SeriesKind::Image,
            a.series_number,
            &a.series_instance_uid,
        )
            .cmp(&(
                b.kind != SeriesKind::Image,
                b.series_number,
                &b.series_instance_uid,
            ))
    });
    out
}

// ---------------------------------------------------------------------------------
// Building a volume

fn load_from_scan(path: &Path, scan: &Scan, series_uid: &str) -> Result<LoadedVolume, LoadError> {
    let headers: Vec<&FileHeader> = scan
        .headers
        .iter()
        .filter(|h| h.series_uid == series_uid && h.kind == SeriesKind::Image)
        .collect();
    if headers.is_empty() {
        return Err(LoadError::SeriesNotFound { path: path.into() });
    }
    let plan = plan_volume(path, &headers)?;
    let mut voxels = vec![0f32; plan.geometry.voxel_count()];
    for (index, h) in headers.iter().enumerate() {
        let bytes = read_if_dicom(&h.path)?.ok_or(LoadError::UnrecognizedFormat {
            path: h.path.clone(),
        })?;
        let obj = parse(&bytes, &h.path, false)?;
        fill_from_object(
            &obj,
            index,
            h,
            &plan,
            &mut voxels,
            &h.path,
            bytes.len() as u64,
        )?;
    }
    let mut loaded = finish(plan, voxels, &headers, path)?;
    if scan.skipped_files > 0 {
        loaded.warnings.push(LoadWarning::SkippedFiles {
            count: scan.skipped_files,
        });
    }
    Ok(loaded)
}

/// Where each frame goes, decided from headers alone.
struct Plan {
    geometry: Geometry,
    /// For each slice `k`: (index into headers, frame index), or `None` when missing.
    slots: Vec<Option<(usize, usize)>>,
    warnings: Vec<LoadWarning>,
}

fn plan_volume(path: &Path, headers: &[&FileHeader]) -> Result<Plan, LoadError> {
    let err = |p| LoadError::inconsistent(path, p);
    // All frames of all files.
    let mut frames: Vec<(usize, usize, &FrameInfo)> = Vec::new();
    for (h_index, h) in headers.iter().enumerate() {
        if h.samples_per_pixel != 1 {
            return Err(err(SeriesProblem::NotGreyscale));
        }
        for (f, info) in h.frames.iter().enumerate() {
            frames.push((h_index, f, info));
        }
    }
    let first = headers[0];
    let (nx, ny) = (first.columns, first.rows);
    if nx == 0 || ny == 0 {
        return Err(LoadError::corrupt(
            path,
            FORMAT,
            "the image has no rows or columns",
        ));
    }
    let mut sizes: Vec<(usize, usize)> = headers.iter().map(|h| (h.columns, h.rows)).collect();
    sizes.sort();
    sizes.dedup();
    if sizes.len() > 1 {
        return Err(err(SeriesProblem::MixedSizes { sizes }));
    }
    let total = nx as u64 * ny as u64 * frames.len() as u64;
    if total > MAX_VOXELS {
        return Err(LoadError::TooLarge {
            path: path.into(),
            voxels: total,
            limit: MAX_VOXELS,
        });
    }

    // Orientation and pixel spacing: required to place slices, identical for all.
    let single = frames.len() == 1;
    let orientation = match frames[0].2.orientation {
        Some(o) => o,
        None if single => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        None => {
            return Err(err(SeriesProblem::MissingGeometry {
                attribute: "Image Orientation (Patient)",
            }));
        }
    };
    let mut distinct_orientations: Vec<[f64; 6]> = Vec::new();
    for (_, _, f) in &frames {
        let o = f.orientation.unwrap_or(orientation);
        if !distinct_orientations
            .iter()
            .any(|d| d.iter().zip(&o).all(|(a, b)| (a - b).abs() < 1e-3))
        {
            distinct_orientations.push(o);
        }
    }
    if distinct_orientations.len() > 1 {
        return Err(err(SeriesProblem::MixedOrientations {
            count: distinct_orientations.len(),
        }));
    }
    let row = unit([orientation[0], orientation[1], orientation[2]]);
    let col = unit([orientation[3], orientation[4], orientation[5]]);
    let (Some(row), Some(col)) = (row, col) else {
        return Err(LoadError::corrupt(
            path,
            FORMAT,
            "the image orientation is not a direction",
        ));
    };
    let normal = cross(row, col);
    if norm(normal) < 0.5 {
        return Err(LoadError::corrupt(
            path,
            FORMAT,
            "the image orientation has parallel axes",
        ));
    }
    let pixel_spacing = frames[0].2.pixel_spacing.unwrap_or([1.0, 1.0]);
    if pixel_spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(LoadError::corrupt(
            path,
            FORMAT,
            "the pixel spacing is not positive",
        ));
    }
    for (_, _, f) in &frames {
        let s = f.pixel_spacing.unwrap_or(pixel_spacing);
        if s.iter()
            .zip(&pixel_spacing)
            .any(|(a, b)| (a - b).abs() > 1e-3 * b.max(1.0))
        {
            return Err(err(SeriesProblem::MixedPixelSpacing));
        }
    }

    // Positions along the normal.
    let mut placed: Vec<(f64, [f64; 3], usize, usize)> = Vec::with_capacity(frames.len());
    for (h, f, info) in &frames {
        let p = match info.position {
            Some(p) => p,
            None if single => [0.0; 3],
            None => {
                return Err(err(SeriesProblem::MissingGeometry {
                    attribute: "Image Position (Patient)",
                }));
            }
        };
        placed.push((dot(p, normal), p, *h, *f));
    }
    placed.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut warnings = Vec::new();
    let n = placed.len();
    let (slots, spacing_k, direction_k) = if n == 1 {
        let s = frames[0]
            .2
            .spacing_between_slices
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0);
        (vec![0usize], s, normal)
    } else {
        let gaps: Vec<f64> = placed.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let duplicates = gaps.iter().filter(|g| **g < 1e-3).count();
        if duplicates > 0 {
            return Err(err(SeriesProblem::DuplicatePositions { duplicates }));
        }
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let min_gap = sorted[0];
        let max_gap = sorted[sorted.len() - 1];
        let irregular = || {
            err(SeriesProblem::IrregularSpacing {
                min_mm: min_gap,
                max_mm: max_gap,
            })
        };
        // Slot of each slice on a grid with the median gap.
        let d0 = placed[0].0;
        let slots: Vec<usize> = placed
            .iter()
            .map(|p| ((p.0 - d0) / median).round() as usize)
            .collect();
        let last = *slots.last().unwrap_or(&0);
        if slots.windows(2).any(|w| w[1] == w[0]) {
            return Err(irregular());
        }
        let missing = last + 1 - n;
        if missing > n {
            return Err(irregular());
        }
        // Refine the spacing over the whole stack and measure how far slices sit from
        // their slots.
        let span = placed[n - 1].0 - d0;
        let step = span / last as f64;
        let worst = placed
            .iter()
            .zip(&slots)
            .map(|(p, &s)| ((p.0 - d0) - s as f64 * step).abs())
            .fold(0.0, f64::max);
        if worst > 0.25 * step {
            return Err(irregular());
        }
        if worst > 0.01 * step.max(0.1) {
            warnings.push(LoadWarning::IrregularSpacing {
                min_mm: min_gap,
                max_mm: max_gap,
                used_mm: step,
            });
        }
        if missing > 0 {
            warnings.push(LoadWarning::MissingSlices {
                count: missing,
                spacing_mm: step,
            });
        }
        // Stacking direction: from the first to the last position.
        let p0 = placed[0].1;
        let pl = placed[n - 1].1;
        let along = [pl[0] - p0[0], pl[1] - p0[1], pl[2] - p0[2]];
        let length = norm(along);
        let direction = [along[0] / length, along[1] / length, along[2] / length];
        let cos = dot(direction, normal).clamp(-1.0, 1.0);
        let degrees = cos.acos().to_degrees();
        if degrees > 0.5 {
            warnings.push(LoadWarning::GantryTilt { degrees });
        }
        // Every slice must lie on the stacking line (no sideways shifts).
        let spacing_k = length / last as f64;
        let tol = 0.25 * pixel_spacing[0].min(pixel_spacing[1]).max(0.01);
        for (p, &s) in placed.iter().zip(&slots) {
            let expect = [
                p0[0] + direction[0] * spacing_k * s as f64,
                p0[1] + direction[1] * spacing_k * s as f64,
                p0[2] + direction[2] * spacing_k * s as f64,
            ];
            let off = norm([p.1[0] - expect[0], p.1[1] - expect[1], p.1[2] - expect[2]]);
            if off > tol.max(0.25 * step) {
                return Err(irregular());
            }
        }
        (slots, spacing_k, direction)
    };
    let nz = slots.last().map_or(1, |l| l + 1);
    let mut slot_sources = vec![None; nz];
    for (p, &s) in placed.iter().zip(&slots) {
        slot_sources[s] = Some((p.2, p.3));
    }
    let geometry = Geometry {
        dims: [nx, ny, nz],
        // Pixel Spacing is (row spacing, column spacing): i steps along a row.
        spacing_mm: [pixel_spacing[1], pixel_spacing[0], spacing_k],
        origin_mm: placed[0].1,
        direction: [row, col, direction_k],
    };
    geometry
        .validate()
        .map_err(|e| LoadError::corrupt(path, FORMAT, e.to_string()))?;
    Ok(Plan {
        geometry,
        slots: slot_sources,
        warnings,
    })
}

/// Decodes the frames of one object into their slots.
fn fill_from_object(
    obj: &DefaultDicomObject,
    header_index: usize,
    header: &FileHeader,
    plan: &Plan,
    voxels: &mut [f32],
    path: &Path,
    file_bytes: u64,
) -> Result<(), LoadError> {
    let [nx, ny, _] = plan.geometry.dims;
    let frame_len = nx * ny;
    let targets: Vec<(usize, usize)> = plan
        .slots
        .iter()
        .enumerate()
        .filter_map(|(k, slot)| match slot {
            Some((h, f)) if *h == header_index => Some((k, *f)),
            _ => None,
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }

    let bits_allocated = int(obj, tags::BITS_ALLOCATED).unwrap_or(0);
    let bits_stored = int(obj, tags::BITS_STORED)
        .unwrap_or(bits_allocated)
        .clamp(1, 16) as u32;
    let signed = int(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    if !matches!(bits_allocated, 8 | 16) {
        return Err(LoadError::unsupported(
            path,
            format!("{bits_allocated}-bit pixel data (8 and 16 bits are supported)"),
        ));
    }
    let photometric = text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if !photometric.is_empty() && !photometric.starts_with("MONOCHROME") {
        return Err(LoadError::inconsistent(path, SeriesProblem::NotGreyscale));
    }
    let bytes_per_sample = (bits_allocated / 8) as u64;
    let declared_frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u64;
    let needed = frame_len as u64 * declared_frames * bytes_per_sample;
    if frame_len as u64 * declared_frames > MAX_VOXELS {
        return Err(LoadError::TooLarge {
            path: path.into(),
            voxels: frame_len as u64 * declared_frames,
            limit: MAX_VOXELS,
        });
    }
    let pixel = obj
        .get(tags::PIXEL_DATA)
        .ok_or(LoadError::NoPixelData { path: path.into() })?;
    if let Some(fragments) = pixel.fragments() {
        let compressed: u64 = fragments.iter().map(|f| f.len() as u64).sum();
        // Every frame is encoded in at least one fragment.
        if (fragments.len() as u64) < declared_frames {
            return Err(LoadError::corrupt(
                path,
                FORMAT,
                format!(
                    "the compressed pixel data holds {} fragments for {declared_frames} frames",
                    fragments.len()
                ),
            ));
        }
        if needed > MIN_DECODE_ALLOWANCE.max(compressed.saturating_mul(MAX_COMPRESSION_RATIO)) {
            return Err(LoadError::corrupt(
                path,
                FORMAT,
                format!(
                    "{compressed} bytes of compressed pixels cannot hold a {nx} × {ny} × {declared_frames} image"
                ),
            ));
        }
    } else {
        let present = pixel.to_bytes().map(|b| b.len() as u64).unwrap_or(0);
        if present < needed {
            return Err(LoadError::Truncated {
                path: path.into(),
                expected_bytes: needed,
                actual_bytes: present.min(file_bytes),
            });
        }
    }

    if let Some(fragments) = pixel.fragments() {
        let expected = codec_check::Expected {
            rows: ny,
            columns: nx,
            samples: 1,
            bits_allocated: bits_allocated as usize,
            frames: declared_frames,
        };
        codec_check::check(&header.transfer_syntax, fragments, expected)
            .map_err(|reason| LoadError::corrupt(path, FORMAT, reason))?;
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| obj.decode_pixel_data()));
    let decoded = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            let msg = first_line(&e.to_string());
            return Err(if msg.to_lowercase().contains("unsupported") {
                LoadError::unsupported(
                    path,
                    format!(
                        "its compression ({}): {msg}",
                        transfer_syntax_name(&header.transfer_syntax)
                    ),
                )
            } else {
                LoadError::corrupt(
                    path,
                    FORMAT,
                    format!("the pixel data cannot be decoded: {msg}"),
                )
            });
        }
        Err(_) => {
            return Err(LoadError::corrupt(
                path,
                FORMAT,
                "the pixel data decoder failed on it",
            ));
        }
    };
    let mask: u32 = if bits_stored >= 32 {
        u32::MAX
    } else {
        (1u32 << bits_stored) - 1
    };
    let sign_bit = 1u32 << (bits_stored - 1);
    let convert = |raw: u32| -> f64 {
        let v = raw & mask;
        if signed && v & sign_bit != 0 {
            v as i64 as f64 - (mask as i64 + 1) as f64
        } else {
            v as f64
        }
    };
    for (k, f) in targets {
        let data = decoded.frame_data(f as u32).map_err(|_| {
            LoadError::corrupt(
                path,
                FORMAT,
                format!("frame {} is missing from the pixel data", f + 1),
            )
        })?;
        let info = &header.frames[f];
        let out = &mut voxels[k * frame_len..(k + 1) * frame_len];
        if bits_allocated == 8 {
            if data.len() < frame_len {
                return Err(LoadError::corrupt(
                    path,
                    FORMAT,
                    "a frame is shorter than the image size",
                ));
            }
            for (o, &b) in out.iter_mut().zip(data) {
                *o = (convert(b as u32) * info.slope + info.intercept) as f32;
            }
        } else {
            if data.len() < 2 * frame_len {
                return Err(LoadError::corrupt(
                    path,
                    FORMAT,
                    "a frame is shorter than the image size",
                ));
            }
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                let raw = u16::from_ne_bytes([b[0], b[1]]) as u32;
                *o = (convert(raw) * info.slope + info.intercept) as f32;
            }
        }
    }
    Ok(())
}

fn finish(
    plan: Plan,
    mut voxels: Vec<f32>,
    headers: &[&FileHeader],
    path: &Path,
) -> Result<LoadedVolume, LoadError> {
    let [nx, ny, _] = plan.geometry.dims;
    let frame_len = nx * ny;
    // Fill missing slices with the lowest value present (air for CT).
    if plan.slots.iter().any(Option::is_none) {
        let mut lo = f32::INFINITY;
        for (k, s) in plan.slots.iter().enumerate() {
            if s.is_some() {
                for v in &voxels[k * frame_len..(k + 1) * frame_len] {
                    lo = lo.min(*v);
                }
            }
        }
        for (k, s) in plan.slots.iter().enumerate() {
            if s.is_none() {
                voxels[k * frame_len..(k + 1) * frame_len].fill(lo);
            }
        }
    }
    let first = headers[0];
    let slices = plan
        .slots
        .iter()
        .map(|s| {
            s.map(|(h, f)| {
                let h = headers[h];
                SliceReference {
                    sop_class_uid: h.sop_class_uid.clone(),
                    sop_instance_uid: h.sop_instance_uid.clone(),
                    frame_number: h.multi_frame.then_some(f as u32 + 1),
                }
            })
        })
        .collect();
    let source = DicomSource {
        study_instance_uid: first.study_uid.clone(),
        series_instance_uid: first.series_uid.clone(),
        frame_of_reference_uid: first.frame_of_reference_uid.clone(),
        modality: first.modality.clone(),
        series_description: first.series_description.clone(),
        transfer_syntax: first.transfer_syntax.clone(),
        slices,
        patient_study: first.patient_study.clone(),
    };
    let volume = Volume::new(
        plan.geometry,
        voxels,
        Modality::from_dicom_code(&first.modality),
    )
    .map_err(|e| LoadError::corrupt(path, FORMAT, e.to_string()))?;
    Ok(LoadedVolume {
        volume,
        source: VolumeSource::Dicom(Box::new(source)),
        warnings: plan.warnings,
    })
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn unit(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = norm(a);
    (n.is_finite() && n > 1e-6).then(|| [a[0] / n, a[1] / n, a[2] / n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom::core::value::{DataSetSequence, PrimitiveValue};
    use dicom::core::{DataElement, VR};
    use dicom::dictionary_std::uids;
    use dicom::object::FileMetaTableBuilder;

    fn put(o: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
        o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    }

    fn item_with(tag: Tag, vr: VR, v: &str) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tag, vr, v);
        o
    }

    fn seq(o: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
        o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
    }

    /// A 3 × 2 CT image object with 16-bit signed native pixels.
    fn ct_object(sop: &str, pixels: &[i16], frames: usize) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(
            &mut o,
            tags::SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.5.1.4.1.1.2",
        );
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop);
        put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4");
        put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4.5");
        put(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.3.4.6");
        put(&mut o, tags::MODALITY, VR::CS, "CT");
        put(&mut o, tags::PATIENT_NAME, VR::PN, "Doe^Jane");
        put(&mut o, tags::PATIENT_ID, VR::LO, "PID-4711");
        o.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(2u16),
        ));
        o.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(3u16),
        ));
        o.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        put(
            &mut o,
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2",
        );
        o.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(16u16),
        ));
        o.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(12u16),
        ));
        o.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(11u16),
        ));
        o.put(DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        if frames > 1 {
            put(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string());
        }
        let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U8(bytes.into()),
        ));
        o
    }

    fn write(dir: &Path, name: &str, o: InMemDicomObject, ts: &str) -> PathBuf {
        let file = o
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
            .unwrap();
        let p = dir.join(name);
        file.write_to_file(&p).unwrap();
        p
    }

    fn slice(dir: &Path, n: usize, z: f64, pixels: &[i16]) {
        let mut o = ct_object(&format!("1.2.3.4.5.{n}"), pixels, 1);
        put(
            &mut o,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("-10\\20\\{z}"),
        );
        put(
            &mut o,
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            "1\\0\\0\\0\\1\\0",
        );
        put(&mut o, tags::PIXEL_SPACING, VR::DS, "0.5\\0.25");
        put(&mut o, tags::RESCALE_SLOPE, VR::DS, "2");
        put(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
        let ts = if n.is_multiple_of(2) {
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        } else {
            uids::IMPLICIT_VR_LITTLE_ENDIAN
        };
        write(dir, &format!("s{n}.dcm"), o, ts);
    }

    #[test]
    fn slices_are_sorted_along_the_normal_with_rescale_and_12_bit_sign() {
        let dir = tempfile::tempdir().unwrap();
        // files written out of order; 0x0FFF is -1 in 12-bit two's complement, and the
        // bits above Bits Stored (0xF000) must be ignored
        slice(dir.path(), 0, 5.0, &[0, 1, 2, 3, 4, 0x0FFF]);
        slice(dir.path(), 1, -1.0, &[10, 11, 12, 13, 14, 15]);
        slice(dir.path(), 2, 2.0, &[20, 21, 22, 23, 24, 0x7000 | 25]);
        let v = open(dir.path()).unwrap();
        let g = v.volume.geometry();
        assert_eq!(g.dims, [3, 2, 3]);
        // Pixel Spacing is (rows, columns): i steps 0.25 mm, j steps 0.5 mm
        assert_eq!(g.spacing_mm, [0.25, 0.5, 3.0]);
        assert_eq!(g.origin_mm, [-10.0, 20.0, -1.0]);
        let hu = |x: f32| x * 2.0 - 1024.0;
        assert_eq!(v.volume.get([0, 0, 0]), Some(hu(10.0)));
        assert_eq!(v.volume.get([2, 1, 1]), Some(hu(25.0)));
        assert_eq!(v.volume.get([2, 1, 2]), Some(hu(-1.0)));
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        let src = v.source.dicom().unwrap();
        let order: Vec<&str> = src
            .slices
            .iter()
            .map(|s| s.as_ref().unwrap().sop_instance_uid.as_str())
            .collect();
        assert_eq!(order, ["1.2.3.4.5.1", "1.2.3.4.5.2", "1.2.3.4.5.0"]);
        assert_eq!(src.patient_study.len(), 2);
        assert!(!format!("{v:?}").contains("Doe"));
        assert!(!format!("{v:?}").contains("4711"));
    }

    #[test]
    fn an_enhanced_multi_frame_object_builds_a_volume_from_its_functional_groups() {
        let dir = tempfile::tempdir().unwrap();
        // three frames stored top-down (z = 4, 2, 0), per-frame rescale intercepts
        let pixels: Vec<i16> = (0..18).collect();
        let mut o = ct_object("1.2.3.9", &pixels, 3);
        let mut shared = InMemDicomObject::new_empty();
        seq(
            &mut shared,
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item_with(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\1\\0",
            )],
        );
        seq(
            &mut shared,
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item_with(tags::PIXEL_SPACING, VR::DS, "1\\1")],
        );
        seq(
            &mut o,
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![shared],
        );
        let frames = [4.0, 2.0, 0.0]
            .iter()
            .enumerate()
            .map(|(f, z)| {
                let mut g = InMemDicomObject::new_empty();
                seq(
                    &mut g,
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item_with(
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        &format!("0\\0\\{z}"),
                    )],
                );
                let mut t = item_with(tags::RESCALE_SLOPE, VR::DS, "1");
                put(
                    &mut t,
                    tags::RESCALE_INTERCEPT,
                    VR::DS,
                    &format!("{}", -100 * f as i32),
                );
                seq(&mut g, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, vec![t]);
                g
            })
            .collect();
        seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames);
        let p = write(dir.path(), "mf.dcm", o, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        let v = open(&p).unwrap();
        let g = v.volume.geometry();
        assert_eq!(g.dims, [3, 2, 3]);
        assert_eq!(g.spacing_mm, [1.0, 1.0, 2.0]);
        assert_eq!(g.origin_mm, [0.0, 0.0, 0.0]);
        // k = 0 is the last frame (z = 0), intercept -200
        assert_eq!(v.volume.get([0, 0, 0]), Some(12.0 - 200.0));
        assert_eq!(v.volume.get([0, 0, 2]), Some(0.0));
        let src = v.source.dicom().unwrap();
        let frames: Vec<Option<u32>> = src
            .slices
            .iter()
            .map(|s| s.as_ref().unwrap().frame_number)
            .collect();
        assert_eq!(frames, [Some(3), Some(2), Some(1)]);
    }

    #[test]
    fn a_short_pixel_data_element_is_reported_as_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = ct_object("1.2.3.7", &[1, 2, 3], 1); // 3 pixels for a 3 × 2 image
        put(&mut o, tags::IMAGE_POSITION_PATIENT, VR::DS, "0\\0\\0");
        let p = write(dir.path(), "short.dcm", o, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        let e = open(&p).unwrap_err();
        assert!(
            matches!(
                e,
                LoadError::Truncated {
                    expected_bytes: 12,
                    actual_bytes: 6,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn mixed_image_sizes_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        slice(dir.path(), 0, 0.0, &[0; 6]);
        slice(dir.path(), 1, 1.0, &[0; 6]);
        let mut o = ct_object("1.2.3.4.5.9", &[0; 4], 1);
        o.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(2u16),
        ));
        put(&mut o, tags::IMAGE_POSITION_PATIENT, VR::DS, "-10\\20\\2");
        put(
            &mut o,
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            "1\\0\\0\\0\\1\\0",
        );
        write(dir.path(), "odd.dcm", o, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        let e = open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, LoadError::InconsistentSeries { problem: SeriesProblem::MixedSizes { sizes }, .. } if sizes.len() == 2),
            "{e:?}"
        );
    }

    #[test]
    fn a_tilted_stack_keeps_true_positions_and_warns() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..3 {
            let mut o = ct_object(&format!("1.2.3.8.{n}"), &[0; 6], 1);
            // stacked along z but shifted 0.5 mm in y per slice: a 14° tilt
            put(
                &mut o,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &format!("0\\{}\\{}", n as f64 * 0.5, n * 2),
            );
            put(
                &mut o,
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\1\\0",
            );
            put(&mut o, tags::PIXEL_SPACING, VR::DS, "1\\1");
            write(
                dir.path(),
                &format!("t{n}.dcm"),
                o,
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
            );
        }
        let v = open(dir.path()).unwrap();
        let g = v.volume.geometry();
        let p = g.patient_from_voxel([0.0, 0.0, 2.0]);
        assert!(
            (p[1] - 1.0).abs() < 1e-9 && (p[2] - 4.0).abs() < 1e-9,
            "{p:?}"
        );
        assert!(
            matches!(v.warnings[..], [LoadWarning::GantryTilt { degrees }] if (degrees - 14.04).abs() < 0.1),
            "{:?}",
            v.warnings
        );
    }
}
