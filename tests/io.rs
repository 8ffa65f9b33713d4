//! File I/O against the real shared data: NIfTI, DICOM series, DICOM SEG, bad input.
//!
//! Tests needing `../shared/data` skip on machines without it and fail under CI.

use std::path::{Path, PathBuf};

use icseg::io::dicom::seg::{self, SegWriteOptions, SegmentSpec};
use icseg::io::{self, LoadError, LoadWarning, SeriesProblem, VolumeSource};
use icseg::testing::shared_data;
use icseg::volume::{Geometry, LabelMap, Modality, Volume};

fn assert_geometry_close(a: &Geometry, b: &Geometry, tol_mm: f64) {
    assert_eq!(a.dims, b.dims);
    for i in 0..3 {
        assert!(
            (a.spacing_mm[i] - b.spacing_mm[i]).abs() < tol_mm,
            "{a:?}\n{b:?}"
        );
        assert!(
            (a.origin_mm[i] - b.origin_mm[i]).abs() < tol_mm,
            "{a:?}\n{b:?}"
        );
        for j in 0..3 {
            assert!(
                (a.direction[i][j] - b.direction[i][j]).abs() < 1e-5,
                "{a:?}\n{b:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// NIfTI

#[test]
fn totalseg_ct_and_labels_round_trip_through_nifti() {
    let Some(image) = shared_data("volumes/totalseg-examples/ct_sm_image.nii.gz") else {
        return;
    };
    let label_path = shared_data("volumes/totalseg-examples/ct_sm_label.nii.gz").unwrap();
    let ct = io::open_volume(&image).unwrap();
    assert_eq!(ct.volume.dims(), [122, 101, 30]);
    assert_eq!(ct.volume.geometry().spacing_mm, [3.0, 3.0, 3.0]);
    // sform is +x/+y in RAS, i.e. towards the patient's right and anterior
    assert_eq!(ct.volume.geometry().orientation_code(), "RAS");
    assert!((ct.volume.geometry().origin_mm[0] - 177.956).abs() < 1e-3);
    assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
    assert!(matches!(ct.source, VolumeSource::Nifti { .. }));

    let labels = io::read_label_map(&label_path, ct.volume.geometry()).unwrap();
    // liver (TotalSegmentator id 5) is present with soft-tissue HU
    let liver: Vec<f32> = labels
        .labels()
        .iter()
        .zip(ct.volume.voxels())
        .filter(|(l, _)| **l == 5)
        .map(|(_, v)| *v)
        .collect();
    assert!(liver.len() > 1000, "{}", liver.len());
    let mean = liver.iter().sum::<f32>() / liver.len() as f32;
    assert!((20.0..150.0).contains(&mean), "liver mean {mean} HU");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels.nii.gz");
    io::write_label_map(&out, &labels).unwrap();
    let back = io::read_label_map(&out, ct.volume.geometry()).unwrap();
    assert_eq!(back.labels(), labels.labels());
    assert_geometry_close(back.geometry(), ct.volume.geometry(), 1e-4);

    let out = dir.path().join("ct.nii");
    io::nifti::write_volume(&out, &ct.volume).unwrap();
    let again = io::open_volume(&out).unwrap();
    assert_eq!(again.volume.voxels(), ct.volume.voxels());
    assert_geometry_close(again.volume.geometry(), ct.volume.geometry(), 1e-4);
}

#[test]
fn mr_with_a_flipped_sform_opens_with_its_orientation() {
    let Some(image) = shared_data("volumes/totalseg-examples/mr_sm_image.nii.gz") else {
        return;
    };
    let mr = io::open_volume(&image).unwrap();
    assert_eq!(mr.volume.dims(), [117, 91, 20]);
    // srow_x = -3 i, srow_y = -3 j in RAS: LPS-aligned
    assert_eq!(mr.volume.geometry().orientation_code(), "LPS");
    let labels = shared_data("volumes/totalseg-examples/mr_sm_label.nii.gz").unwrap();
    let l = io::read_label_map(&labels, mr.volume.geometry()).unwrap();
    assert!(l.max_label() > 0);
}

#[test]
fn a_label_map_on_another_grid_is_refused_with_a_typed_error() {
    let (Some(ct), Some(mr_labels)) = (
        shared_data("volumes/totalseg-examples/ct_sm_image.nii.gz"),
        shared_data("volumes/totalseg-examples/mr_sm_label.nii.gz"),
    ) else {
        return;
    };
    let ct = io::open_volume(&ct).unwrap();
    let e = io::read_label_map(&mr_labels, ct.volume.geometry()).unwrap_err();
    assert!(matches!(e, LoadError::NotOnGrid { .. }), "{e:?}");
    assert!(
        e.to_string().contains("does not match the open image"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------
// DICOM series

#[test]
fn ct_abdomen_j2k_series_loads_with_its_geometry_and_label_map() {
    let (Some(series), Some(label_path)) = (
        shared_data("dicom/ct-abdomen-j2k-series"),
        shared_data("dicom/ct-abdomen-j2k-series-label.nii.gz"),
    ) else {
        return;
    };
    let ct = io::open_volume(&series).unwrap();
    let g = ct.volume.geometry();
    assert_eq!(g.dims, [512, 512, 20]);
    assert!((g.spacing_mm[0] - 0.9765625).abs() < 1e-9);
    assert!((g.spacing_mm[1] - 0.9765625).abs() < 1e-9);
    assert!((g.spacing_mm[2] - 2.0).abs() < 1e-9, "{:?}", g.spacing_mm);
    assert_eq!(g.orientation_code(), "LPS");
    // the lowest slice comes first (sorted along the normal)
    assert!((g.origin_mm[2] - -804.5).abs() < 1e-6, "{:?}", g.origin_mm);
    assert_eq!(ct.volume.modality, Modality::Ct);
    assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
    let (lo, hi) = ct.volume.value_range();
    assert!(lo <= -1000.0 && hi > 1000.0, "{lo} {hi}");

    // The SOPClassUID quirk: empty in the data set, taken from the file meta header.
    let src = ct.source.dicom().expect("a DICOM source");
    assert_eq!(src.slices.len(), 20);
    for s in src.slices.iter() {
        assert_eq!(
            s.as_ref().unwrap().sop_class_uid,
            "1.2.840.10008.5.1.4.1.1.2"
        );
    }
    // This anonymised series has empty study, series and instance UIDs in its data set;
    // instance UIDs come from the file meta header, the frame of reference is kept.
    assert!(src.study_instance_uid.is_empty() && src.series_instance_uid.is_empty());
    assert_eq!(
        src.frame_of_reference_uid,
        "1.3.12.2.1107.5.1.4.60064.30000022120807274275100000041"
    );
    assert!(
        src.slices[0]
            .as_ref()
            .unwrap()
            .sop_instance_uid
            .starts_with("1.3.12.2.1107.5.1.4.60064.")
    );

    // The label NIfTI stores rows bottom-up; it must land on the DICOM grid.
    let labels = io::read_label_map(&label_path, g).unwrap();
    let mean_hu = |label: u16| {
        let (sum, n) = labels
            .labels()
            .iter()
            .zip(ct.volume.voxels())
            .filter(|(l, _)| **l == label)
            .fold((0.0f64, 0usize), |(s, n), (_, v)| (s + *v as f64, n + 1));
        sum / n as f64
    };
    let liver = mean_hu(5);
    assert!((liver - 89.0).abs() < 3.0, "liver {liver} HU");
    let spleen = mean_hu(1);
    assert!((spleen - 80.0).abs() < 5.0, "spleen {spleen} HU");
    let aorta = mean_hu(52);
    assert!((aorta - 177.0).abs() < 10.0, "aorta {aorta} HU");

    // These labels survive a DICOM SEG round trip on the compressed series.
    let mut three = labels.clone();
    for v in three.labels_mut() {
        if ![1, 5, 52].contains(v) {
            *v = 0;
        }
    }
    let specs = [(1, "Spleen"), (5, "Liver"), (52, "Aorta")].map(|(label, name)| SegmentSpec {
        label,
        name: name.into(),
        color_rgb: [200, 100, 50],
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("abdomen-seg.dcm");
    seg::write_seg(&out, &three, &specs, Some(src), &SegWriteOptions::default()).unwrap();
    let back = seg::read_seg(&out, g).unwrap();
    // segment numbers are 1, 2, 3 in the order given
    let renumbered: Vec<u16> = three
        .labels()
        .iter()
        .map(|v| match v {
            1 => 1,
            5 => 2,
            52 => 3,
            _ => 0,
        })
        .collect();
    assert_eq!(back.labels.labels(), &renumbered[..]);
}

#[test]
fn all_nine_transfer_syntaxes_decode_to_identical_pixels() {
    let Some(dir) = shared_data("dicom/transfer-syntaxes") else {
        return;
    };
    let reference = io::open_volume(&dir.join("1.dcm")).unwrap();
    assert_eq!(reference.volume.dims(), [384, 384, 1]);
    assert_eq!(reference.volume.modality, Modality::Mr);
    let (lo, hi) = reference.volume.value_range();
    assert!(hi > lo);
    let mut syntaxes = std::collections::BTreeSet::new();
    for n in 1..=9 {
        let path = dir.join(format!("{n}.dcm"));
        let v = io::open_volume(&path).unwrap_or_else(|e| panic!("{n}.dcm: {e}"));
        assert_eq!(
            v.volume.voxels(),
            reference.volume.voxels(),
            "{n}.dcm differs"
        );
        assert_eq!(v.volume.geometry(), reference.volume.geometry(), "{n}.dcm");
        syntaxes.insert(v.source.dicom().unwrap().transfer_syntax.clone());
    }
    assert_eq!(syntaxes.len(), 7, "{syntaxes:?}");
    // The nine files share one Series Instance UID (only Series Number differs): as one
    // series they are nine images at the same position, which must not become a volume.
    let scan = io::dicom::scan(&dir).unwrap();
    assert_eq!(scan.series.len(), 1);
    assert_eq!(scan.series[0].files, 9);
    assert_eq!(scan.series[0].transfer_syntaxes.len(), 7);
    let e = io::open_volume(&dir).unwrap_err();
    assert!(
        matches!(
            e,
            LoadError::InconsistentSeries {
                problem: SeriesProblem::DuplicatePositions { duplicates: 8 },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("same position"), "{e}");
}

/// A synthetic series: copies of one real slice with rewritten positions and UIDs.
fn synthetic_series(
    dir: &Path,
    z_positions: &[f64],
    change: impl Fn(usize, &mut dicom::object::DefaultDicomObject),
) {
    use dicom::core::{DataElement, PrimitiveValue, VR};
    use dicom::dictionary_std::tags;
    let src = shared_data("dicom/seg-liver/ct-3slice/01.dcm").unwrap();
    for (n, z) in z_positions.iter().enumerate() {
        let mut obj = dicom::object::open_file(&src).unwrap();
        let pos = format!("-235.2\\-226.8\\{z}");
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(pos.as_str()),
        ));
        let uid = format!("1.2.826.0.1.3680043.10.543.{n}");
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(uid.as_str()),
        ));
        obj.update_meta(|m| m.media_storage_sop_instance_uid = uid.clone());
        change(n, &mut obj);
        obj.write_to_file(dir.join(format!("{n:03}.dcm"))).unwrap();
    }
}

#[test]
fn a_missing_slice_is_filled_and_reported() {
    if shared_data("dicom/seg-liver/ct-3slice").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    synthetic_series(dir.path(), &[0.0, 2.0, 6.0, 8.0], |_, _| {});
    let v = io::open_volume(dir.path()).unwrap();
    assert_eq!(v.volume.dims(), [512, 512, 5]);
    assert!((v.volume.geometry().spacing_mm[2] - 2.0).abs() < 1e-9);
    assert_eq!(
        v.warnings,
        vec![LoadWarning::MissingSlices {
            count: 1,
            spacing_mm: 2.0
        }]
    );
    let src = v.source.dicom().unwrap();
    assert!(src.slices[2].is_none() && src.slices[3].is_some());
    // the filled slice holds the lowest value of the others
    let filled = v.volume.slice(icseg::volume::Axis::K, 2);
    let lo = v.volume.value_range().0;
    assert!(filled.data.iter().all(|&x| x == lo));
}

#[test]
fn irregular_duplicate_and_mixed_series_are_typed_errors() {
    if shared_data("dicom/seg-liver/ct-3slice").is_none() {
        return;
    }
    use dicom::core::{DataElement, PrimitiveValue, VR};
    use dicom::dictionary_std::tags;
    let problem = |z: &[f64], change: &dyn Fn(usize, &mut dicom::object::DefaultDicomObject)| {
        let dir = tempfile::tempdir().unwrap();
        synthetic_series(dir.path(), z, change);
        match io::open_volume(dir.path()) {
            Err(LoadError::InconsistentSeries { problem, .. }) => problem,
            other => panic!("{:?}", other.map(|v| v.warnings)),
        }
    };
    assert!(matches!(
        problem(&[0.0, 1.0, 3.5, 4.0], &|_, _| {}),
        SeriesProblem::IrregularSpacing { .. }
    ));
    assert!(matches!(
        problem(&[0.0, 1.0, 1.0, 2.0], &|_, _| {}),
        SeriesProblem::DuplicatePositions { duplicates: 1 }
    ));
    assert!(matches!(
        problem(&[0.0, 1.0, 2.0], &|n, o| if n == 1 {
            o.put(DataElement::new(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                PrimitiveValue::from("1\\0\\0\\0\\0\\-1"),
            ));
        }),
        SeriesProblem::MixedOrientations { count: 2 }
    ));
    // slightly uneven gaps: loads on an even grid, with a warning
    let dir = tempfile::tempdir().unwrap();
    synthetic_series(dir.path(), &[0.0, 1.0, 2.1, 3.0], |_, _| {});
    let v = io::open_volume(dir.path()).unwrap();
    assert!(
        matches!(v.warnings[..], [LoadWarning::IrregularSpacing { .. }]),
        "{:?}",
        v.warnings
    );
}

// ---------------------------------------------------------------------------------
// DICOM SEG

fn ct_3slice() -> Option<(PathBuf, io::LoadedVolume)> {
    let dir = shared_data("dicom/seg-liver/ct-3slice")?;
    let v = io::open_volume(&dir).unwrap();
    Some((dir, v))
}

#[test]
fn liver_seg_reads_onto_its_ct_with_107098_voxels() {
    let Some((_, ct)) = ct_3slice() else { return };
    let seg_path = shared_data("dicom/seg-liver/liver-seg.dcm").unwrap();
    let s = seg::read_seg(&seg_path, ct.volume.geometry()).unwrap();
    assert_eq!(s.segments.len(), 1);
    assert_eq!(s.segments[0].name, "Liver");
    assert_eq!(s.labels.count(1), 107_098);
    assert_eq!(s.overlapping_voxels, 0);
    assert_eq!(
        s.referenced_series_uid.as_deref(),
        Some(ct.source.dicom().unwrap().series_instance_uid.as_str())
    );
    // liver voxels are soft tissue in this CT
    let mean: f64 = s
        .labels
        .labels()
        .iter()
        .zip(ct.volume.voxels())
        .filter(|(l, _)| **l == 1)
        .map(|(_, v)| *v as f64)
        .sum::<f64>()
        / 107_098.0;
    assert!((0.0..200.0).contains(&mean), "{mean}");

    // The same SEG on another patient's grid is refused.
    let other = io::open_volume(&shared_data("dicom/ct-abdomen-j2k-series").unwrap()).unwrap();
    let e = seg::read_seg(&seg_path, other.volume.geometry()).unwrap_err();
    assert!(matches!(e, LoadError::NotOnGrid { .. }), "{e:?}");
}

/// Counts checked with pydicom: per segment 9602, 11888, 10743, 6693, 4713 voxels;
/// where segments overlap the higher number is kept.
#[test]
fn overlapping_segments_keep_the_higher_number_and_are_counted() {
    let Some((_, ct)) = ct_3slice() else { return };
    let path = shared_data("dicom/seg-liver/partial-overlaps-seg.dcm").unwrap();
    let s = seg::read_seg(&path, ct.volume.geometry()).unwrap();
    let names: Vec<&str> = s.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    );
    assert_eq!(
        s.labels.label_counts(),
        vec![(1, 6518), (2, 11838), (3, 10743), (4, 6693), (5, 4713)]
    );
    assert_eq!(s.overlapping_voxels, 3134);
}

fn two_label_map(g: &Geometry) -> LabelMap {
    let mut m = LabelMap::empty(g.clone());
    let [nx, ny, nz] = g.dims;
    for k in 0..nz {
        for j in ny / 4..ny / 2 {
            for i in nx / 4..nx / 2 {
                m.set([i, j, k], 1);
            }
        }
    }
    // a small second structure on the last slice only, not touching the first
    for j in 3 * ny / 4..3 * ny / 4 + 7 {
        for i in 10..23 {
            m.set([i, j, nz - 1], 2);
        }
    }
    m
}

fn specs() -> Vec<SegmentSpec> {
    vec![
        SegmentSpec {
            label: 1,
            name: "Liver".into(),
            color_rgb: [221, 130, 101],
        },
        SegmentSpec {
            label: 2,
            name: "Lesion".into(),
            color_rgb: [0, 151, 206],
        },
    ]
}

#[test]
fn seg_round_trip_on_a_dicom_series_gives_identical_voxels() {
    let Some((_, ct)) = ct_3slice() else { return };
    let labels = two_label_map(ct.volume.geometry());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seg.dcm");
    seg::write_seg(
        &out,
        &labels,
        &specs(),
        ct.source.dicom(),
        &SegWriteOptions::default(),
    )
    .unwrap();
    let back = seg::read_seg(&out, ct.volume.geometry()).unwrap();
    assert_eq!(back.labels.labels(), labels.labels());
    assert_eq!(back.segments.len(), 2);
    assert_eq!(back.segments[1].name, "Lesion");
    let rgb = back.segments[0].color_rgb.unwrap();
    assert!(
        rgb.iter()
            .zip([221, 130, 101])
            .all(|(a, b)| (*a as i32 - b).abs() <= 1),
        "{rgb:?}"
    );
    assert_eq!(
        back.referenced_series_uid.as_deref(),
        Some(ct.source.dicom().unwrap().series_instance_uid.as_str())
    );
    // the SEG belongs to the same study and frame of reference
    let obj = dicom::object::open_file(&out).unwrap();
    let get = |t| obj.element(t).unwrap().to_str().unwrap().to_string();
    use dicom::dictionary_std::tags;
    let src = ct.source.dicom().unwrap();
    assert_eq!(get(tags::STUDY_INSTANCE_UID), src.study_instance_uid);
    assert_eq!(
        get(tags::FRAME_OF_REFERENCE_UID),
        src.frame_of_reference_uid
    );
    assert_ne!(get(tags::SERIES_INSTANCE_UID), src.series_instance_uid);
    // 3 slices of segment 1 and 1 slice of segment 2
    assert_eq!(get(tags::NUMBER_OF_FRAMES), "4");
}

#[test]
fn seg_of_a_nifti_volume_starts_a_new_study_and_round_trips() {
    let g = Geometry {
        dims: [33, 21, 5],
        spacing_mm: [0.7, 0.8, 2.5],
        origin_mm: [-100.0, 50.0, 12.5],
        direction: [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]], // sagittal-ish
    };
    let labels = two_label_map(&g);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seg.dcm");
    seg::write_seg(&out, &labels, &specs(), None, &SegWriteOptions::default()).unwrap();
    let back = seg::read_seg(&out, &g).unwrap();
    assert_eq!(back.labels.labels(), labels.labels());
    assert_eq!(back.referenced_series_uid, None);
}

/// Runs dciodvfy and the pydicom/highdicom checker on a SEG we wrote. When a tool is
/// missing the check is skipped, except under CI where it must be installed.
#[test]
fn written_seg_passes_dciodvfy_and_highdicom() {
    let Some((_, ct)) = ct_3slice() else { return };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let labels = two_label_map(ct.volume.geometry());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seg.dcm");
    seg::write_seg(
        &out,
        &labels,
        &specs(),
        ct.source.dicom(),
        &SegWriteOptions::default(),
    )
    .unwrap();

    match std::process::Command::new("dciodvfy")
        .arg("-new")
        .arg(&out)
        .output()
    {
        Ok(r) => {
            let report = String::from_utf8_lossy(&r.stderr).to_string()
                + &String::from_utf8_lossy(&r.stdout);
            let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
            // Only error lines are shown: warnings may quote attribute values.
            assert!(
                errors.is_empty(),
                "dciodvfy reports errors:\n{}",
                errors.join("\n")
            );
            assert!(report.contains("Segmentation"), "{report}");
        }
        Err(e) => {
            assert!(
                !ci,
                "dciodvfy (Debian package dicom3tools) is required under CI: {e}"
            );
            eprintln!("skipped dciodvfy: {e}");
        }
    }

    // Expected per segment: voxel count and the sum of voxel centres in patient space.
    let g = ct.volume.geometry();
    let mut expected = serde_json::Map::new();
    for label in [1u16, 2] {
        let mut sum = [0.0f64; 3];
        let mut count = 0usize;
        let [nx, ny, _] = g.dims;
        for (n, &v) in labels.labels().iter().enumerate() {
            if v == label {
                let p = g.patient_from_voxel([
                    (n % nx) as f64,
                    ((n / nx) % ny) as f64,
                    (n / (nx * ny)) as f64,
                ]);
                for a in 0..3 {
                    sum[a] += p[a];
                }
                count += 1;
            }
        }
        expected.insert(
            label.to_string(),
            serde_json::json!({ "count": count, "sum_mm": sum }),
        );
    }
    let expected_path = dir.path().join("expected.json");
    std::fs::write(
        &expected_path,
        serde_json::Value::Object(expected).to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate_seg.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    match std::process::Command::new(&python)
        .arg(&script)
        .arg(&out)
        .arg(&expected_path)
        .output()
    {
        Ok(r) if r.status.code() == Some(0) => {
            println!("{}", String::from_utf8_lossy(&r.stdout));
        }
        Ok(r) if r.status.code() == Some(77) => {
            let msg = String::from_utf8_lossy(&r.stderr);
            assert!(
                !ci,
                "pydicom/highdicom are required under CI (pip install highdicom): {msg}"
            );
            eprintln!("skipped highdicom check: {msg}");
        }
        Ok(r) => panic!(
            "highdicom disagrees with our SEG:\n{}\n{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
        Err(e) => {
            assert!(!ci, "python3 is required under CI: {e}");
            eprintln!("skipped highdicom check: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------
// Bad input

#[test]
fn bad_inputs_give_typed_errors_a_clinician_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let e = io::open_volume(&d.join("nope.nii")).unwrap_err();
    assert!(matches!(e, LoadError::NotFound { .. }), "{e:?}");

    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = io::open_volume(&empty).unwrap_err();
    assert!(
        matches!(e, LoadError::NoDicomImages { files_seen: 0, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("no DICOM images"), "{e}");

    let jpegs = d.join("jpegs");
    std::fs::create_dir(&jpegs).unwrap();
    for n in 0..3 {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0];
        jpeg.resize(2000, n);
        std::fs::write(jpegs.join(format!("photo{n}.jpg")), jpeg).unwrap();
    }
    let e = io::open_volume(&jpegs).unwrap_err();
    assert!(
        matches!(e, LoadError::NoDicomImages { files_seen: 3, .. }),
        "{e:?}"
    );

    let random = d.join("random.bin");
    let bytes: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&random, &bytes).unwrap();
    let e = io::open_volume(&random).unwrap_err();
    assert!(matches!(e, LoadError::UnrecognizedFormat { .. }), "{e:?}");

    // a NIfTI header that lies about its size
    let g = Geometry::axis_aligned([8, 8, 8], [1.0; 3]);
    let v = Volume::new(g, vec![0.0; 512], Modality::Ct).unwrap();
    let nii = d.join("lie.nii");
    io::nifti::write_volume(&nii, &v).unwrap();
    let mut b = std::fs::read(&nii).unwrap();
    b[46..48].copy_from_slice(&30000i16.to_le_bytes()); // nz = 30000
    std::fs::write(&nii, &b).unwrap();
    let e = io::open_volume(&nii).unwrap_err();
    assert!(matches!(e, LoadError::Truncated { .. }), "{e:?}");

    // a truncated NIfTI
    let nii2 = d.join("cut.nii.gz");
    io::nifti::write_volume(&nii2, &v).unwrap();
    let b = std::fs::read(&nii2).unwrap();
    std::fs::write(&nii2, &b[..b.len() / 2]).unwrap();
    let e = io::open_volume(&nii2).unwrap_err();
    assert!(
        matches!(e, LoadError::Truncated { .. } | LoadError::Corrupt { .. }),
        "{e:?}"
    );

    if let Some(src) = shared_data("dicom/seg-liver/ct-3slice/01.dcm") {
        // a DICOM without pixel data
        let mut obj = dicom::object::open_file(&src).unwrap();
        obj.remove_element(dicom::dictionary_std::tags::PIXEL_DATA);
        let p = d.join("nopixels.dcm");
        obj.write_to_file(&p).unwrap();
        let e = io::open_volume(&p).unwrap_err();
        assert!(matches!(e, LoadError::NoPixelData { .. }), "{e:?}");
        assert!(e.to_string().contains("no image"), "{e}");

        // a truncated DICOM
        let b = std::fs::read(&src).unwrap();
        let p = d.join("cut.dcm");
        std::fs::write(&p, &b[..b.len() - 1000]).unwrap();
        let e = io::open_volume(&p).unwrap_err();
        assert!(
            matches!(e, LoadError::Corrupt { .. } | LoadError::Truncated { .. }),
            "{e:?}"
        );
        // the same file alone in a folder: its own problem is reported, not "no images"
        let folder = d.join("damaged-series");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("a.dcm"), &b[..b.len() - 1000]).unwrap();
        let e = io::open_volume(&folder).unwrap_err();
        assert!(
            matches!(e, LoadError::Corrupt { .. } | LoadError::Truncated { .. }),
            "{e:?}"
        );
        assert!(e.to_string().ends_with("a.dcm"), "{e}");

        // a SEG opened as an image volume
        let seg_file = shared_data("dicom/seg-liver/liver-seg.dcm").unwrap();
        let e = io::open_volume(&seg_file).unwrap_err();
        assert!(matches!(e, LoadError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("segmentation"), "{e}");
    }
}

/// No message may carry a patient identifier from the files.
#[test]
fn errors_and_summaries_carry_no_patient_identifiers() {
    let Some(dir) = shared_data("dicom/seg-liver/ct-3slice") else {
        return;
    };
    let obj = dicom::object::open_file(dir.join("01.dcm")).unwrap();
    use dicom::dictionary_std::tags;
    let identifiers: Vec<String> = [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
    ]
    .iter()
    .filter_map(|t| obj.element(*t).ok()?.to_str().ok().map(|s| s.to_string()))
    .filter(|s| s.len() > 2)
    .collect();
    let v = io::open_volume(&dir).unwrap();
    let debug = format!("{v:?}");
    let scan = io::dicom::scan(&dir).unwrap();
    let listing = format!("{:?} {}", scan.series, scan.series[0]);
    for id in &identifiers {
        assert!(
            !debug.contains(id.as_str()),
            "volume Debug leaks an identifier"
        );
        assert!(
            !listing.contains(id.as_str()),
            "summary leaks an identifier"
        );
    }
    assert!(debug.contains("redacted"));
}

// ---------------------------------------------------------------------------------
// Mutation test: damaged copies of the real files

/// Truncates, bit-flips and overwrites the real files many times and feeds each copy
/// to its loader: every outcome must be an error or a well-formed volume, never a
/// panic. A panic hook records panics that the loaders catch inside third-party
/// decoders (they become "damaged file" errors); those are reported, not hidden.
#[test]
fn damaged_copies_of_real_files_give_errors_or_valid_volumes_never_panics() {
    use rand::{RngExt, SeedableRng};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::{Arc, Mutex};

    let Some(root) = shared_data("dicom") else {
        return;
    };
    let volumes = shared_data("volumes/totalseg-examples").unwrap();
    let ct = io::open_volume(&root.join("seg-liver/ct-3slice")).unwrap();
    let reference = ct.volume.geometry().clone();
    let first_abdomen = std::fs::read_dir(root.join("ct-abdomen-j2k-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();

    #[derive(Clone, Copy, Debug)]
    enum Loader {
        Dicom,
        Nifti,
        Seg,
    }
    let mut inputs: Vec<(PathBuf, Loader)> = vec![
        (root.join("seg-liver/ct-3slice/01.dcm"), Loader::Dicom),
        (first_abdomen, Loader::Dicom),
        (root.join("seg-liver/liver-seg.dcm"), Loader::Seg),
        (root.join("seg-liver/partial-overlaps-seg.dcm"), Loader::Seg),
        (volumes.join("ct_sm_label.nii.gz"), Loader::Nifti),
        (
            root.join("ct-abdomen-j2k-series-label.nii.gz"),
            Loader::Nifti,
        ),
    ];
    for n in [1, 2, 3, 4, 5, 7, 9] {
        inputs.push((
            root.join(format!("transfer-syntaxes/{n}.dcm")),
            Loader::Dicom,
        ));
    }
    // an uncompressed NIfTI too, so flips reach header fields directly
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("mr.nii");
    let mr = io::open_volume(&volumes.join("mr_sm_image.nii.gz")).unwrap();
    io::nifti::write_volume(&plain, &mr.volume).unwrap();
    inputs.push((plain, Loader::Nifti));

    let caught: Arc<Mutex<Vec<String>>> = Arc::default();
    let previous_hook = std::panic::take_hook();
    {
        let caught = caught.clone();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            caught.lock().unwrap().push(at);
        }));
    }

    // ICSEG_MUTATION_ROUNDS / ICSEG_MUTATION_SEED allow longer soak runs by hand.
    let per_file: usize = std::env::var("ICSEG_MUTATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    let seed: u64 = std::env::var("ICSEG_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1c5e6);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut ok, mut errors, mut escaped) = (0usize, 0usize, Vec::new());
    for (path, loader) in &inputs {
        let original = std::fs::read(path).unwrap();
        let name = Path::new("mutated");
        for round in 0..per_file {
            let mut b = original.clone();
            match round % 3 {
                0 => b.truncate(rng.random_range(0..b.len())),
                1 => {
                    // flips concentrated in the first 4 KiB, where the headers are
                    for _ in 0..rng.random_range(1..=8) {
                        let limit = if rng.random_range(0..4) == 0 {
                            b.len()
                        } else {
                            b.len().min(4096)
                        };
                        let at = rng.random_range(0..limit);
                        b[at] ^= 1 << rng.random_range(0..8);
                    }
                }
                _ => {
                    let at = rng.random_range(0..b.len().min(4096));
                    let end = (at + rng.random_range(1..16)).min(b.len());
                    for x in &mut b[at..end] {
                        *x = rng.random();
                    }
                }
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| match loader {
                Loader::Dicom => io::dicom::read_bytes(&b, name).map(|v| check_volume(&v.volume)),
                Loader::Nifti => {
                    io::nifti::read_volume_bytes(&b, name).map(|v| check_volume(&v.volume))
                }
                Loader::Seg => seg::read_seg_bytes(&b, name, &reference).map(|s| {
                    assert_eq!(s.labels.geometry(), &reference);
                }),
            }));
            match outcome {
                Ok(Ok(())) => ok += 1,
                Ok(Err(e)) => {
                    errors += 1;
                    assert!(!e.to_string().is_empty());
                }
                Err(_) => escaped.push(format!("{} round {round}", path.display())),
            }
        }
    }
    std::panic::set_hook(previous_hook);
    let caught = caught.lock().unwrap().clone();
    println!(
        "{} damaged files: {ok} loaded, {errors} errors, {} panics caught inside decoders {:?}",
        inputs.len() * per_file,
        caught.len() - escaped.len(),
        caught
    );
    assert!(
        escaped.is_empty(),
        "panics escaped the loaders: {escaped:?}"
    );
    assert!(
        errors > inputs.len() * per_file / 3,
        "too few errors: the mutations were not exercised"
    );
}

fn check_volume(v: &Volume) {
    assert_eq!(v.voxels().len(), v.geometry().voxel_count());
    assert!(v.geometry().validate().is_ok());
    assert!(v.dims().iter().all(|&d| d > 0));
}
