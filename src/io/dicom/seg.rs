//! DICOM Segmentation (SEG) objects: writing label maps as binary SEG and reading SEG
//! back onto the volume it segments.
//!
//! # Writing
//!
//! One segment per label, one frame per (segment, slice) that holds at least one voxel
//! (empty frames are omitted, as the standard allows), frames ordered by segment and
//! then slice. Frame geometry (Plane Orientation/Position, Pixel Measures) is the
//! volume's geometry, so the SEG lies on the image grid. When the volume came from
//! DICOM the SEG joins its study (patient and study attributes copied, same Frame of
//! Reference) and every frame references its source image; otherwise a new study and
//! frame of reference are created.
//!
//! # Reading
//!
//! Binary, fractional (thresholded at half the maximum) and label-map SEG are read.
//! Every frame is placed on the reference grid through its own Image Position and
//! orientation: the frame's pixel steps must be whole voxel steps of the reference grid
//! (any axis order or direction), otherwise [`LoadError::NotOnGrid`]. Overlapping
//! segments are resolved in favour of the higher segment number and counted.

use std::path::Path;

use dicom::core::value::{DataSetSequence, PrimitiveValue};
use dicom::core::{DataElement, Tag, VR};
use dicom::dictionary_std::{tags, uids};
use dicom::object::{FileMetaTableBuilder, InMemDicomObject};

use super::header::{
    FORMAT as DICOM_FORMAT, SEGMENTATION_SOP_CLASS, floats, int, items, parse, read_if_dicom, text,
};
use super::stack::DicomSource;
use crate::io::error::{LoadError, SaveError};
use crate::volume::{Geometry, LabelMap, LabelValue};

const FORMAT: &str = "DICOM SEG";
const IMPLEMENTATION_CLASS_UID: &str = "2.25.163386629532858937093745208839711306521";
const IMPLEMENTATION_VERSION: &str = "ICSEG_0_1";

/// One structure to store: which label it is in the map, its name and display colour.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentSpec {
    /// The label value in the [`LabelMap`].
    pub label: LabelValue,
    /// Segment Label, e.g. "Liver".
    pub name: String,
    /// Display colour (sRGB).
    pub color_rgb: [u8; 3],
}

/// Series-level choices for a written SEG.
#[derive(Clone, Debug, PartialEq)]
pub struct SegWriteOptions {
    /// Series Description of the new SEG series.
    pub series_description: String,
    /// Series Number of the new SEG series.
    pub series_number: i32,
    /// Content Label (upper case, no spaces, at most 16 characters).
    pub content_label: String,
}

impl Default for SegWriteOptions {
    fn default() -> Self {
        Self {
            series_description: "ICSeg segmentation".into(),
            series_number: 300,
            content_label: "ICSEG".into(),
        }
    }
}

/// A segment as read from a SEG.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentInfo {
    /// Segment Number (also its value in the returned label map).
    pub number: LabelValue,
    /// Segment Label.
    pub name: String,
    /// Recommended display colour converted to sRGB, when given.
    pub color_rgb: Option<[u8; 3]>,
}

/// A SEG read onto a reference grid.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Each voxel holds the number of its segment (0 = none).
    pub labels: LabelMap,
    /// The segments described in the file, by number.
    pub segments: Vec<SegmentInfo>,
    /// Voxels claimed by more than one segment (the higher number was kept).
    pub overlapping_voxels: usize,
    /// Series Instance UID of the image series the SEG references, when it names one.
    pub referenced_series_uid: Option<String>,
}

// ---------------------------------------------------------------------------------
// Writing

/// Writes `labels` as a binary DICOM SEG with one segment per entry of `segments`.
/// `source` is the DICOM series the labelled volume came from (see
/// [`crate::io::VolumeSource::dicom`]); with `None` a new study is created.
pub fn write_seg(
    path: &Path,
    labels: &LabelMap,
    segments: &[SegmentSpec],
    source: Option<&DicomSource>,
    options: &SegWriteOptions,
) -> Result<(), SaveError> {
    let bytes =
        encode_seg(labels, segments, source, options).map_err(|reason| SaveError::Unsupported {
            path: path.into(),
            reason,
        })?;
    crate::io::write_atomic(path, &bytes).map_err(|e| SaveError::io(path, e))
}

fn el(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

fn str_el(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn obj(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    obj(vec![
        str_el(tags::CODE_VALUE, VR::SH, value),
        str_el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        str_el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn ds(v: f64) -> String {
    // DS holds at most 16 characters.
    let mut s = format!("{v:.10}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s.len() > 16 {
        s = format!("{v:.6e}");
    }
    if s == "-0" { "0".into() } else { s }
}

fn ds_multi(v: &[f64]) -> String {
    v.iter().map(|x| ds(*x)).collect::<Vec<_>>().join("\\")
}

/// A fresh UID under the `2.25` root (a random 122-bit UUID as a decimal integer).
pub fn new_uid() -> String {
    let mut n: u128 = rand::random();
    // UUID version 4 / variant bits, as ISO/IEC 9834-8 asks for 2.25 UIDs.
    n = (n & !(0xF << 76)) | (0x4 << 76);
    n = (n & !(0x3 << 62)) | (0x2 << 62);
    format!("2.25.{n}")
}

/// Current UTC date and time as DICOM DA and TM strings.
fn now_da_tm() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, (rem / 60) % 60, rem % 60),
    )
}

/// sRGB (0–255) to DICOM's scaled CIELab (0–65535), via D65 XYZ.
pub fn rgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let l = 116.0 * fy - 16.0;
    let a = 500.0 * (fx - fy);
    let bb = 200.0 * (fy - fz);
    [
        (l * 65535.0 / 100.0).round().clamp(0.0, 65535.0) as u16,
        ((a + 128.0) * 65535.0 / 255.0).round().clamp(0.0, 65535.0) as u16,
        ((bb + 128.0) * 65535.0 / 255.0).round().clamp(0.0, 65535.0) as u16,
    ]
}

/// DICOM scaled CIELab back to sRGB.
pub fn dicom_lab_to_rgb(lab: [u16; 3]) -> [u8; 3] {
    let l = lab[0] as f64 * 100.0 / 65535.0;
    let a = lab[1] as f64 * 255.0 / 65535.0 - 128.0;
    let b = lab[2] as f64 * 255.0 / 65535.0 - 128.0;
    let fy = (l + 16.0) / 116.0;
    let fx = fy + a / 500.0;
    let fz = fy - b / 200.0;
    let inv = |t: f64| {
        if t.powi(3) > 216.0 / 24389.0 {
            t.powi(3)
        } else {
            (116.0 * t - 16.0) * 27.0 / 24389.0
        }
    };
    let (x, y, z) = (inv(fx) * 0.95047, inv(fy), inv(fz) * 1.08883);
    let r = 3.2406 * x - 1.5372 * y - 0.4986 * z;
    let g = -0.9689 * x + 1.8758 * y + 0.0415 * z;
    let bl = 0.0557 * x - 0.2040 * y + 1.0570 * z;
    let gamma = |c: f64| {
        let c = if c <= 0.0031308 {
            12.92 * c
        } else {
            1.055 * c.powf(1.0 / 2.4) - 0.055
        };
        (c * 255.0).round().clamp(0.0, 255.0) as u8
    };
    [gamma(r), gamma(g), gamma(bl)]
}

/// Builds the SEG file bytes (preamble, meta group, data set).
pub fn encode_seg(
    labels: &LabelMap,
    segments: &[SegmentSpec],
    source: Option<&DicomSource>,
    options: &SegWriteOptions,
) -> Result<Vec<u8>, String> {
    let g = labels.geometry();
    let [nx, ny, nz] = g.dims;
    if segments.is_empty() {
        return Err("there is no segment to save".into());
    }
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(format!(
            "slices of {nx} × {ny} pixels are larger than DICOM allows"
        ));
    }
    if let Some(src) = source
        && src.slices.len() != nz
    {
        return Err(format!(
            "the label map has {nz} slices but the source series {}",
            src.slices.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for s in segments {
        if s.label == 0 || !seen.insert(s.label) {
            return Err(format!(
                "label {} cannot be a segment (0 or repeated)",
                s.label
            ));
        }
    }

    // Frames: (segment index, slice k), non-empty ones only.
    let frame_len = nx * ny;
    let mut frames: Vec<(usize, usize)> = Vec::new();
    for (si, s) in segments.iter().enumerate() {
        for k in 0..nz {
            let slice = &labels.labels()[k * frame_len..(k + 1) * frame_len];
            if slice.contains(&s.label) {
                frames.push((si, k));
            }
        }
    }
    if frames.is_empty() {
        frames.push((0, 0)); // a SEG needs at least one frame
    }
    let total_bits = frames.len() * frame_len;
    let mut pixels = vec![0u8; total_bits.div_ceil(8).next_multiple_of(2)];
    for (f, &(si, k)) in frames.iter().enumerate() {
        let label = segments[si].label;
        let slice = &labels.labels()[k * frame_len..(k + 1) * frame_len];
        let base = f * frame_len;
        for (p, &v) in slice.iter().enumerate() {
            if v == label {
                let bit = base + p;
                pixels[bit / 8] |= 1 << (bit % 8);
            }
        }
    }

    let (date, time) = now_da_tm();
    let sop_instance_uid = new_uid();
    let series_uid = new_uid();
    let study_uid = source
        .map(|s| s.study_instance_uid.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(new_uid);
    let frame_of_reference = source
        .map(|s| s.frame_of_reference_uid.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(new_uid);
    let dimension_uid = new_uid();

    let mut o = InMemDicomObject::new_empty();
    o.put(str_el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    o.put(str_el(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"));
    o.put(str_el(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_SOP_CLASS));
    o.put(str_el(tags::SOP_INSTANCE_UID, VR::UI, &sop_instance_uid));
    o.put(str_el(tags::SERIES_DATE, VR::DA, &date));
    o.put(str_el(tags::CONTENT_DATE, VR::DA, &date));
    o.put(str_el(tags::SERIES_TIME, VR::TM, &time));
    o.put(str_el(tags::CONTENT_TIME, VR::TM, &time));
    o.put(str_el(tags::MODALITY, VR::CS, "SEG"));
    o.put(str_el(tags::MANUFACTURER, VR::LO, "ICSeg"));
    o.put(str_el(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &options.series_description,
    ));
    o.put(str_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "ICSeg"));
    o.put(str_el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "1"));
    o.put(str_el(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    ));

    // Patient and General Study modules: copied from the source, or new and empty.
    // Type 2 attributes present even when empty; a new study gets today's date.
    let new_study = source.is_none();
    for (t, vr, value) in [
        (tags::PATIENT_NAME, VR::PN, ""),
        (tags::PATIENT_ID, VR::LO, ""),
        (tags::PATIENT_BIRTH_DATE, VR::DA, ""),
        (tags::PATIENT_SEX, VR::CS, ""),
        (
            tags::STUDY_DATE,
            VR::DA,
            if new_study { date.as_str() } else { "" },
        ),
        (
            tags::STUDY_TIME,
            VR::TM,
            if new_study { time.as_str() } else { "" },
        ),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
        (tags::STUDY_ID, VR::SH, ""),
        (tags::ACCESSION_NUMBER, VR::SH, ""),
    ] {
        o.put(str_el(t, vr, value));
    }
    if let Some(src) = source {
        for a in src.patient_study.attributes() {
            let vr: VR = a.vr.parse().unwrap_or(VR::LO);
            o.put(str_el(Tag(a.group, a.element), vr, &a.value));
        }
    }
    o.put(str_el(tags::STUDY_INSTANCE_UID, VR::UI, &study_uid));
    o.put(str_el(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid));
    o.put(str_el(
        tags::SERIES_NUMBER,
        VR::IS,
        &options.series_number.to_string(),
    ));
    o.put(str_el(tags::INSTANCE_NUMBER, VR::IS, "1"));
    o.put(str_el(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &frame_of_reference,
    ));
    o.put(str_el(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));

    // Referenced series (Common Instance Reference module) and, per frame, the source
    // image — only when the source names its series (anonymised data may not).
    let references = source.filter(|s| !s.series_instance_uid.is_empty());
    if let Some(src) = references {
        let mut instances: Vec<InMemDicomObject> = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for r in src.slices.iter().flatten() {
            if listed.insert(r.sop_instance_uid.clone()) {
                instances.push(obj(vec![
                    str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid),
                    str_el(
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        &r.sop_instance_uid,
                    ),
                ]));
            }
        }
        o.put(seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![obj(vec![
                seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
                str_el(tags::SERIES_INSTANCE_UID, VR::UI, &src.series_instance_uid),
            ])],
        ));
    }

    // Dimensions: segment number, then position.
    o.put(seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![obj(vec![str_el(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            &dimension_uid,
        )])],
    ));
    o.put(seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            obj(vec![
                str_el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid),
                el(
                    tags::DIMENSION_INDEX_POINTER,
                    VR::AT,
                    PrimitiveValue::Tags((&[tags::REFERENCED_SEGMENT_NUMBER][..]).into()),
                ),
                el(
                    tags::FUNCTIONAL_GROUP_POINTER,
                    VR::AT,
                    PrimitiveValue::Tags((&[tags::SEGMENT_IDENTIFICATION_SEQUENCE][..]).into()),
                ),
                str_el(
                    tags::DIMENSION_DESCRIPTION_LABEL,
                    VR::LO,
                    "ReferencedSegmentNumber",
                ),
            ]),
            obj(vec![
                str_el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid),
                el(
                    tags::DIMENSION_INDEX_POINTER,
                    VR::AT,
                    PrimitiveValue::Tags((&[tags::IMAGE_POSITION_PATIENT][..]).into()),
                ),
                el(
                    tags::FUNCTIONAL_GROUP_POINTER,
                    VR::AT,
                    PrimitiveValue::Tags((&[tags::PLANE_POSITION_SEQUENCE][..]).into()),
                ),
                str_el(
                    tags::DIMENSION_DESCRIPTION_LABEL,
                    VR::LO,
                    "ImagePositionPatient",
                ),
            ]),
        ],
    ));

    // Image pixel module.
    o.put(el(tags::SAMPLES_PER_PIXEL, VR::US, 1u16));
    o.put(str_el(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    o.put(str_el(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &frames.len().to_string(),
    ));
    o.put(el(tags::ROWS, VR::US, ny as u16));
    o.put(el(tags::COLUMNS, VR::US, nx as u16));
    o.put(el(tags::BITS_ALLOCATED, VR::US, 1u16));
    o.put(el(tags::BITS_STORED, VR::US, 1u16));
    o.put(el(tags::HIGH_BIT, VR::US, 0u16));
    o.put(el(tags::PIXEL_REPRESENTATION, VR::US, 0u16));
    o.put(str_el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"));

    // Segmentation image module.
    o.put(str_el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"));
    o.put(str_el(
        tags::CONTENT_LABEL,
        VR::CS,
        &content_label(&options.content_label),
    ));
    o.put(str_el(
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        &options.series_description,
    ));
    o.put(str_el(tags::CONTENT_CREATOR_NAME, VR::PN, ""));
    let segment_items = segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            obj(vec![
                seq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code("85756007", "SCT", "Tissue")],
                ),
                el(tags::SEGMENT_NUMBER, VR::US, (i + 1) as u16),
                str_el(tags::SEGMENT_LABEL, VR::LO, &segment_name(&s.name, s.label)),
                str_el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "SEMIAUTOMATIC"),
                str_el(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "ICSeg"),
                el(
                    tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
                    VR::US,
                    PrimitiveValue::U16((&rgb_to_dicom_lab(s.color_rgb)[..]).into()),
                ),
                seq(
                    tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                    vec![code("85756007", "SCT", "Tissue")],
                ),
            ])
        })
        .collect();
    o.put(seq(tags::SEGMENT_SEQUENCE, segment_items));

    // Shared functional groups: orientation and pixel measures.
    let row = g.direction[0];
    let col = g.direction[1];
    o.put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![obj(vec![
            seq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![obj(vec![str_el(
                    tags::IMAGE_ORIENTATION_PATIENT,
                    VR::DS,
                    &ds_multi(&[row[0], row[1], row[2], col[0], col[1], col[2]]),
                )])],
            ),
            seq(
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![obj(vec![
                    str_el(tags::SLICE_THICKNESS, VR::DS, &ds(g.spacing_mm[2])),
                    str_el(tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(g.spacing_mm[2])),
                    str_el(
                        tags::PIXEL_SPACING,
                        VR::DS,
                        &ds_multi(&[g.spacing_mm[1], g.spacing_mm[0]]),
                    ),
                ])],
            ),
        ])],
    ));

    // Per-frame functional groups.
    let per_frame = frames
        .iter()
        .map(|&(si, k)| {
            let p = g.patient_from_voxel([0.0, 0.0, k as f64]);
            let mut groups = Vec::new();
            if let Some(r) = references.and_then(|s| s.slices[k].as_ref()) {
                let mut source_image = vec![
                    str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid),
                    str_el(
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        &r.sop_instance_uid,
                    ),
                ];
                if let Some(f) = r.frame_number {
                    source_image.push(str_el(
                        tags::REFERENCED_FRAME_NUMBER,
                        VR::IS,
                        &f.to_string(),
                    ));
                }
                source_image.push(seq(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    vec![code(
                        "121322",
                        "DCM",
                        "Source image for image processing operation",
                    )],
                ));
                groups.push(seq(
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![obj(vec![
                        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![obj(source_image)]),
                        seq(
                            tags::DERIVATION_CODE_SEQUENCE,
                            vec![code("113076", "DCM", "Segmentation")],
                        ),
                    ])],
                ));
            }
            groups.push(seq(
                tags::FRAME_CONTENT_SEQUENCE,
                vec![obj(vec![el(
                    tags::DIMENSION_INDEX_VALUES,
                    VR::UL,
                    PrimitiveValue::U32([(si + 1) as u32, (k + 1) as u32].into()),
                )])],
            ));
            groups.push(seq(
                tags::PLANE_POSITION_SEQUENCE,
                vec![obj(vec![str_el(
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    &ds_multi(&p),
                )])],
            ));
            groups.push(seq(
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![obj(vec![el(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    VR::US,
                    (si + 1) as u16,
                )])],
            ));
            obj(groups)
        })
        .collect();
    o.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    o.put(el(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(pixels.into()),
    ));

    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(IMPLEMENTATION_VERSION),
        )
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn content_label(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(16)
        .collect();
    if cleaned.is_empty() {
        "ICSEG".into()
    } else {
        cleaned
    }
}

fn segment_name(name: &str, label: LabelValue) -> String {
    let n: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '\\')
        .take(64)
        .collect();
    if n.trim().is_empty() {
        format!("Label {label}")
    } else {
        n
    }
}

// ---------------------------------------------------------------------------------
// Reading

/// Reads a SEG file onto `reference`.
pub fn read_seg(path: &Path, reference: &Geometry) -> Result<Segmentation, LoadError> {
    let bytes = read_if_dicom(path)?.ok_or(LoadError::UnrecognizedFormat { path: path.into() })?;
    read_seg_bytes(&bytes, path, reference)
}

/// Reads a SEG held in memory onto `reference` (`name` labels messages; the fuzz entry).
pub fn read_seg_bytes(
    bytes: &[u8],
    name: &Path,
    reference: &Geometry,
) -> Result<Segmentation, LoadError> {
    let obj = parse(bytes, name, false)?;
    let corrupt = |reason: &str| LoadError::corrupt(name, FORMAT, reason.to_string());
    let sop_class = text(&obj, tags::SOP_CLASS_UID).unwrap_or_else(|| {
        obj.meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string()
    });
    if sop_class != SEGMENTATION_SOP_CLASS {
        return Err(LoadError::corrupt(
            name,
            DICOM_FORMAT,
            "it is not a DICOM segmentation (SEG) object",
        ));
    }
    let seg_type = text(&obj, tags::SEGMENTATION_TYPE).unwrap_or_default();
    let rows = int(&obj, tags::ROWS).unwrap_or(0);
    let cols = int(&obj, tags::COLUMNS).unwrap_or(0);
    let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    if !(1..=u16::MAX as i64).contains(&rows)
        || !(1..=u16::MAX as i64).contains(&cols)
        || frames < 1
    {
        return Err(corrupt("the frame size or count is invalid"));
    }
    let (rows, cols, frames) = (rows as usize, cols as usize, frames as usize);
    let frame_len = rows * cols;
    let bits = int(&obj, tags::BITS_ALLOCATED).unwrap_or(0);

    // Segments.
    let mut segments = Vec::new();
    for item in items(&obj, tags::SEGMENT_SEQUENCE) {
        let number = int(item, tags::SEGMENT_NUMBER).unwrap_or(0);
        if !(1..=LabelValue::MAX as i64).contains(&number) {
            return Err(corrupt("a segment has an invalid number"));
        }
        let color_rgb = item
            .get(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE)
            .and_then(|e| e.to_multi_int::<u16>().ok())
            .filter(|v| v.len() == 3)
            .map(|v| dicom_lab_to_rgb([v[0], v[1], v[2]]));
        segments.push(SegmentInfo {
            number: number as LabelValue,
            name: text(item, tags::SEGMENT_LABEL).unwrap_or_default(),
            color_rgb,
        });
    }
    if segments.is_empty() {
        return Err(corrupt("it describes no segment"));
    }

    // Pixels: native only (binary SEG are stored uncompressed in practice).
    let pixel = obj
        .get(tags::PIXEL_DATA)
        .ok_or(LoadError::NoPixelData { path: name.into() })?;
    if pixel.fragments().is_some() {
        return Err(LoadError::unsupported(
            name,
            "compressed DICOM segmentations",
        ));
    }
    let data = pixel
        .to_bytes()
        .map_err(|_| corrupt("the pixel data is unreadable"))?;
    let max_fractional = int(&obj, tags::MAXIMUM_FRACTIONAL_VALUE)
        .unwrap_or(255)
        .max(1);
    let bytes_needed = match (seg_type.as_str(), bits) {
        ("BINARY", 1) => (frames * frame_len).div_ceil(8),
        ("FRACTIONAL", 8) | ("LABELMAP", 8) => frames * frame_len,
        ("LABELMAP", 16) => 2 * frames * frame_len,
        _ => {
            return Err(LoadError::unsupported(
                name,
                format!("segmentation type {seg_type} with {bits}-bit pixels"),
            ));
        }
    };
    if (data.len()) < bytes_needed {
        return Err(LoadError::Truncated {
            path: name.into(),
            expected_bytes: bytes_needed as u64,
            actual_bytes: data.len() as u64,
        });
    }
    // pixel value of frame f, pixel p, as a segment number or 0/1 membership
    let value = |f: usize, p: usize| -> u32 {
        let n = f * frame_len + p;
        match (seg_type.as_str(), bits) {
            ("BINARY", _) => ((data[n / 8] >> (n % 8)) & 1) as u32,
            ("FRACTIONAL", _) => u32::from(data[n] as i64 * 2 >= max_fractional),
            ("LABELMAP", 8) => data[n] as u32,
            _ => u16::from_le_bytes([data[2 * n], data[2 * n + 1]]) as u32,
        }
    };

    // Geometry shared by all frames unless overridden per frame.
    let shared = items(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let per_frame = items(&obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if per_frame.len() < frames {
        return Err(corrupt("some frames have no position"));
    }
    let in_group = |group: Option<&InMemDicomObject>, sq: Tag| -> Option<InMemDicomObject> {
        items(group?, sq).first().cloned()
    };
    let mut labels = LabelMap::empty(reference.clone());
    let mut overlapping = 0usize;
    let mut referenced_series_uid = None;
    for item in items(&obj, tags::REFERENCED_SERIES_SEQUENCE) {
        if let Some(uid) = text(item, tags::SERIES_INSTANCE_UID) {
            referenced_series_uid = Some(uid);
        }
    }
    let not_on_grid = |reason: String| LoadError::NotOnGrid {
        path: name.into(),
        reason,
    };
    for (f, fg) in per_frame.iter().take(frames).enumerate() {
        let pick = |sq: Tag| in_group(Some(fg), sq).or_else(|| in_group(shared, sq));
        let position = pick(tags::PLANE_POSITION_SEQUENCE)
            .and_then(|i| floats(&i, tags::IMAGE_POSITION_PATIENT))
            .filter(|v| v.len() == 3)
            .ok_or_else(|| corrupt("a frame has no position"))?;
        let orientation = pick(tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|i| floats(&i, tags::IMAGE_ORIENTATION_PATIENT))
            .filter(|v| v.len() == 6)
            .ok_or_else(|| corrupt("the frames have no orientation"))?;
        let spacing = pick(tags::PIXEL_MEASURES_SEQUENCE)
            .and_then(|i| floats(&i, tags::PIXEL_SPACING))
            .filter(|v| v.len() == 2 && v.iter().all(|s| *s > 0.0))
            .ok_or_else(|| corrupt("the frames have no pixel spacing"))?;
        let segment = match seg_type.as_str() {
            "LABELMAP" => None,
            _ => {
                let n = pick(tags::SEGMENT_IDENTIFICATION_SEQUENCE)
                    .and_then(|i| int(&i, tags::REFERENCED_SEGMENT_NUMBER))
                    .ok_or_else(|| corrupt("a frame names no segment"))?;
                if !segments.iter().any(|s| s.number as i64 == n) {
                    return Err(corrupt("a frame refers to a segment that is not described"));
                }
                Some(n as LabelValue)
            }
        };
        // Voxel index of pixel (0,0) and of one step along a row / down a column.
        let origin = reference.voxel_from_patient([position[0], position[1], position[2]]);
        let step = |cosines: &[f64], mm: f64| {
            let p = [
                position[0] + cosines[0] * mm,
                position[1] + cosines[1] * mm,
                position[2] + cosines[2] * mm,
            ];
            let v = reference.voxel_from_patient(p);
            [v[0] - origin[0], v[1] - origin[1], v[2] - origin[2]]
        };
        let along_row = step(&orientation[0..3], spacing[1]);
        let down_col = step(&orientation[3..6], spacing[0]);
        let whole = |v: [f64; 3]| -> Option<[i64; 3]> {
            let r = v.map(|x| x.round());
            v.iter()
                .zip(&r)
                .all(|(a, b)| (a - b).abs() < 0.1 && b.is_finite())
                .then(|| r.map(|x| x as i64))
        };
        let (Some(o), Some(dr), Some(dc)) = (whole(origin), whole(along_row), whole(down_col))
        else {
            return Err(not_on_grid(format!(
                "frame {} does not fall on the image voxels",
                f + 1
            )));
        };
        for p in 0..frame_len {
            let v = value(f, p);
            if v == 0 {
                continue;
            }
            let (c, r) = ((p % cols) as i64, (p / cols) as i64);
            let ijk = [
                o[0] + c * dr[0] + r * dc[0],
                o[1] + c * dr[1] + r * dc[1],
                o[2] + c * dr[2] + r * dc[2],
            ];
            let inside = ijk
                .iter()
                .zip(&reference.dims)
                .all(|(&x, &n)| x >= 0 && (x as usize) < n);
            if !inside {
                return Err(not_on_grid(format!(
                    "frame {} reaches outside the image",
                    f + 1
                )));
            }
            let ijk = ijk.map(|x| x as usize);
            let new = segment.unwrap_or(v.min(LabelValue::MAX as u32) as LabelValue);
            match labels.get(ijk) {
                Some(0) | None => labels.set(ijk, new),
                Some(old) if old != new => {
                    overlapping += 1;
                    labels.set(ijk, old.max(new));
                }
                Some(_) => {}
            }
        }
    }
    Ok(Segmentation {
        labels,
        segments,
        overlapping_voxels: overlapping,
        referenced_series_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_survive_the_cielab_round_trip() {
        for rgb in [
            [255, 0, 0],
            [0, 128, 255],
            [221, 130, 101],
            [0, 0, 0],
            [255, 255, 255],
        ] {
            let back = dicom_lab_to_rgb(rgb_to_dicom_lab(rgb));
            for c in 0..3 {
                assert!(
                    (back[c] as i32 - rgb[c] as i32).abs() <= 1,
                    "{rgb:?} -> {back:?}"
                );
            }
        }
    }

    #[test]
    fn uids_are_valid_and_unique() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert!(a.len() <= 64 && a.starts_with("2.25."));
        assert!(a[5..].chars().all(|c| c.is_ascii_digit()));
        assert!(!a[5..].starts_with('0'));
    }

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        for v in [0.9765625, -249.51171875, 1e-9, 123456789.123, -0.0, 2.0] {
            let s = ds(v);
            assert!(s.len() <= 16, "{s}");
            assert!(
                (s.parse::<f64>().unwrap() - v).abs() <= 1e-6 * v.abs().max(1.0),
                "{v} {s}"
            );
        }
    }

    #[test]
    fn today_is_formatted_as_dicom_date_and_time() {
        let (d, t) = now_da_tm();
        assert_eq!(d.len(), 8);
        assert_eq!(t.len(), 6);
        assert!(d.starts_with("20"));
        assert!(t[..2].parse::<u32>().unwrap() < 24);
    }
}
