//! DICOM image series: scanning files and folders, grouping by series, and building a
//! [`Volume`](crate::volume::Volume) from one series.
//!
//! | file | does |
//! |---|---|
//! | `mod.rs` | the entry points: [`scan`], [`open`], [`load_series`], [`read_bytes`] |
//! | `series.rs` | [`SeriesSummary`]: what a scan reports about each series |
//! | `header.rs` | one file: its checked bytes and what its header says |
//! | `stack.rs` | building a volume from the files of one series |
//! | `guard.rs`, `codec_check.rs` | structural checks before the parser and decoders |
//! | [`seg`] | DICOM SEG read and write |
//!
//! # Building a volume
//!
//! The images (or the frames of multi-frame objects) of a series are sorted by the
//! projection of their Image Position (Patient) on the slice normal (row × column
//! cosine). Slice spacing comes from those positions, never from Slice Thickness. The
//! checks that keep a wrong volume from being shown silently:
//!
//! - sizes, orientations and pixel spacings must agree ([`SeriesProblem`](crate::io::SeriesProblem)
//!   otherwise);
//! - two images at one position (phases, echoes) are an error;
//! - gaps that are whole multiples of the usual spacing are missing slices: they are
//!   filled with the lowest value and reported ([`LoadWarning::MissingSlices`]);
//! - gaps varying by up to a quarter of the spacing give an even grid with
//!   [`LoadWarning::IrregularSpacing`]; more is [`SeriesProblem::IrregularSpacing`](crate::io::SeriesProblem::IrregularSpacing);
//! - slices stacked obliquely to their normal (gantry tilt) keep their true positions
//!   through a sheared grid and [`LoadWarning::GantryTilt`].
//!
//! Voxel values are the stored values (masked to Bits Stored, sign-extended) times
//! Rescale Slope plus Rescale Intercept (per frame for enhanced multi-frame objects).
//!
//! # Robustness
//!
//! Each file is read whole (files are slices or a multi-frame object), checked by
//! `guard` so that no declared length exceeds the bytes present, then parsed. The
//! decoded size is checked against [`MAX_VOXELS`] and, for compressed data, against a
//! generous compression ratio before any decoder runs. Panics inside the third-party
//! parser and decoders are caught and reported as damaged files.

mod codec_check;
mod guard;
mod header;
pub mod seg;
pub(super) mod series;
mod stack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::LoadedVolume;
use super::error::{LoadError, LoadWarning};
use header::{FileHeader, header_from_bytes, read_header_file, read_if_dicom};

pub(crate) use header::looks_like_dicom;
pub use header::{PatientStudy, SEGMENTATION_SOP_CLASS};
pub use series::{SeriesKind, SeriesSummary, transfer_syntax_name};
pub use stack::{DicomSource, MAX_VOXELS, SliceReference};

/// Folder depth scanned below the chosen folder.
const MAX_FOLDER_DEPTH: usize = 16;

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
    stack::build(name, &[&header], |_| Ok(bytes.into()))
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
    let mut loaded = stack::build(path, &headers, |h| {
        let bytes = read_if_dicom(&h.path)?.ok_or(LoadError::UnrecognizedFormat {
            path: h.path.clone(),
        })?;
        Ok(bytes.into())
    })?;
    if scan.skipped_files > 0 {
        loaded.warnings.push(LoadWarning::SkippedFiles {
            count: scan.skipped_files,
        });
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SeriesProblem;
    use dicom::core::value::{DataSetSequence, PrimitiveValue};
    use dicom::core::{DataElement, Tag, VR};
    use dicom::dictionary_std::{tags, uids};
    use dicom::object::FileMetaTableBuilder;
    use dicom::object::InMemDicomObject;

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
