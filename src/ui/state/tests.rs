use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::io::VolumeSource;
use crate::session::SliceState;
use crate::ui::propagation::{DEFAULT_SUPPORT_SIZE, EngineSettings};
use crate::volume::{Geometry, LabelValue, Modality, Volume};

/// A process id above Linux's `pid_max`: never running, so its files are orphans.
const DEAD_PID: u32 = 4_194_399;

fn config(dir: &Path, pid: u32, autosave: Duration) -> AppConfig {
    AppConfig {
        open: None,
        recovery: RecoveryStore::with_owner(dir.join("recovery"), pid),
        autosave_interval: autosave,
        engine: EngineSettings { engine: None },
    }
}

fn volume() -> Volume {
    let g = Geometry::axis_aligned([20, 16, 12], [1.0, 1.0, 2.0]);
    let v = (0..g.voxel_count())
        .map(|n| (n % 20) as f32 * 10.0)
        .collect();
    Volume::new(g, v, Modality::Ct).unwrap()
}

fn state_with_doc(dir: &Path) -> AppState {
    let mut s = AppState::new(
        config(dir, std::process::id(), Duration::from_secs(3600)),
        Arc::new(|| {}),
    );
    let path = dir.join("ct.nii.gz");
    let loaded = LoadedVolume {
        volume: volume(),
        source: VolumeSource::Nifti { path: path.clone() },
        warnings: Vec::new(),
    };
    s.set_document(Document::new(loaded, path));
    s
}

fn active(s: &AppState) -> LabelValue {
    s.doc.as_ref().unwrap().active.unwrap()
}

fn count(s: &AppState, label: LabelValue) -> usize {
    s.doc.as_ref().unwrap().session.labels().count(label)
}

fn paint_dab(s: &mut AppState, slice: usize, at: [f32; 2]) {
    s.apply(Action::SetTool(Tool::Brush));
    s.apply(Action::StrokeBegin { slice, at });
    s.apply(Action::StrokeEnd);
}

#[test]
fn slice_steps_and_cursor_moves_stay_inside_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    assert_eq!(s.doc.as_ref().unwrap().cursor, [10, 8, 6]);
    s.apply(Action::StepSlice {
        axis: Axis::K,
        delta: 100,
    });
    assert_eq!(s.doc.as_ref().unwrap().cursor[2], 11);
    s.apply(Action::StepSlice {
        axis: Axis::K,
        delta: -100,
    });
    assert_eq!(s.doc.as_ref().unwrap().cursor[2], 0);
    s.apply(Action::SetCursor([99, 3, 5]));
    assert_eq!(s.doc.as_ref().unwrap().cursor, [19, 3, 5]);
}

#[test]
fn a_brush_drag_paints_one_undoable_stroke_on_the_working_slice() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let l = active(&s);
    s.apply(Action::SetTool(Tool::Brush));
    s.apply(Action::StrokeBegin {
        slice: 3,
        at: [4.0, 8.0],
    });
    s.apply(Action::StrokeTo([14.0, 8.0]));
    assert!(s.stroking());
    s.apply(Action::StrokeEnd);
    let doc = s.doc.as_ref().unwrap();
    // 4 mm radius on 1 mm pixels: a capsule 8 px tall, 10 + 8 px long.
    assert!(doc.session.labels().get([9, 8, 3]) == Some(l));
    assert!(doc.session.labels().get([9, 12, 3]) == Some(l));
    assert!(doc.session.labels().get([9, 13, 3]) == Some(0));
    assert_eq!(
        doc.session.structure(l).unwrap().state(3),
        SliceState::Manual
    );
    assert_eq!(doc.session.undo_steps(), 1);
    s.apply(Action::Undo);
    assert_eq!(count(&s, l), 0);
    s.apply(Action::Redo);
    assert!(count(&s, l) > 0);
}

#[test]
fn the_eraser_removes_what_the_brush_painted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let l = active(&s);
    paint_dab(&mut s, 2, [10.0, 8.0]);
    let painted = count(&s, l);
    assert!(painted > 0);
    s.apply(Action::SetTool(Tool::Eraser));
    s.apply(Action::ScaleBrush(2.0));
    s.apply(Action::StrokeBegin {
        slice: 2,
        at: [10.0, 8.0],
    });
    s.apply(Action::StrokeEnd);
    assert_eq!(count(&s, l), 0);
}

#[test]
fn the_intensity_limited_brush_paints_only_voxels_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let l = active(&s);
    // Voxel value = 10 × i: the range 80..=110 allows columns i = 8..=11.
    let mut brush = s.brush;
    brush.limit_to_range = true;
    brush.range = IntensityRange {
        min: 80.0,
        max: 110.0,
    };
    s.apply(Action::SetBrush(brush));
    s.apply(Action::ScaleBrush(2.0)); // 8 mm
    paint_dab(&mut s, 1, [10.0, 8.0]);
    let labels = s.doc.as_ref().unwrap().session.label_slice(1);
    let columns: Vec<usize> = (0..20).filter(|&x| labels.get(x, 8) == l).collect();
    assert_eq!(columns, vec![8, 9, 10, 11]);
}

#[test]
fn brush_size_keys_scale_within_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    s.apply(Action::ScaleBrush(1.25));
    assert_eq!(s.brush.radius_mm, 5.0);
    for _ in 0..100 {
        s.apply(Action::ScaleBrush(1.0 / 1.25));
    }
    assert_eq!(s.brush.radius_mm, 0.5);
}

#[test]
fn a_lasso_fills_its_polygon_and_escape_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let l = active(&s);
    s.apply(Action::SetTool(Tool::Lasso));
    for at in [[2.5, 2.5], [7.5, 2.5], [7.5, 6.5], [2.5, 6.5]] {
        s.apply(Action::LassoPoint { slice: 4, at });
    }
    s.apply(Action::LassoFinish);
    // x 3..=7, y 3..=6.
    assert_eq!(count(&s, l), 20);
    s.apply(Action::LassoPoint {
        slice: 4,
        at: [10.0, 10.0],
    });
    s.apply(Action::LassoCancel);
    assert!(s.lasso.is_none());
    assert_eq!(count(&s, l), 20);
}

#[test]
fn structures_can_be_added_renamed_recoloured_and_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    s.apply(Action::AddStructure);
    let second = active(&s);
    assert_eq!(second, 2);
    s.apply(Action::RenameStructure(second, " Kidney ".into()));
    s.apply(Action::SetColour(second, [1, 2, 3]));
    s.apply(Action::SetVisible(second, false));
    s.apply(Action::SetOpacity(second, 3.0));
    let st = s
        .doc
        .as_ref()
        .unwrap()
        .session
        .structure(second)
        .unwrap()
        .style
        .clone();
    assert_eq!(st.name, "Kidney");
    assert_eq!(st.colour, [1, 2, 3]);
    assert!(!st.visible);
    assert_eq!(st.opacity, 1.0);
    s.apply(Action::SelectStructure(1));
    assert_eq!(active(&s), 1);
    s.apply(Action::SelectStructure(77));
    assert_eq!(active(&s), 1, "unknown structures are not selected");
}

#[test]
fn reviewing_a_slice_without_prediction_is_a_message_not_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    s.apply(Action::Accept);
    s.apply(Action::Reject);
    assert_eq!(s.doc.as_ref().unwrap().session.undo_steps(), 0);
    assert!(s.status_line().unwrap().contains("no prediction"));
}

#[test]
fn accept_and_next_to_review_work_through_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let l = active(&s);
    {
        let doc = s.doc.as_mut().unwrap();
        let mut sure = Image2D::filled(20, 16, 0.0f32);
        let mut unsure = Image2D::filled(20, 16, 0.0f32);
        for y in 4..8 {
            for x in 4..8 {
                sure.set(x, y, 0.99);
                unsure.set(x, y, 0.6);
            }
        }
        doc.session.apply_prediction(l, 2, &sure, 1).unwrap();
        doc.session.apply_prediction(l, 9, &unsure, 1).unwrap();
    }
    s.apply(Action::NextToReview);
    assert_eq!(s.doc.as_ref().unwrap().work_slice(), 9);
    s.apply(Action::Accept);
    let doc = s.doc.as_ref().unwrap();
    assert_eq!(
        doc.session.structure(l).unwrap().state(9),
        SliceState::Accepted
    );
    assert_eq!(doc.session.support_slices(l), vec![9]);
    // Accepting moved on to the remaining prediction.
    assert_eq!(doc.work_slice(), 2);
    s.apply(Action::Reject);
    assert_eq!(
        s.doc
            .as_ref()
            .unwrap()
            .session
            .structure(l)
            .unwrap()
            .state(2),
        SliceState::Rejected
    );
}

#[test]
fn propagating_without_support_or_network_explains_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    s.apply(Action::Propagate);
    assert!(
        s.problems()
            .any(|(_, n)| n.text.contains("paint the structure"))
    );
    paint_dab(&mut s, 5, [10.0, 8.0]);
    s.apply(Action::Propagate);
    assert!(
        s.problems()
            .any(|(_, n)| n.text.contains("network is not available"))
    );
}

#[test]
fn the_support_size_setting_goes_with_every_propagation_and_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), std::process::id(), Duration::from_secs(3600));
    cfg.engine = EngineSettings {
        engine: Some(crate::engine::EngineConfig {
            device: crate::engine::DeviceRequest::Choice(crate::engine::DeviceChoice::Cpu),
            model: crate::model::ModelConfig::tiny(),
            weights: crate::engine::WeightsChoice::Random,
            ..crate::engine::EngineConfig::default()
        }),
    };
    let mut s = AppState::new(cfg, Arc::new(|| {}));
    let path = dir.path().join("ct.nii.gz");
    s.set_document(Document::new(
        LoadedVolume {
            volume: volume(),
            source: VolumeSource::Nifti { path: path.clone() },
            warnings: Vec::new(),
        },
        path,
    ));
    assert_eq!(s.support_size, Some(DEFAULT_SUPPORT_SIZE));
    // The support size applies to the paper's one-shot propagation.
    s.chain = None;
    s.apply(Action::SetSupportSize(Some(0)));
    assert_eq!(s.support_size, Some(1), "at least one support slice");
    s.apply(Action::SetSupportSize(Some(2)));
    assert_eq!(s.support_size, Some(2));
    for slice in [2, 4, 6, 8] {
        paint_dab(&mut s, slice, [10.0, 8.0]);
    }
    let wait = |s: &mut AppState| {
        let events = s.propagation.wait(&mut s.doc, Duration::from_secs(120));
        assert!(
            !events.notices.iter().any(|(l, _)| *l == Level::Error),
            "{:?}",
            events.notices
        );
    };
    s.apply(Action::Propagate);
    wait(&mut s);
    let last = s
        .propagation
        .last()
        .expect("the propagation finished")
        .clone();
    assert_eq!((last.support_slices, last.support_size), (4, Some(2)));
    assert!(last.support_groups() >= 1);
    // The explanation shows the two slices the clicked slice was predicted with.
    s.apply(Action::Explain {
        slice: 5,
        at: [10.0, 8.0],
    });
    wait(&mut s);
    let explained = s
        .propagation
        .explanation()
        .unwrap()
        .result
        .as_ref()
        .unwrap();
    assert_eq!(explained.candidates, 4);
    assert_eq!(explained.support_slices.len(), 2);
    // Every slice of this volume shows the same image, so all four tie and the two
    // nearest to slice 5 win.
    assert_eq!(explained.support_slices, vec![4, 6]);
    // "All supports": every query uses all four.
    s.apply(Action::SetSupportSize(None));
    s.apply(Action::Propagate);
    wait(&mut s);
    let last = s.propagation.last().unwrap();
    assert_eq!((last.support_slices, last.support_size), (4, None));
    assert_eq!(last.support_groups(), 1);
}

#[test]
fn saving_writes_labels_and_session_and_clears_the_unsaved_mark() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let l = active(&s);
    paint_dab(&mut s, 5, [10.0, 8.0]);
    assert!(s.unsaved());
    s.apply(Action::Save);
    let dialog = s.save_dialog.clone().expect("first save asks where");
    assert!(dialog.path.ends_with("ct.labels.nii.gz"), "{}", dialog.path);
    assert_eq!(dialog.format, LabelFormat::Nifti);
    let path = dir.path().join("out.nii.gz");
    s.apply(Action::SaveTo {
        path: path.clone(),
        format: LabelFormat::Nifti,
    });
    assert!(s.save_dialog.is_none());
    assert!(!s.unsaved());
    let doc = s.doc.as_ref().unwrap();
    let back = io::read_label_map(&path, doc.volume.geometry()).unwrap();
    assert_eq!(back.labels(), doc.session.labels().labels());
    let session = SessionFile::read(&session_path_for(&path)).unwrap();
    assert_eq!(session.structures[0].states.chars().nth(5), Some('M'));
    assert_eq!(session.structures[0].value, l);
    // The next Ctrl+S goes to the same place without asking.
    paint_dab(&mut s, 6, [10.0, 8.0]);
    s.apply(Action::Save);
    assert!(s.save_dialog.is_none());
    assert!(!s.unsaved());
}

#[test]
fn a_failed_save_is_reported_and_keeps_the_work_unsaved() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    paint_dab(&mut s, 5, [10.0, 8.0]);
    s.apply(Action::SaveTo {
        path: dir.path().join("no-such-folder").join("x.nii.gz"),
        format: LabelFormat::Nifti,
    });
    assert!(s.unsaved());
    assert!(s.problems().count() >= 1);
}

#[test]
fn quitting_with_unsaved_work_asks_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    s.apply(Action::Quit);
    assert_eq!(
        s.quit,
        QuitState::Confirmed,
        "nothing unsaved: quit at once"
    );
    s.quit = QuitState::Running;
    paint_dab(&mut s, 5, [10.0, 8.0]);
    s.apply(Action::Quit);
    assert_eq!(s.quit, QuitState::Asking);
    s.apply(Action::CancelQuit);
    assert_eq!(s.quit, QuitState::Running);
    s.apply(Action::Quit);
    s.apply(Action::QuitDiscarding);
    assert_eq!(s.quit, QuitState::Confirmed);
}

#[test]
fn unreadable_files_become_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let junk = dir.path().join("junk.nii");
    std::fs::write(&junk, b"this is not an image").unwrap();
    s.apply(Action::Open(junk));
    assert!(s.wait_for_load(Duration::from_secs(20)));
    assert!(s.problems().count() >= 1);
    assert!(s.doc.is_some(), "the open document stays");
    s.apply(Action::Open(dir.path().join("missing.nii.gz")));
    assert!(s.wait_for_load(Duration::from_secs(20)));
    assert!(s.problems().count() >= 2);
}

#[test]
fn autosave_writes_a_recovery_file_that_a_later_run_restores() {
    let dir = tempfile::tempdir().unwrap();
    let ct = dir.path().join("ct.nii.gz");
    io::nifti::write_volume(&ct, &volume()).unwrap();

    // First run: a "crashed" process (its id is not running), autosaving at once.
    let mut first = AppState::new(
        AppConfig {
            open: Some(ct.clone()),
            ..config(dir.path(), DEAD_PID, Duration::ZERO)
        },
        Arc::new(|| {}),
    );
    assert!(first.wait_for_load(Duration::from_secs(20)));
    let l = active(&first);
    paint_dab(&mut first, 3, [10.0, 8.0]);
    paint_dab(&mut first, 7, [5.0, 5.0]);
    first.poll();
    assert!(first.wait_for_autosave(Duration::from_secs(20)));
    let painted = first.doc.as_ref().unwrap().session.labels().clone();
    drop(first); // no clean shutdown: the recovery file stays

    // Second run: offers the orphaned file and restores it.
    let mut second = AppState::new(
        config(dir.path(), std::process::id(), Duration::from_secs(60)),
        Arc::new(|| {}),
    );
    assert_eq!(second.recovery_offers.len(), 1);
    second.apply(Action::RestoreRecovery(0));
    assert!(second.wait_for_load(Duration::from_secs(20)));
    let doc = second.doc.as_ref().expect("restored");
    assert_eq!(doc.session.labels(), &painted);
    assert_eq!(
        doc.session.structure(l).unwrap().state(7),
        SliceState::Manual
    );
    assert!(doc.unsaved(), "restored work is not saved yet");
    assert!(second.recovery_offers.is_empty());
    assert!(
        RecoveryStore::new(dir.path().join("recovery"))
            .orphans()
            .is_empty()
    );
}

#[test]
fn a_dicom_series_is_saved_as_a_dicom_seg_that_reads_back() {
    let Some(series) = crate::testing::shared_data("dicom/seg-liver/ct-3slice") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = AppState::new(
        AppConfig {
            open: Some(series),
            ..config(dir.path(), std::process::id(), Duration::from_secs(3600))
        },
        Arc::new(|| {}),
    );
    assert!(s.wait_for_load(Duration::from_secs(60)));
    assert!(s.doc.as_ref().expect("the series opens").is_dicom());
    let l = active(&s);
    s.apply(Action::RenameStructure(l, "Liver".into()));
    paint_dab(&mut s, 1, [200.0, 250.0]);
    s.apply(Action::Save);
    assert_eq!(
        s.save_dialog.as_ref().unwrap().format,
        LabelFormat::DicomSeg
    );
    let out = dir.path().join("liver.seg.dcm");
    s.apply(Action::SaveTo {
        path: out.clone(),
        format: LabelFormat::DicomSeg,
    });
    assert!(!s.unsaved(), "{:?}", s.notices);
    let doc = s.doc.as_ref().unwrap();
    let seg = io::dicom::seg::read_seg(&out, doc.volume.geometry()).unwrap();
    assert_eq!(seg.segments.len(), 1);
    assert_eq!(seg.segments[0].name, "Liver");
    // Segment numbers start at 1 like our first structure.
    assert_eq!(seg.labels.labels(), doc.session.labels().labels());
    assert_eq!(
        seg.referenced_series_uid.as_deref(),
        doc.series_uid(),
        "the SEG references the series it was drawn on"
    );
}

#[test]
fn a_folder_with_two_series_asks_which_one_to_open() {
    let (Some(a), Some(b)) = (
        crate::testing::shared_data("dicom/seg-liver/ct-3slice"),
        crate::testing::shared_data("dicom/ct-abdomen-j2k-series"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for (n, from) in [a, b].iter().enumerate() {
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let name = format!("{n}-{}", entry.file_name().to_string_lossy());
            std::fs::copy(entry.path(), mixed.join(name)).unwrap();
        }
    }
    let mut s = AppState::new(
        config(dir.path(), std::process::id(), Duration::from_secs(3600)),
        Arc::new(|| {}),
    );
    s.apply(Action::Open(mixed.clone()));
    assert!(s.wait_for_load(Duration::from_secs(120)));
    let choice = s
        .series_choice
        .clone()
        .expect("two series: the user chooses");
    assert!(s.doc.is_none());
    let image_series: Vec<_> = choice
        .series
        .iter()
        .filter(|x| x.kind == io::dicom::SeriesKind::Image)
        .collect();
    assert_eq!(image_series.len(), 2);
    let three = image_series
        .iter()
        .find(|x| x.slices == 3)
        .expect("the 3-slice CT");
    s.apply(Action::OpenSeries {
        path: mixed,
        series_uid: three.series_instance_uid.clone(),
    });
    assert!(s.wait_for_load(Duration::from_secs(60)));
    assert!(s.series_choice.is_none());
    assert_eq!(s.doc.as_ref().unwrap().volume.dims()[2], 3);
}

#[test]
fn opening_another_volume_over_unsaved_work_asks_first() {
    let dir = tempfile::tempdir().unwrap();
    let ct = dir.path().join("other.nii.gz");
    io::nifti::write_volume(&ct, &volume()).unwrap();
    let mut s = state_with_doc(dir.path());
    let first_key = s.doc.as_ref().unwrap().key;
    paint_dab(&mut s, 5, [10.0, 8.0]);
    s.apply(Action::Open(ct.clone()));
    assert_eq!(s.pending_replace, Some(Action::Open(ct.clone())));
    assert!(s.loading().is_none(), "nothing is loaded before the answer");
    s.apply(Action::CancelReplace);
    assert!(s.pending_replace.is_none());
    assert_eq!(s.doc.as_ref().unwrap().key, first_key);
    s.apply(Action::Open(ct.clone()));
    s.apply(Action::ReplaceDiscarding);
    assert!(s.wait_for_load(Duration::from_secs(20)));
    assert_ne!(s.doc.as_ref().unwrap().key, first_key);
    assert!(!s.unsaved());
    // Nothing unsaved now: the next open goes ahead at once.
    s.apply(Action::Open(ct));
    assert!(s.pending_replace.is_none());
    assert!(s.wait_for_load(Duration::from_secs(20)));
}

#[test]
fn by_default_the_prior_carries_both_nearest_annotations_along_the_image() {
    use crate::engine::Strategy;
    use crate::volume::interpolate::Between;
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_doc(dir.path());
    let prior = |s: &AppState| match s.strategy() {
        Strategy::Chain(c) => Some((c.between, c.guided)),
        Strategy::OneShot { .. } => None,
    };
    assert_eq!(prior(&s), Some((Between::Matched, true)));
    // Also when only the ends are given (`docs/evaluation.md`, "Lever 3e").
    s.apply(Action::SetPropagateMargin(Some(0)));
    assert_eq!(prior(&s), Some((Between::Matched, true)));
    s.apply(Action::SetChain(None));
    assert_eq!(prior(&s), None, "one-shot has no prior");
}
