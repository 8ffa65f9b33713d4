//! `icseg info PATH`: what a NIfTI file, DICOM file or DICOM folder holds — series,
//! dimensions, spacing, orientation, modality, transfer syntax — without any patient
//! identifier.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::io::dicom as io_dicom;
use crate::io::dicom::SeriesKind;
use crate::io::{self, Format, LoadError, LoadedVolume};
use crate::volume::{Axis, Geometry, Modality};

/// Arguments of `icseg info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A NIfTI file (.nii, .nii.gz), a DICOM file, or a folder scanned for DICOM files.
    pub path: PathBuf,
    /// Only describe this series (its Series Instance UID) of a DICOM folder.
    #[arg(long)]
    pub series: Option<String>,
}

/// Prints the summary.
pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let text = describe(&args.path, args.series.as_deref())?;
    print!("{text}");
    Ok(())
}

/// The summary `icseg info` prints.
pub fn describe(path: &Path, only_series: Option<&str>) -> Result<String, LoadError> {
    let mut out = String::new();
    match io::detect_format(path)? {
        Format::Nifti => {
            let v = io::nifti::read_volume(path)?;
            let _ = writeln!(out, "NIfTI-1 file: {}", path.display());
            volume_lines(&mut out, &v, "  ");
        }
        Format::Dicom => {
            let scan = io_dicom::scan(path)?;
            let files: usize = scan.series.iter().map(|s| s.files).sum();
            let _ = writeln!(
                out,
                "DICOM: {} ({} files in {} series{})",
                path.display(),
                files,
                scan.series.len(),
                if scan.skipped_files > 0 {
                    format!(", {} other files skipped", scan.skipped_files)
                } else {
                    String::new()
                }
            );
            if scan.series.is_empty() {
                return Err(LoadError::NoDicomImages {
                    path: path.into(),
                    files_seen: scan.skipped_files,
                });
            }
            let chosen: Vec<_> = scan
                .series
                .iter()
                .filter(|s| only_series.is_none_or(|uid| uid == s.series_instance_uid))
                .collect();
            if chosen.is_empty() {
                return Err(LoadError::SeriesNotFound { path: path.into() });
            }
            for (n, s) in chosen.iter().enumerate() {
                let _ = writeln!(out, "\nSeries {} of {}: {s}", n + 1, chosen.len());
                let uid = if s.series_instance_uid.is_empty() {
                    "(none recorded)"
                } else {
                    &s.series_instance_uid
                };
                let _ = writeln!(out, "  series UID:      {uid}");
                let kind = match s.kind {
                    SeriesKind::Image => "images",
                    SeriesKind::Segmentation => "segmentation (DICOM SEG)",
                    SeriesKind::NonImage => "no pixel data (report or document)",
                };
                let _ = writeln!(
                    out,
                    "  content:         {kind}, {} files, {} frames",
                    s.files, s.slices
                );
                for ts in s.transfer_syntax_names() {
                    let _ = writeln!(out, "  transfer syntax: {ts}");
                }
                if s.kind != SeriesKind::Image {
                    continue;
                }
                match io_dicom::load_series(path, &s.series_instance_uid) {
                    Ok(v) => volume_lines(&mut out, &v, "  "),
                    Err(e) => {
                        let _ = writeln!(out, "  cannot be opened as a volume: {e}");
                    }
                }
            }
        }
    }
    Ok(out)
}

fn view_name(g: &Geometry) -> &'static str {
    // The patient axis the slice normal (voxel axis k) is closest to.
    let d = g.direction[Axis::K.index()];
    let along = (0..3)
        .max_by(|&a, &b| d[a].abs().total_cmp(&d[b].abs()))
        .unwrap_or(2);
    match along {
        0 => "sagittal",
        1 => "coronal",
        _ => "axial",
    }
}

fn vec3(v: [f64; 3]) -> String {
    format!("({:.4}, {:.4}, {:.4})", v[0], v[1], v[2])
}

fn volume_lines(out: &mut String, v: &LoadedVolume, indent: &str) {
    let g = v.volume.geometry();
    let [nx, ny, nz] = g.dims;
    let [sx, sy, sz] = g.spacing_mm;
    let modality = match v.volume.modality {
        Modality::Ct => "CT",
        Modality::Mr => "MR",
        Modality::Other => "unknown",
    };
    let (lo, hi) = v.volume.value_range();
    let unit = if v.volume.modality == Modality::Ct {
        " HU"
    } else {
        ""
    };
    let extent = [nx as f64 * sx, ny as f64 * sy, nz as f64 * sz];
    let _ = writeln!(out, "{indent}modality:        {modality}");
    let _ = writeln!(
        out,
        "{indent}dimensions:      {nx} × {ny} × {nz} voxels (i × j × k, k = slices)"
    );
    let _ = writeln!(
        out,
        "{indent}spacing:         {sx:.4} × {sy:.4} × {sz:.4} mm"
    );
    let _ = writeln!(
        out,
        "{indent}extent:          {:.1} × {:.1} × {:.1} mm",
        extent[0], extent[1], extent[2]
    );
    let _ = writeln!(
        out,
        "{indent}orientation:     {} ({} slices); i {} j {} k {}",
        g.orientation_code(),
        view_name(g),
        vec3(g.direction[0]),
        vec3(g.direction[1]),
        vec3(g.direction[2])
    );
    let _ = writeln!(out, "{indent}origin (LPS):    {} mm", vec3(g.origin_mm));
    let _ = writeln!(out, "{indent}values:          {lo} to {hi}{unit}");
    for w in &v.warnings {
        let _ = writeln!(out, "{indent}warning:         {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Volume;

    #[test]
    fn describes_a_nifti_volume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ct.nii.gz");
        let g = Geometry {
            dims: [4, 3, 2],
            spacing_mm: [0.5, 0.5, 2.0],
            origin_mm: [10.0, -20.0, 30.0],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        };
        let mut voxels = vec![-1000.0; 24];
        voxels[5] = 40.0;
        io::nifti::write_volume(&path, &Volume::new(g, voxels, Modality::Ct).unwrap()).unwrap();
        let text = describe(&path, None).unwrap();
        assert!(text.starts_with("NIfTI-1 file"), "{text}");
        assert!(text.contains("4 × 3 × 2 voxels"), "{text}");
        assert!(text.contains("0.5000 × 0.5000 × 2.0000 mm"), "{text}");
        assert!(text.contains("LPS (axial slices)"), "{text}");
        assert!(text.contains("(10.0000, -20.0000, 30.0000) mm"), "{text}");
        assert!(text.contains("-1000 to 40 HU"), "{text}");
    }

    #[test]
    fn an_empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            describe(dir.path(), None),
            Err(LoadError::NoDicomImages { .. })
        ));
    }

    #[test]
    fn describes_the_shared_dicom_folders_without_patient_identifiers() {
        let Some(series) = crate::testing::shared_data("dicom/ct-abdomen-j2k-series") else {
            return;
        };
        let text = describe(&series, None).unwrap();
        assert!(text.contains("512 × 512 × 20 voxels"), "{text}");
        assert!(text.contains("0.9766 × 0.9766 × 2.0000 mm"), "{text}");
        assert!(text.contains("JPEG 2000"), "{text}");
        assert!(text.contains("modality:        CT"), "{text}");
        let seg = crate::testing::shared_data("dicom/seg-liver").unwrap();
        let text = describe(&seg, None).unwrap();
        assert!(text.contains("segmentation (DICOM SEG)"), "{text}");
        assert!(text.contains("512 × 512 × 3 voxels"), "{text}");
        // The patient name stored in the files must not appear.
        let obj = dicom::object::open_file(seg.join("ct-3slice/01.dcm")).unwrap();
        let name = obj
            .element(dicom::dictionary_std::tags::PATIENT_NAME)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(name.len() > 3);
        assert!(!text.contains(&name), "the summary shows the patient name");
    }
}
