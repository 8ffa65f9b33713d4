use super::*;
use crate::volume::Modality;

const W: usize = 16;
const H: usize = 12;
const N: usize = 10;

fn session() -> (Session, LabelValue) {
    let g = Geometry::axis_aligned([W, H, N], [1.0, 1.0, 2.0]);
    let mut s = Session::new(g, Axis::K);
    let liver = s.add_structure("Liver").unwrap();
    (s, liver)
}

fn dab_op(x: f32, y: f32, r: f32, mode: PaintMode) -> PaintOp {
    PaintOp {
        shape: Shape::Capsule {
            from: [x, y],
            to: [x, y],
            radius_px: [r, r],
        },
        mode,
        range: None,
    }
}

const PAINT: PaintMode = PaintMode::Paint {
    overwrite_others: false,
};

fn disk_probabilities(cx: f32, cy: f32, r: f32, p_in: f32) -> Image2D<f32> {
    let mut img = Image2D::filled(W, H, 0.0f32);
    for y in 0..H {
        for x in 0..W {
            let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
            if d2 <= r * r {
                img.set(x, y, p_in);
            }
        }
    }
    img
}

#[test]
fn structures_get_the_lowest_free_label_and_a_name() {
    let (mut s, liver) = session();
    assert_eq!(liver, 1);
    let spleen = s.add_structure("  Spleen ").unwrap();
    assert_eq!(spleen, 2);
    assert_eq!(s.structure(2).unwrap().style.name, "Spleen");
    assert_eq!(s.add_structure("").unwrap(), 3);
    assert_eq!(s.structure(3).unwrap().style.name, "Label 3");
}

#[test]
fn a_stroke_paints_live_and_becomes_one_undo_step_making_the_slice_manual() {
    let (mut s, liver) = session();
    s.begin_stroke(liver, 3, EditKind::Paint).unwrap();
    s.stroke(&dab_op(5.0, 5.0, 1.0, PAINT), None);
    // Visible immediately, before the stroke ends.
    assert_eq!(s.labels().get([5, 5, 3]), Some(liver));
    s.stroke(&dab_op(8.0, 5.0, 1.0, PAINT), None);
    assert!(s.end_stroke());
    assert_eq!(s.undo_steps(), 1);
    assert_eq!(s.structure(liver).unwrap().state(3), SliceState::Manual);
    assert_eq!(s.labels().count(liver), 10);
    assert_eq!(s.undo(), Some(EditKind::Paint));
    assert_eq!(s.labels().count(liver), 0);
    assert_eq!(s.structure(liver).unwrap().state(3), SliceState::Unlabelled);
    assert_eq!(s.redo(), Some(EditKind::Paint));
    assert_eq!(s.labels().count(liver), 10);
    assert_eq!(s.structure(liver).unwrap().state(3), SliceState::Manual);
}

#[test]
fn a_stroke_that_changes_nothing_records_nothing() {
    let (mut s, liver) = session();
    s.begin_stroke(liver, 0, EditKind::Erase).unwrap();
    s.stroke(&dab_op(5.0, 5.0, 2.0, PaintMode::Erase), None);
    assert!(!s.end_stroke());
    assert_eq!(s.undo_steps(), 0);
    assert_eq!(s.structure(liver).unwrap().state(0), SliceState::Unlabelled);
}

#[test]
fn a_cancelled_stroke_restores_the_slice() {
    let (mut s, liver) = session();
    s.begin_stroke(liver, 2, EditKind::Paint).unwrap();
    s.stroke(&dab_op(5.0, 5.0, 2.0, PAINT), None);
    s.cancel_stroke();
    assert_eq!(s.labels().count(liver), 0);
    assert_eq!(s.undo_steps(), 0);
}

#[test]
fn edits_on_unknown_structures_or_slices_are_refused() {
    let (mut s, _) = session();
    assert_eq!(
        s.begin_stroke(9, 0, EditKind::Paint),
        Err(EditError::NoSuchStructure(9))
    );
    assert_eq!(
        s.begin_stroke(1, N, EditKind::Paint),
        Err(EditError::SliceOutOfRange { slice: N, count: N })
    );
}

#[test]
fn undo_and_redo_walk_back_and_forth_through_150_strokes() {
    let (mut s, liver) = session();
    for k in 0..150 {
        let slice = k % N;
        let x = (k / N) as f32;
        s.paint(liver, slice, &dab_op(x, 6.0, 0.5, PAINT), None)
            .unwrap();
    }
    let full = s.labels().clone();
    assert_eq!(s.undo_steps(), 150);
    for _ in 0..120 {
        assert!(s.undo().is_some());
    }
    // 30 strokes remain: slices 0..10 painted at x = 0, 1, 2.
    assert_eq!(s.labels().count(liver), 30);
    for _ in 0..120 {
        assert!(s.redo().is_some());
    }
    assert_eq!(s.labels(), &full);
    assert!(s.redo().is_none());
}

#[test]
fn history_stores_deltas_not_volumes() {
    // A 256×256×200 volume is 26 MB of labels; 100 small strokes must cost far less.
    let g = Geometry::axis_aligned([256, 256, 200], [1.0; 3]);
    let mut s = Session::new(g, Axis::K);
    let l = s.add_structure("x").unwrap();
    for k in 0..100 {
        s.paint(l, k, &dab_op(128.0, 128.0, 10.0, PAINT), None)
            .unwrap();
    }
    assert_eq!(s.undo_steps(), 100);
    // 317 pixels per dab, 4 bytes per pixel plus bookkeeping.
    assert!(
        s.history_bytes() < 100 * 8 * 1024,
        "{} bytes",
        s.history_bytes()
    );
}

#[test]
fn strokes_work_on_a_sagittal_working_axis() {
    let g = Geometry::axis_aligned([W, H, N], [1.0; 3]);
    let mut s = Session::new(g, Axis::I);
    let l = s.add_structure("x").unwrap();
    assert_eq!(s.slice_count(), W);
    // Sagittal slice pixels are (j, k).
    s.paint(l, 4, &dab_op(3.0, 7.0, 0.5, PAINT), None).unwrap();
    assert_eq!(s.labels().get([4, 3, 7]), Some(l));
    assert!(s.slice_contains(4, l));
    assert!(!s.slice_contains(5, l));
    s.undo();
    assert_eq!(s.labels().get([4, 3, 7]), Some(0));
}

#[test]
fn the_working_axis_is_locked_once_slices_have_states() {
    let (mut s, liver) = session();
    s.set_axis(Axis::J).unwrap();
    assert_eq!(s.slice_count(), H);
    s.paint(liver, 1, &dab_op(2.0, 2.0, 1.0, PAINT), None)
        .unwrap();
    assert_eq!(s.set_axis(Axis::K), Err(EditError::AxisLocked));
}

#[test]
fn the_plan_uses_manual_and_accepted_slices_and_targets_only_network_slices() {
    let (mut s, liver) = session();
    assert!(s.propagation_plan(liver, None).is_none(), "no support yet");
    s.paint(liver, 2, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    s.paint(liver, 6, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    let plan = s.propagation_plan(liver, Some(1)).unwrap();
    assert_eq!(plan.support, vec![2, 6]);
    // Slices 1..=7 minus the support; nearest to a support slice first.
    assert_eq!(plan.targets, vec![1, 3, 5, 7, 4]);
    // A manual slice erased back to empty says "not here": it is support too.
    s.paint(liver, 8, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    s.paint(liver, 8, &dab_op(5.0, 5.0, 3.0, PaintMode::Erase), None)
        .unwrap();
    assert!(!s.slice_contains(8, liver));
    assert_eq!(s.structure(liver).unwrap().state(8), SliceState::Manual);
    let all = s.propagation_plan(liver, None).unwrap();
    assert_eq!(all.support, vec![2, 6, 8]);
    assert_eq!(all.targets, vec![1, 3, 5, 7, 9, 0, 4]);
}

#[test]
fn predictions_fill_only_slices_the_network_may_write() {
    let (mut s, liver) = session();
    s.paint(liver, 2, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    let manual_before = s.label_slice(2);
    let probs = disk_probabilities(8.0, 6.0, 3.0, 0.9);
    assert_eq!(s.apply_prediction(liver, 2, &probs, 1), Ok(false));
    assert_eq!(s.label_slice(2), manual_before, "manual work untouched");
    assert_eq!(s.apply_prediction(liver, 3, &probs, 1), Ok(true));
    assert_eq!(s.structure(liver).unwrap().state(3), SliceState::Predicted);
    assert_eq!(
        s.mask(3, liver).data.iter().filter(|&&v| v == 1).count(),
        29
    );
    // Re-propagation replaces an earlier prediction completely.
    let moved = disk_probabilities(3.0, 3.0, 1.0, 0.8);
    assert_eq!(s.apply_prediction(liver, 3, &moved, 2), Ok(true));
    assert_eq!(s.mask(3, liver).data.iter().filter(|&&v| v == 1).count(), 5);
    assert_eq!(s.labels().get([8, 6, 3]), Some(0));
}

#[test]
fn fill_between_slices_interpolates_the_support_as_one_reviewable_undo_step() {
    let (mut s, liver) = session();
    assert_eq!(
        s.fill_between_slices(liver, 3),
        Ok(0),
        "nothing to fill between"
    );
    s.paint(liver, 2, &dab_op(5.0, 5.0, 3.0, PAINT), None)
        .unwrap();
    s.paint(liver, 6, &dab_op(8.0, 5.0, 3.0, PAINT), None)
        .unwrap();
    let steps = s.undo_steps();
    assert_eq!(s.fill_between_slices(liver, 3), Ok(3));
    assert_eq!(s.undo_steps(), steps + 1, "one undo step");
    for z in 3..=5 {
        assert_eq!(s.structure(liver).unwrap().state(z), SliceState::Predicted);
        assert!(s.slice_contains(z, liver), "slice {z}");
    }
    // The disc moves from x = 5 to x = 8: on slice 4, midway, it covers x = 7 but no
    // longer x = 2.
    assert_eq!(s.labels().get([7, 5, 4]), Some(liver));
    assert_eq!(s.labels().get([2, 5, 2]), Some(liver));
    assert_eq!(s.labels().get([2, 5, 4]), Some(0));
    assert!(
        !s.slice_contains(1, liver) && !s.slice_contains(7, liver),
        "only between"
    );
    s.undo();
    assert!(!s.slice_contains(4, liver));
}

#[test]
fn predicted_islands_beyond_an_empty_slice_are_cleared_in_the_same_undo_step() {
    let (mut s, liver) = session();
    s.paint(liver, 4, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    let disk = disk_probabilities(5.0, 5.0, 2.0, 0.9);
    let nothing = Image2D::filled(W, H, 0.1f32);
    // Predictions: 3 and 5 continue the structure, 6 is empty, 8 is an island.
    for (z, p) in [
        (3, &disk),
        (5, &disk),
        (6, &nothing),
        (8, &disk),
        (0, &disk),
    ] {
        assert_eq!(s.apply_prediction(liver, z, p, 7), Ok(true));
    }
    // Slice 1 (unlabelled, not predicted) already separates the island at 0.
    assert_eq!(s.keep_predicted_run(liver, 7), Ok(2));
    s.finish_propagation(7);
    let filled = |s: &Session| -> Vec<usize> {
        (0..N)
            .filter(|&z| s.mask(z, liver).data.contains(&1))
            .collect()
    };
    assert_eq!(filled(&s), vec![3, 4, 5]);
    assert_eq!(s.structure(liver).unwrap().state(8), SliceState::Predicted);
    // One undo removes the whole propagation, island clearing included.
    assert_eq!(s.undo(), Some(EditKind::Propagation));
    assert_eq!(filled(&s), vec![4]);
    assert_eq!(s.redo(), Some(EditKind::Propagation));
    assert_eq!(filled(&s), vec![3, 4, 5]);
}

#[test]
fn a_prediction_of_the_wrong_size_is_refused() {
    let (mut s, liver) = session();
    let small = Image2D::filled(W - 1, H, 0.9f32);
    assert_eq!(
        s.apply_prediction(liver, 1, &small, 1),
        Err(EditError::SizeMismatch {
            expected: (W, H),
            actual: (W - 1, H)
        })
    );
    assert_eq!(s.undo_steps(), 0);
}

#[test]
fn predictions_never_overwrite_other_structures() {
    let (mut s, liver) = session();
    let kidney = s.add_structure("Kidney").unwrap();
    s.paint(kidney, 4, &dab_op(8.0, 6.0, 1.0, PAINT), None)
        .unwrap();
    let probs = disk_probabilities(8.0, 6.0, 3.0, 0.9);
    s.apply_prediction(liver, 4, &probs, 1).unwrap();
    assert_eq!(s.labels().get([8, 6, 4]), Some(kidney));
    assert_eq!(s.labels().get([10, 6, 4]), Some(liver));
    assert_eq!(s.structure(kidney).unwrap().state(4), SliceState::Manual);
}

#[test]
fn accepting_a_prediction_adds_it_to_the_support_set() {
    let (mut s, liver) = session();
    s.paint(liver, 2, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    s.apply_prediction(liver, 3, &disk_probabilities(5.0, 5.0, 2.0, 0.9), 1)
        .unwrap();
    assert_eq!(s.support_slices(liver), vec![2]);
    s.accept(liver, 3).unwrap();
    assert_eq!(s.support_slices(liver), vec![2, 3]);
    assert_eq!(s.structure(liver).unwrap().state(3), SliceState::Accepted);
    assert_eq!(s.accept(liver, 3), Err(EditError::NotPredicted(3)));
    // Accepted work is never overwritten.
    s.apply_prediction(liver, 3, &Image2D::filled(W, H, 0.0), 2)
        .unwrap();
    assert!(s.slice_contains(3, liver));
    s.undo();
    assert_eq!(s.structure(liver).unwrap().state(3), SliceState::Predicted);
    assert_eq!(s.support_slices(liver), vec![2]);
}

#[test]
fn rejecting_clears_the_slice_and_keeps_the_network_away() {
    let (mut s, liver) = session();
    s.apply_prediction(liver, 5, &disk_probabilities(5.0, 5.0, 2.0, 0.9), 1)
        .unwrap();
    s.reject(liver, 5).unwrap();
    assert!(!s.slice_contains(5, liver));
    assert_eq!(s.structure(liver).unwrap().state(5), SliceState::Rejected);
    assert_eq!(
        s.apply_prediction(liver, 5, &disk_probabilities(5.0, 5.0, 2.0, 0.9), 2),
        Ok(false)
    );
    s.undo();
    assert!(s.slice_contains(5, liver));
    assert_eq!(s.structure(liver).unwrap().state(5), SliceState::Predicted);
}

#[test]
fn painting_on_a_predicted_slice_makes_it_manual_and_undo_restores_the_prediction() {
    let (mut s, liver) = session();
    s.apply_prediction(liver, 5, &disk_probabilities(5.0, 5.0, 2.0, 0.6), 1)
        .unwrap();
    let predicted = s.label_slice(5);
    s.paint(liver, 5, &dab_op(12.0, 8.0, 1.0, PAINT), None)
        .unwrap();
    assert_eq!(s.structure(liver).unwrap().state(5), SliceState::Manual);
    assert_eq!(s.structure(liver).unwrap().uncertainty(5), None);
    s.undo();
    assert_eq!(s.label_slice(5), predicted);
    assert_eq!(s.structure(liver).unwrap().state(5), SliceState::Predicted);
    assert!(s.structure(liver).unwrap().uncertainty(5).is_some());
}

#[test]
fn one_propagation_run_is_one_undo_step() {
    let (mut s, liver) = session();
    for k in 0..5 {
        s.apply_prediction(liver, k, &disk_probabilities(5.0, 5.0, 2.0, 0.9), 42)
            .unwrap();
    }
    s.finish_propagation(42);
    assert_eq!(s.undo_steps(), 1);
    assert_eq!(s.undo(), Some(EditKind::Propagation));
    assert_eq!(s.labels().count(liver), 0);
    assert!(
        s.structure(liver)
            .unwrap()
            .states()
            .iter()
            .all(|&st| st == SliceState::Unlabelled)
    );
}

#[test]
fn the_axis_is_free_until_a_slice_has_a_state() {
    let (mut s, liver) = session();
    assert!(s.axis_free());
    s.set_axis(Axis::J).unwrap();
    assert_eq!(s.slice_count(), H);
    s.begin_stroke(liver, 3, EditKind::Paint).unwrap();
    assert!(!s.axis_free(), "not during a stroke");
    s.stroke(&dab_op(5.0, 5.0, 1.0, PAINT), None);
    s.end_stroke();
    assert!(!s.axis_free());
    assert_eq!(s.set_axis(Axis::K), Err(EditError::AxisLocked));
    // Undoing the only stroke frees it again.
    s.undo();
    assert!(s.axis_free());
}

#[test]
fn flagged_slices_come_first_in_the_review_order() {
    let (mut s, liver) = session();
    s.apply_prediction(liver, 1, &disk_probabilities(5.0, 5.0, 2.0, 0.99), 1)
        .unwrap();
    s.apply_prediction(liver, 7, &disk_probabilities(5.0, 5.0, 2.0, 0.55), 1)
        .unwrap();
    // Slice 1 is certain but flagged: it goes first, then the most uncertain.
    assert_eq!(s.next_to_review_flagged(liver, 0, &[1]), Some(1));
    s.accept(liver, 1).unwrap();
    assert_eq!(s.next_to_review_flagged(liver, 0, &[1]), Some(7));
    // A flagged slice that is not predicted is not reviewed.
    s.accept(liver, 7).unwrap();
    assert_eq!(s.next_to_review_flagged(liver, 0, &[1, 7]), None);
}

#[test]
fn next_to_review_picks_the_most_uncertain_predicted_slice() {
    let (mut s, liver) = session();
    s.apply_prediction(liver, 1, &disk_probabilities(5.0, 5.0, 2.0, 0.99), 1)
        .unwrap();
    s.apply_prediction(liver, 7, &disk_probabilities(5.0, 5.0, 2.0, 0.55), 1)
        .unwrap();
    s.apply_prediction(liver, 4, &disk_probabilities(5.0, 5.0, 2.0, 0.8), 1)
        .unwrap();
    assert_eq!(s.next_to_review(liver, 0), Some(7));
    s.accept(liver, 7).unwrap();
    assert_eq!(s.next_to_review(liver, 0), Some(4));
    s.reject(liver, 4).unwrap();
    s.accept(liver, 1).unwrap();
    assert_eq!(s.next_to_review(liver, 0), None);
}

#[test]
fn intensity_limited_strokes_use_the_volume_slice() {
    let (mut s, liver) = session();
    let mut ct = Image2D::filled(W, H, -1000.0f32);
    ct.set(5, 5, 50.0);
    ct.set(6, 5, 70.0);
    let op = PaintOp {
        range: Some(IntensityRange {
            min: 0.0,
            max: 100.0,
        }),
        ..dab_op(5.0, 5.0, 3.0, PAINT)
    };
    s.paint(liver, 0, &op, Some(&ct)).unwrap();
    assert_eq!(s.labels().count(liver), 2);
}

#[test]
fn revisions_mark_the_changed_slices() {
    let (mut s, liver) = session();
    let r0 = s.slice_revision(3);
    s.paint(liver, 3, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    assert!(s.slice_revision(3) > r0);
    assert_eq!(s.slice_revision(4), 0);
    let r = s.revision();
    s.undo();
    assert!(s.revision() > r);
}

#[test]
fn a_label_map_from_a_file_becomes_manual_slices() {
    let g = Geometry::axis_aligned([4, 4, 5], [1.0; 3]);
    let mut labels = LabelMap::empty(g);
    labels.set([1, 1, 2], 3);
    labels.set([2, 2, 4], 3);
    let s = Session::with_labels(labels, Axis::K);
    let st = s.structure(3).unwrap();
    assert_eq!(
        st.states().iter().map(|s| s.code()).collect::<String>(),
        "..M.M"
    );
    assert_eq!(s.support_slices(3), vec![2, 4]);
}

fn test_volume() -> Volume {
    let g = Geometry::axis_aligned([W, H, N], [1.0, 1.0, 2.0]);
    let v = (0..g.voxel_count()).map(|n| (n % 97) as f32).collect();
    Volume::new(g, v, Modality::Mr).unwrap()
}

#[test]
fn a_session_survives_a_file_round_trip() {
    let volume = test_volume();
    let (mut s, liver) = session();
    let kidney = s.add_structure("Kidney").unwrap();
    s.style_mut(kidney).unwrap().colour = [1, 2, 3];
    s.style_mut(kidney).unwrap().visible = false;
    s.paint(liver, 2, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    s.paint(kidney, 2, &dab_op(12.0, 5.0, 1.0, PAINT), None)
        .unwrap();
    s.apply_prediction(liver, 3, &disk_probabilities(5.0, 5.0, 2.0, 0.7), 1)
        .unwrap();
    s.apply_prediction(liver, 4, &disk_probabilities(5.0, 5.0, 2.0, 0.9), 1)
        .unwrap();
    s.reject(liver, 4).unwrap();

    let fp = volume_fingerprint(&volume);
    let file = s.to_file(Some(std::path::Path::new("/data/ct.nii.gz")), fp);
    let bytes = file.to_bytes();
    let back = SessionFile::from_bytes(&bytes).unwrap();
    assert_eq!(back, file);
    let restored = Session::from_file(back, &volume).unwrap();
    assert_eq!(restored.labels(), s.labels());
    assert_eq!(restored.structures(), s.structures());
    assert_eq!(
        restored
            .structure(liver)
            .unwrap()
            .states()
            .iter()
            .map(|st| st.code())
            .collect::<String>(),
        "..MPR....."
    );
    assert_eq!(restored.next_to_review(liver, 0), Some(3));
}

#[test]
fn a_session_is_not_restored_onto_another_volume() {
    let volume = test_volume();
    let (s, _) = session();
    let file = s.to_file(None, volume_fingerprint(&volume));
    let mut other = volume.clone();
    other.voxels_mut()[17] += 1.0;
    assert!(matches!(
        Session::from_file(file.clone(), &other),
        Err(SessionFileError::OtherVolume(_))
    ));
    let g = Geometry::axis_aligned([W, H, N + 1], [1.0, 1.0, 2.0]);
    let bigger = Volume::new(g, vec![0.0; W * H * (N + 1)], Modality::Mr).unwrap();
    assert!(matches!(
        Session::from_file(file, &bigger),
        Err(SessionFileError::OtherVolume(_))
    ));
}

#[test]
fn damaged_session_files_are_errors_not_panics() {
    let volume = test_volume();
    let (mut s, liver) = session();
    s.paint(liver, 2, &dab_op(5.0, 5.0, 2.0, PAINT), None)
        .unwrap();
    let bytes = s.to_file(None, volume_fingerprint(&volume)).to_bytes();
    for cut in [0, 5, 14, 20, 40, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            SessionFile::from_bytes(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    let mut flipped = bytes.clone();
    let last = flipped.len() - 6;
    flipped[last] ^= 0xff; // inside the gzip CRC/length trailer
    assert!(SessionFile::from_bytes(&flipped).is_err());
    let mut newer = bytes.clone();
    newer[14] = 9;
    assert!(matches!(
        SessionFile::from_bytes(&newer),
        Err(SessionFileError::NewerVersion(9))
    ));
    assert!(SessionFile::from_bytes(b"not a session").is_err());
}

#[test]
fn recovery_files_of_dead_processes_are_offered_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecoveryStore::new(dir.path().join("recovery"));
    assert!(
        store.orphans().is_empty(),
        "missing folder: nothing to offer"
    );
    let (s, _) = session();
    let volume = test_volume();
    let own = store
        .write(&s.to_file(None, volume_fingerprint(&volume)))
        .unwrap();
    assert!(own.exists());
    assert!(store.orphans().is_empty(), "our own file is not an orphan");
    // A file left by a process id that cannot be running (above Linux's pid_max).
    let dead = store.dir().join("session-4194399.icseg-recovery");
    std::fs::copy(&own, &dead).unwrap();
    std::fs::write(store.dir().join("unrelated.txt"), b"x").unwrap();
    let orphans = store.orphans();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].path, dead);
    let file = SessionFile::read(&orphans[0].path).unwrap();
    assert!(Session::from_file(file, &volume).is_ok());
    store.discard(&orphans[0]);
    assert!(store.orphans().is_empty());
    store.clear_own();
    assert!(!own.exists());
}

#[test]
fn autosave_is_due_after_the_interval_only_with_unsaved_changes() {
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let mut timer = AutosaveTimer::new(Duration::from_secs(60), t0, 5);
    assert!(
        !timer.due(t0 + Duration::from_secs(61), 5),
        "nothing changed"
    );
    assert!(!timer.due(t0 + Duration::from_secs(59), 6), "too early");
    assert!(timer.due(t0 + Duration::from_secs(60), 6));
    timer.written(t0 + Duration::from_secs(60), 6);
    assert!(!timer.due(t0 + Duration::from_secs(100), 7));
    assert!(timer.due(t0 + Duration::from_secs(120), 7));
    assert_eq!(
        timer.remaining(t0 + Duration::from_secs(90)),
        Duration::from_secs(30)
    );
}
