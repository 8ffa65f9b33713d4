//! Building a [`Volume`] from the image files of one series: plan where every frame
//! goes from the headers alone, decode each file's frames into their slots, then fill
//! missing slices and record where each slice came from. The rules are in the
//! [module documentation](super).

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use dicom::dictionary_std::tags;
use dicom::object::DefaultDicomObject;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder};

use super::codec_check;
use super::header::{FORMAT, FileHeader, FrameInfo, PatientStudy, first_line, int, parse, text};
use super::series::transfer_syntax_name;
use crate::io::error::{LoadError, LoadWarning, SeriesProblem};
use crate::io::{LoadedVolume, VolumeSource};
use crate::volume::{Geometry, Modality, Volume};

/// The largest volume accepted, in voxels.
pub const MAX_VOXELS: u64 = 1 << 30;
/// Compressed pixel data may decode to at most this many times its size (plus
/// [`MIN_DECODE_ALLOWANCE`]); lossless codecs stay far below on real images.
const MAX_COMPRESSION_RATIO: u64 = 1000;
const MIN_DECODE_ALLOWANCE: u64 = 64 << 20;

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

/// Builds the volume of one series from its image files (`headers`, all of one
/// series); `bytes_of` gives each file's content, read from disk or already in memory.
/// Errors about the whole series name `path`; errors about one file name that file.
pub(super) fn build<'b>(
    path: &Path,
    headers: &[&FileHeader],
    mut bytes_of: impl FnMut(&FileHeader) -> Result<Cow<'b, [u8]>, LoadError>,
) -> Result<LoadedVolume, LoadError> {
    let plan = plan_volume(path, headers)?;
    let mut voxels = vec![0f32; plan.geometry.voxel_count()];
    for (index, h) in headers.iter().enumerate() {
        let bytes = bytes_of(h)?;
        let obj = parse(&bytes, &h.path, false)?;
        let file_bytes = bytes.len() as u64;
        fill_from_object(&obj, index, h, &plan, &mut voxels, &h.path, file_bytes)?;
    }
    fill_missing_slices(&plan, &mut voxels);
    let source = source_of(&plan, headers);
    let volume = Volume::new(
        plan.geometry,
        voxels,
        Modality::from_dicom_code(&headers[0].modality),
    )
    .map_err(|e| LoadError::corrupt(path, FORMAT, e.to_string()))?;
    Ok(LoadedVolume {
        volume,
        source: VolumeSource::Dicom(Box::new(source)),
        warnings: plan.warnings,
    })
}

// ---------------------------------------------------------------------------------
// Planning: where each frame goes, from the headers alone

/// Where each frame goes, decided from headers alone.
struct Plan {
    geometry: Geometry,
    /// For each slice `k`: (index into headers, frame index), or `None` when missing.
    slots: Vec<Option<(usize, usize)>>,
    warnings: Vec<LoadWarning>,
}

impl Plan {
    /// The slices that frames of file `file` fill: (slice `k`, frame index).
    fn slices_of_file(&self, file: usize) -> Vec<(usize, usize)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(k, slot)| match slot {
                Some((h, f)) if *h == file => Some((k, *f)),
                _ => None,
            })
            .collect()
    }

    /// Voxels in one slice.
    fn slice_len(&self) -> usize {
        let [nx, ny, _] = self.geometry.dims;
        nx * ny
    }
}

/// One frame of the series: its file (index into the headers), its index inside that
/// file, and what the headers say about it.
#[derive(Clone, Copy)]
struct Frame<'a> {
    file: usize,
    index: usize,
    info: &'a FrameInfo,
}

/// A frame placed in patient space.
struct Placed {
    /// Distance along the slice normal (the sort key).
    along_mm: f64,
    /// Image Position (Patient).
    position: [f64; 3],
    file: usize,
    index: usize,
}

/// Directions of the image rows and columns, and the slice normal (row × column).
struct SliceAxes {
    row: [f64; 3],
    col: [f64; 3],
    normal: [f64; 3],
}

/// How the placed frames stack up.
struct Stacking {
    /// Slot of each placed frame on an even grid (gaps are missing slices).
    slots: Vec<usize>,
    /// The grid step.
    spacing_mm: f64,
    /// From the first slice to the last: the normal, or oblique to it (gantry tilt).
    direction: [f64; 3],
    warnings: Vec<LoadWarning>,
}

/// Checks that the frames of `headers` form one even stack and decides the geometry
/// and the slice of every frame.
fn plan_volume(path: &Path, headers: &[&FileHeader]) -> Result<Plan, LoadError> {
    let frames = all_frames(path, headers)?;
    let axes = slice_axes(path, &frames)?;
    let pixel_spacing = common_pixel_spacing(path, &frames)?;
    let placed = place_along(path, &frames, axes.normal)?;
    let stacking = if placed.len() == 1 {
        single_slice(frames[0].info, axes.normal)
    } else {
        stack_evenly(path, &placed, pixel_spacing, axes.normal)?
    };
    let nz = stacking.slots.last().map_or(1, |l| l + 1);
    let mut slots = vec![None; nz];
    for (p, &s) in placed.iter().zip(&stacking.slots) {
        slots[s] = Some((p.file, p.index));
    }
    let geometry = Geometry {
        dims: [headers[0].columns, headers[0].rows, nz],
        // Pixel Spacing is (row spacing, column spacing): i steps along a row.
        spacing_mm: [pixel_spacing[1], pixel_spacing[0], stacking.spacing_mm],
        origin_mm: placed[0].position,
        direction: [axes.row, axes.col, stacking.direction],
    };
    geometry
        .validate()
        .map_err(|e| LoadError::corrupt(path, FORMAT, e.to_string()))?;
    Ok(Plan {
        geometry,
        slots,
        warnings: stacking.warnings,
    })
}

/// Every frame of every file, once the images are known to be greyscale, of one size
/// and not too large together.
fn all_frames<'a>(path: &Path, headers: &[&'a FileHeader]) -> Result<Vec<Frame<'a>>, LoadError> {
    let mut frames = Vec::new();
    for (file, h) in headers.iter().enumerate() {
        if h.samples_per_pixel != 1 {
            return Err(LoadError::inconsistent(path, SeriesProblem::NotGreyscale));
        }
        frames.extend(
            h.frames
                .iter()
                .enumerate()
                .map(|(index, info)| Frame { file, index, info }),
        );
    }
    let (nx, ny) = (headers[0].columns, headers[0].rows);
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
        return Err(LoadError::inconsistent(
            path,
            SeriesProblem::MixedSizes { sizes },
        ));
    }
    let total = nx as u64 * ny as u64 * frames.len() as u64;
    if total > MAX_VOXELS {
        return Err(LoadError::TooLarge {
            path: path.into(),
            voxels: total,
            limit: MAX_VOXELS,
        });
    }
    Ok(frames)
}

/// The one orientation all frames share (required to place slices; a lone image
/// without one is taken as axial).
fn slice_axes(path: &Path, frames: &[Frame]) -> Result<SliceAxes, LoadError> {
    let orientation = match frames[0].info.orientation {
        Some(o) => o,
        None if frames.len() == 1 => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        None => {
            return Err(LoadError::inconsistent(
                path,
                SeriesProblem::MissingGeometry {
                    attribute: "Image Orientation (Patient)",
                },
            ));
        }
    };
    let mut distinct_orientations: Vec<[f64; 6]> = Vec::new();
    for f in frames {
        let o = f.info.orientation.unwrap_or(orientation);
        if !distinct_orientations
            .iter()
            .any(|d| d.iter().zip(&o).all(|(a, b)| (a - b).abs() < 1e-3))
        {
            distinct_orientations.push(o);
        }
    }
    if distinct_orientations.len() > 1 {
        return Err(LoadError::inconsistent(
            path,
            SeriesProblem::MixedOrientations {
                count: distinct_orientations.len(),
            },
        ));
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
    Ok(SliceAxes { row, col, normal })
}

/// The one pixel spacing all frames share (1 mm when none is given).
fn common_pixel_spacing(path: &Path, frames: &[Frame]) -> Result<[f64; 2], LoadError> {
    let pixel_spacing = frames[0].info.pixel_spacing.unwrap_or([1.0, 1.0]);
    if pixel_spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(LoadError::corrupt(
            path,
            FORMAT,
            "the pixel spacing is not positive",
        ));
    }
    for f in frames {
        let s = f.info.pixel_spacing.unwrap_or(pixel_spacing);
        if s.iter()
            .zip(&pixel_spacing)
            .any(|(a, b)| (a - b).abs() > 1e-3 * b.max(1.0))
        {
            return Err(LoadError::inconsistent(
                path,
                SeriesProblem::MixedPixelSpacing,
            ));
        }
    }
    Ok(pixel_spacing)
}

/// The frames sorted by their position along the slice normal.
fn place_along(path: &Path, frames: &[Frame], normal: [f64; 3]) -> Result<Vec<Placed>, LoadError> {
    let mut placed = Vec::with_capacity(frames.len());
    for f in frames {
        let position = match f.info.position {
            Some(p) => p,
            None if frames.len() == 1 => [0.0; 3],
            None => {
                return Err(LoadError::inconsistent(
                    path,
                    SeriesProblem::MissingGeometry {
                        attribute: "Image Position (Patient)",
                    },
                ));
            }
        };
        placed.push(Placed {
            along_mm: dot(position, normal),
            position,
            file: f.file,
            index: f.index,
        });
    }
    placed.sort_by(|a, b| a.along_mm.total_cmp(&b.along_mm));
    Ok(placed)
}

/// A lone slice: its thickness from Spacing Between Slices or Slice Thickness (else
/// 1 mm), along the normal.
fn single_slice(frame: &FrameInfo, normal: [f64; 3]) -> Stacking {
    let spacing_mm = frame
        .spacing_between_slices
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    Stacking {
        slots: vec![0],
        spacing_mm,
        direction: normal,
        warnings: Vec::new(),
    }
}

/// Puts two or more placed frames on an even grid: missing slices (gaps of whole
/// steps) and slightly irregular gaps are warnings, anything else an error; the
/// stacking direction runs from the first position to the last.
fn stack_evenly(
    path: &Path,
    placed: &[Placed],
    pixel_spacing: [f64; 2],
    normal: [f64; 3],
) -> Result<Stacking, LoadError> {
    let n = placed.len();
    let gaps: Vec<f64> = placed
        .windows(2)
        .map(|w| w[1].along_mm - w[0].along_mm)
        .collect();
    let duplicates = gaps.iter().filter(|g| **g < 1e-3).count();
    if duplicates > 0 {
        return Err(LoadError::inconsistent(
            path,
            SeriesProblem::DuplicatePositions { duplicates },
        ));
    }
    let mut sorted = gaps;
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let min_gap = sorted[0];
    let max_gap = sorted[sorted.len() - 1];
    let irregular = || {
        LoadError::inconsistent(
            path,
            SeriesProblem::IrregularSpacing {
                min_mm: min_gap,
                max_mm: max_gap,
            },
        )
    };
    // Slot of each slice on a grid with the median gap.
    let d0 = placed[0].along_mm;
    let slots: Vec<usize> = placed
        .iter()
        .map(|p| ((p.along_mm - d0) / median).round() as usize)
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
    let step = (placed[n - 1].along_mm - d0) / last as f64;
    let worst = placed
        .iter()
        .zip(&slots)
        .map(|(p, &s)| ((p.along_mm - d0) - s as f64 * step).abs())
        .fold(0.0, f64::max);
    if worst > 0.25 * step {
        return Err(irregular());
    }
    let mut warnings = Vec::new();
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
    let p0 = placed[0].position;
    let pl = placed[n - 1].position;
    let along = [pl[0] - p0[0], pl[1] - p0[1], pl[2] - p0[2]];
    let length = norm(along);
    let direction = [along[0] / length, along[1] / length, along[2] / length];
    let degrees = dot(direction, normal).clamp(-1.0, 1.0).acos().to_degrees();
    if degrees > 0.5 {
        warnings.push(LoadWarning::GantryTilt { degrees });
    }
    // Every slice must lie on the stacking line (no sideways shifts).
    let spacing_mm = length / last as f64;
    let tol = 0.25 * pixel_spacing[0].min(pixel_spacing[1]).max(0.01);
    for (p, &s) in placed.iter().zip(&slots) {
        let expect = [0, 1, 2].map(|a| p0[a] + direction[a] * spacing_mm * s as f64);
        let off = norm([0, 1, 2].map(|a| p.position[a] - expect[a]));
        if off > tol.max(0.25 * step) {
            return Err(irregular());
        }
    }
    Ok(Stacking {
        slots,
        spacing_mm,
        direction,
        warnings,
    })
}

// ---------------------------------------------------------------------------------
// Decoding: each file's frames into their slots

/// How stored pixel values become numbers: 8 or 16 bits allocated, the low
/// `bits_stored` of them used, two's complement when signed.
struct PixelFormat {
    bits_allocated: i64,
    mask: u32,
    sign_bit: u32,
    signed: bool,
}

impl PixelFormat {
    /// Reads and checks the format of a greyscale image.
    fn of(obj: &DefaultDicomObject, path: &Path) -> Result<Self, LoadError> {
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
        Ok(Self {
            bits_allocated,
            mask: if bits_stored >= 32 {
                u32::MAX
            } else {
                (1u32 << bits_stored) - 1
            },
            sign_bit: 1u32 << (bits_stored - 1),
            signed,
        })
    }

    fn bytes_per_sample(&self) -> u64 {
        (self.bits_allocated / 8) as u64
    }

    /// A stored sample as a number: masked to Bits Stored, sign-extended when signed.
    fn value(&self, raw: u32) -> f64 {
        let v = raw & self.mask;
        if self.signed && v & self.sign_bit != 0 {
            v as i64 as f64 - (self.mask as i64 + 1) as f64
        } else {
            v as f64
        }
    }

    /// Writes one decoded frame, rescaled by its slope and intercept, into `out`.
    fn rescale_frame(
        &self,
        data: &[u8],
        info: &FrameInfo,
        out: &mut [f32],
        path: &Path,
    ) -> Result<(), LoadError> {
        let short = || LoadError::corrupt(path, FORMAT, "a frame is shorter than the image size");
        let rescale = |raw: u32| (self.value(raw) * info.slope + info.intercept) as f32;
        if self.bits_allocated == 8 {
            if data.len() < out.len() {
                return Err(short());
            }
            for (o, &b) in out.iter_mut().zip(data) {
                *o = rescale(b as u32);
            }
        } else {
            if data.len() < 2 * out.len() {
                return Err(short());
            }
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = rescale(u16::from_ne_bytes([b[0], b[1]]) as u32);
            }
        }
        Ok(())
    }
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
    let targets = plan.slices_of_file(header_index);
    if targets.is_empty() {
        return Ok(());
    }
    let format = PixelFormat::of(obj, path)?;
    check_pixel_data(obj, header, &format, plan, path, file_bytes)?;
    let decoded = decode(obj, header, path)?;
    let frame_len = plan.slice_len();
    for (k, f) in targets {
        let data = decoded.frame_data(f as u32).map_err(|_| {
            LoadError::corrupt(
                path,
                FORMAT,
                format!("frame {} is missing from the pixel data", f + 1),
            )
        })?;
        let out = &mut voxels[k * frame_len..(k + 1) * frame_len];
        format.rescale_frame(data, &header.frames[f], out, path)?;
    }
    Ok(())
}

/// Checks, before any decoder runs, that the pixel data can hold the frames it
/// declares: native data must be long enough; compressed data needs a fragment per
/// frame, a plausible compression ratio and codec streams that announce the image's
/// size.
fn check_pixel_data(
    obj: &DefaultDicomObject,
    header: &FileHeader,
    format: &PixelFormat,
    plan: &Plan,
    path: &Path,
    file_bytes: u64,
) -> Result<(), LoadError> {
    let [nx, ny, _] = plan.geometry.dims;
    let frame_len = plan.slice_len() as u64;
    let declared_frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u64;
    let needed = frame_len * declared_frames * format.bytes_per_sample();
    if frame_len * declared_frames > MAX_VOXELS {
        return Err(LoadError::TooLarge {
            path: path.into(),
            voxels: frame_len * declared_frames,
            limit: MAX_VOXELS,
        });
    }
    let pixel = obj
        .get(tags::PIXEL_DATA)
        .ok_or(LoadError::NoPixelData { path: path.into() })?;
    let Some(fragments) = pixel.fragments() else {
        let present = pixel.to_bytes().map(|b| b.len() as u64).unwrap_or(0);
        if present < needed {
            return Err(LoadError::Truncated {
                path: path.into(),
                expected_bytes: needed,
                actual_bytes: present.min(file_bytes),
            });
        }
        return Ok(());
    };
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
    let expected = codec_check::Expected {
        rows: ny,
        columns: nx,
        samples: 1,
        bits_allocated: format.bits_allocated as usize,
        frames: declared_frames,
    };
    codec_check::check(&header.transfer_syntax, fragments, expected)
        .map_err(|reason| LoadError::corrupt(path, FORMAT, reason))
}

/// Runs the pixel data decoder, turning its failures (and panics) into load errors.
fn decode<'o>(
    obj: &'o DefaultDicomObject,
    header: &FileHeader,
    path: &Path,
) -> Result<DecodedPixelData<'o>, LoadError> {
    match catch_unwind(AssertUnwindSafe(|| obj.decode_pixel_data())) {
        Ok(Ok(decoded)) => Ok(decoded),
        Ok(Err(e)) => {
            let msg = first_line(&e.to_string());
            Err(if msg.to_lowercase().contains("unsupported") {
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
            })
        }
        Err(_) => Err(LoadError::corrupt(
            path,
            FORMAT,
            "the pixel data decoder failed on it",
        )),
    }
}

// ---------------------------------------------------------------------------------
// Finishing: missing slices and where each slice came from

/// Fills missing slices with the lowest value present (air for CT).
fn fill_missing_slices(plan: &Plan, voxels: &mut [f32]) {
    if plan.slots.iter().all(Option::is_some) {
        return;
    }
    let frame_len = plan.slice_len();
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

/// What a DICOM SEG needs to reference the series: its UIDs and the source image of
/// every slice.
fn source_of(plan: &Plan, headers: &[&FileHeader]) -> DicomSource {
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
    DicomSource {
        study_instance_uid: first.study_uid.clone(),
        series_instance_uid: first.series_uid.clone(),
        frame_of_reference_uid: first.frame_of_reference_uid.clone(),
        modality: first.modality.clone(),
        series_description: first.series_description.clone(),
        transfer_syntax: first.transfer_syntax.clone(),
        slices,
        patient_study: first.patient_study.clone(),
    }
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
