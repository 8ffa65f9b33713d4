//! The annotation session: structures, their label voxels, per-slice review states,
//! undo/redo, session files and crash recovery. Headless: the UI drives it through the
//! methods here, and tests drive it the same way.
//!
//! # Working axis and slice states
//!
//! Annotation and propagation happen along one *working axis* (by default the volume's
//! slice axis `k`). Every structure has a [`SliceState`] per slice of that axis:
//!
//! - [`SliceState::Manual`]: drawn by the user; a support slice. An empty manual slice
//!   (painted, then erased) is a real "not here" annotation and is support too.
//! - [`SliceState::Predicted`]: filled in by the network; re-propagation may replace it.
//! - [`SliceState::Accepted`]: a prediction the user accepted; it joins the support set.
//! - [`SliceState::Rejected`]: a prediction the user rejected; it is cleared and the
//!   network leaves it alone from then on (paint on it to annotate it by hand).
//! - [`SliceState::Unlabelled`]: nothing yet.
//!
//! The network only ever writes to `Unlabelled` and `Predicted` slices, so manual and
//! accepted work is never overwritten. Painting on any slice makes it `Manual`.
//!
//! # Undo
//!
//! Every change goes through an undoable step stored as per-slice deltas (see
//! `history.rs`): a brush stroke, a polygon fill, an accept, a reject, or one propagation
//! run (its slices arrive one by one and join one step).

mod file;
mod history;
pub mod overview;
pub mod paint;
mod recovery;
pub mod review;

use crate::volume::{Axis, Geometry, Image2D, LabelMap, LabelValue, Volume};

pub use file::{SessionFile, SessionFileError, StructureRecord, volume_fingerprint};
pub use history::{DEFAULT_UNDO_BYTES, DEFAULT_UNDO_STEPS, EditKind};
pub use overview::{Jump, Overview, OverviewCache, StructureStats};
pub use paint::{IntensityRange, PaintMode, PaintOp, Shape};
pub use recovery::{AutosaveTimer, RecoveryFile, RecoveryStore};

use history::{Direction, History, SliceDelta, StateChange};

/// The review state of one slice for one structure (see the module docs).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum SliceState {
    /// Not annotated and not predicted.
    #[default]
    Unlabelled,
    /// Drawn by the user.
    Manual,
    /// Filled in by the network, not reviewed yet.
    Predicted,
    /// A prediction the user accepted (support slice).
    Accepted,
    /// A prediction the user rejected (cleared; the network leaves it alone).
    Rejected,
}

impl SliceState {
    /// One character per state, used in session files: `.`, `M`, `P`, `A`, `R`.
    pub fn code(self) -> char {
        match self {
            Self::Unlabelled => '.',
            Self::Manual => 'M',
            Self::Predicted => 'P',
            Self::Accepted => 'A',
            Self::Rejected => 'R',
        }
    }

    /// The state for a [`Self::code`] character.
    pub fn from_code(c: char) -> Option<Self> {
        Some(match c {
            '.' => Self::Unlabelled,
            'M' => Self::Manual,
            'P' => Self::Predicted,
            'A' => Self::Accepted,
            'R' => Self::Rejected,
            _ => return None,
        })
    }

    /// Whether the network may write this slice.
    pub fn network_may_write(self) -> bool {
        matches!(self, Self::Unlabelled | Self::Predicted)
    }

    /// Whether the user vouched for this slice (it may serve as support).
    pub fn is_user_approved(self) -> bool {
        matches!(self, Self::Manual | Self::Accepted)
    }
}

/// Display settings of one structure.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StructureStyle {
    /// The name shown in the label list ("Liver").
    pub name: String,
    /// Display colour, sRGB.
    pub colour: [u8; 3],
    /// Whether its overlay is drawn.
    pub visible: bool,
    /// Overlay opacity in `[0, 1]`.
    pub opacity: f32,
}

/// One structure being segmented: its label value, style and per-slice states.
#[derive(Clone, Debug, PartialEq)]
pub struct Structure {
    /// The voxel value in the label map (1..=65535).
    pub value: LabelValue,
    /// How it is drawn.
    pub style: StructureStyle,
    states: Vec<SliceState>,
    /// Uncertainty of predicted slices (see [`review`]); `None` elsewhere.
    uncertainty: Vec<Option<f32>>,
}

impl Structure {
    /// The state of slice `s` (`Unlabelled` out of range).
    pub fn state(&self, s: usize) -> SliceState {
        self.states.get(s).copied().unwrap_or_default()
    }

    /// All slice states along the working axis.
    pub fn states(&self) -> &[SliceState] {
        &self.states
    }

    /// The uncertainty score of a predicted slice.
    pub fn uncertainty(&self, s: usize) -> Option<f32> {
        self.uncertainty.get(s).copied().flatten()
    }
}

/// A colour palette for new structures (distinct, readable on greyscale).
pub const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [255, 225, 25],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
];

/// Why an edit was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    /// The structure does not exist.
    #[error("there is no structure with label {0}; add it in the label list first")]
    NoSuchStructure(LabelValue),
    /// The slice index is out of range.
    #[error("slice {slice} is outside the volume (it has {count} slices)")]
    SliceOutOfRange {
        /// Requested slice.
        slice: usize,
        /// Slices along the working axis.
        count: usize,
    },
    /// Only predicted slices can be accepted or rejected.
    #[error("slice {0} holds no prediction to review")]
    NotPredicted(usize),
    /// A stroke is already open.
    #[error("finish the current stroke first")]
    StrokeOpen,
    /// Every label value is in use.
    #[error("no free label value is left")]
    NoFreeLabel,
    /// An image handed in does not match the slice size.
    #[error("the image is {actual:?} pixels but the slices are {expected:?}")]
    SizeMismatch {
        /// Slice size `(width, height)`.
        expected: (usize, usize),
        /// Size given.
        actual: (usize, usize),
    },
    /// The working axis can only change before anything is annotated.
    #[error(
        "the working axis can only change while no slice has a state; clear the annotations first"
    )]
    AxisLocked,
}

/// The slices to send to the network for one structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropagationPlan {
    /// The structure.
    pub label: LabelValue,
    /// Manual and accepted slices, ascending.
    pub support: Vec<usize>,
    /// Slices to predict (unlabelled or predicted), nearest to the support first.
    pub targets: Vec<usize>,
}

/// A stroke in progress: the slice as it was before, and the working copy.
#[derive(Debug)]
struct OpenStroke {
    label: LabelValue,
    slice: usize,
    kind: EditKind,
    before: Image2D<LabelValue>,
    work: Image2D<LabelValue>,
}

/// The annotation state of one volume.
#[derive(Debug)]
pub struct Session {
    labels: LabelMap,
    axis: Axis,
    structures: Vec<Structure>,
    history: History,
    stroke: Option<OpenStroke>,
    /// Increases on every change of labels or states.
    revision: u64,
    /// Per working-axis slice: the revision of its last change (for texture uploads).
    slice_revisions: Vec<u64>,
}

impl Session {
    /// An empty session on `geometry`, working along `axis`.
    pub fn new(geometry: Geometry, axis: Axis) -> Self {
        let labels = LabelMap::empty(geometry);
        Self::with_labels(labels, axis)
    }

    /// A session whose label map starts as `labels` (e.g. read from a file). Every
    /// structure present gets a default style, and slices containing it are `Manual`.
    pub fn with_labels(labels: LabelMap, axis: Axis) -> Self {
        let n = labels.geometry().slice_count(axis);
        let mut s = Self {
            labels,
            axis,
            structures: Vec::new(),
            history: History::default(),
            stroke: None,
            revision: 0,
            slice_revisions: vec![0; n],
        };
        let present: Vec<LabelValue> = s.labels.label_counts().iter().map(|c| c.0).collect();
        for value in present {
            let mut st = s.new_structure(value, format!("Label {value}"));
            for slice in 0..n {
                if s.slice_contains(slice, value) {
                    st.states[slice] = SliceState::Manual;
                }
            }
            s.structures.push(st);
        }
        s
    }

    fn new_structure(&self, value: LabelValue, name: String) -> Structure {
        let n = self.slice_count();
        Structure {
            value,
            style: StructureStyle {
                name,
                colour: PALETTE[(value as usize + PALETTE.len() - 1) % PALETTE.len()],
                visible: true,
                opacity: 0.5,
            },
            states: vec![SliceState::Unlabelled; n],
            uncertainty: vec![None; n],
        }
    }

    // ----- reading -----

    /// The label map (all structures).
    pub fn labels(&self) -> &LabelMap {
        &self.labels
    }

    /// The grid.
    pub fn geometry(&self) -> &Geometry {
        self.labels.geometry()
    }

    /// The axis along which slices are annotated and propagated.
    pub fn axis(&self) -> Axis {
        self.axis
    }

    /// Slices along the working axis.
    pub fn slice_count(&self) -> usize {
        self.labels.geometry().slice_count(self.axis)
    }

    /// The structures, in the order they were added.
    pub fn structures(&self) -> &[Structure] {
        &self.structures
    }

    /// The structure with label `value`.
    pub fn structure(&self, value: LabelValue) -> Option<&Structure> {
        self.structures.iter().find(|s| s.value == value)
    }

    /// A counter that increases with every change of labels or states.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision at which working-axis slice `s` last changed.
    pub fn slice_revision(&self, s: usize) -> u64 {
        self.slice_revisions.get(s).copied().unwrap_or(0)
    }

    /// Whether slice `s` of the working axis contains any voxel of `label`.
    pub fn slice_contains(&self, s: usize, label: LabelValue) -> bool {
        if s >= self.slice_count() {
            return false;
        }
        if self.axis == Axis::K {
            let [nx, ny, _] = self.geometry().dims;
            let start = nx * ny * s;
            self.labels.labels()[start..start + nx * ny].contains(&label)
        } else {
            self.labels.slice(self.axis, s).data.contains(&label)
        }
    }

    /// The label pixels of working-axis slice `s`.
    ///
    /// # Panics
    /// If `s` is out of range.
    pub fn label_slice(&self, s: usize) -> Image2D<LabelValue> {
        self.labels.slice(self.axis, s)
    }

    /// A 0/1 mask of `label` on working-axis slice `s`.
    pub fn mask(&self, s: usize, label: LabelValue) -> Image2D<u8> {
        self.labels.slice_mask(self.axis, s, label)
    }

    // ----- structures -----

    /// Adds a structure with the lowest free label value and returns that value.
    pub fn add_structure(&mut self, name: &str) -> Result<LabelValue, EditError> {
        let value = (1..=LabelValue::MAX)
            .find(|v| self.structure(*v).is_none())
            .ok_or(EditError::NoFreeLabel)?;
        let name = if name.trim().is_empty() {
            format!("Label {value}")
        } else {
            name.trim().to_owned()
        };
        let st = self.new_structure(value, name);
        self.structures.push(st);
        self.revision += 1;
        Ok(value)
    }

    /// Mutable display settings of a structure (name, colour, visibility, opacity).
    pub fn style_mut(&mut self, value: LabelValue) -> Option<&mut StructureStyle> {
        self.revision += 1;
        self.structures
            .iter_mut()
            .find(|s| s.value == value)
            .map(|s| &mut s.style)
    }

    /// Whether [`Self::set_axis`] may change the working axis now: no structure has a
    /// slice state yet and no stroke is open.
    pub fn axis_free(&self) -> bool {
        self.stroke.is_none()
            && self
                .structures
                .iter()
                .all(|s| s.states.iter().all(|&st| st == SliceState::Unlabelled))
    }

    /// Changes the working axis. Allowed only while every slice state is `Unlabelled`
    /// (states along one axis mean nothing along another).
    pub fn set_axis(&mut self, axis: Axis) -> Result<(), EditError> {
        if axis == self.axis {
            return Ok(());
        }
        if self
            .structures
            .iter()
            .any(|s| s.states.iter().any(|&st| st != SliceState::Unlabelled))
            || self.stroke.is_some()
        {
            return Err(EditError::AxisLocked);
        }
        self.axis = axis;
        let n = self.slice_count();
        for s in &mut self.structures {
            s.states = vec![SliceState::Unlabelled; n];
            s.uncertainty = vec![None; n];
        }
        self.slice_revisions = vec![self.revision; n];
        self.history.clear();
        self.revision += 1;
        Ok(())
    }

    fn index_of(&self, label: LabelValue) -> Result<usize, EditError> {
        self.structures
            .iter()
            .position(|s| s.value == label)
            .ok_or(EditError::NoSuchStructure(label))
    }

    fn check_slice(&self, slice: usize) -> Result<(), EditError> {
        let count = self.slice_count();
        if slice >= count {
            return Err(EditError::SliceOutOfRange { slice, count });
        }
        Ok(())
    }

    // ----- strokes -----

    /// Starts a stroke (brush, eraser or polygon) of structure `label` on working-axis
    /// slice `slice`. Paint with [`Self::stroke`], finish with [`Self::end_stroke`].
    pub fn begin_stroke(
        &mut self,
        label: LabelValue,
        slice: usize,
        kind: EditKind,
    ) -> Result<(), EditError> {
        if self.stroke.is_some() {
            return Err(EditError::StrokeOpen);
        }
        self.index_of(label)?;
        self.check_slice(slice)?;
        let before = self.labels.slice(self.axis, slice);
        self.stroke = Some(OpenStroke {
            label,
            slice,
            kind,
            work: before.clone(),
            before,
        });
        Ok(())
    }

    /// Whether a stroke is open.
    pub fn stroke_open(&self) -> bool {
        self.stroke.is_some()
    }

    /// Applies `op` to the open stroke's slice and shows it at once. `image` is the same
    /// slice of the volume (for intensity-limited painting). Returns the pixels changed.
    pub fn stroke(&mut self, op: &PaintOp, image: Option<&Image2D<f32>>) -> usize {
        let Some(st) = self.stroke.as_mut() else {
            return 0;
        };
        let changed = paint::apply(op, st.label, &mut st.work, image);
        if changed > 0 {
            let (slice, axis) = (st.slice, self.axis);
            self.labels.set_slice(axis, slice, &st.work);
            self.touch(slice);
        }
        changed
    }

    /// Finishes the open stroke: records it as one undo step and makes the slice
    /// `Manual` for the stroke's structure. Returns whether anything changed.
    pub fn end_stroke(&mut self) -> bool {
        let Some(st) = self.stroke.take() else {
            return false;
        };
        let mut delta = SliceDelta::between(st.slice, &st.before.data, &st.work.data);
        if delta.changed_pixels() == 0 {
            return false;
        }
        if let Ok(i) = self.index_of(st.label) {
            let before = self.structures[i].states[st.slice];
            if before != SliceState::Manual {
                delta.states.push(StateChange {
                    label: st.label,
                    before,
                    after: SliceState::Manual,
                    uncertainty_before: self.structures[i].uncertainty[st.slice],
                    uncertainty_after: None,
                });
                self.structures[i].states[st.slice] = SliceState::Manual;
                self.structures[i].uncertainty[st.slice] = None;
            }
        }
        self.history.push(st.kind, None, delta);
        self.touch(st.slice);
        true
    }

    /// Abandons the open stroke, restoring the slice as it was.
    pub fn cancel_stroke(&mut self) {
        if let Some(st) = self.stroke.take() {
            self.labels.set_slice(self.axis, st.slice, &st.before);
            self.touch(st.slice);
        }
    }

    /// Paints one complete operation as its own undo step (a polygon fill, a click).
    pub fn paint(
        &mut self,
        label: LabelValue,
        slice: usize,
        op: &PaintOp,
        image: Option<&Image2D<f32>>,
    ) -> Result<bool, EditError> {
        let kind = match (&op.shape, op.mode) {
            (_, PaintMode::Erase) => EditKind::Erase,
            (Shape::Polygon { .. }, _) => EditKind::Fill,
            _ => EditKind::Paint,
        };
        self.begin_stroke(label, slice, kind)?;
        self.stroke(op, image);
        Ok(self.end_stroke())
    }

    // ----- review -----

    /// Accepts a predicted slice: it becomes support for the next propagation.
    pub fn accept(&mut self, label: LabelValue, slice: usize) -> Result<(), EditError> {
        self.review(label, slice, SliceState::Accepted, EditKind::Accept)
    }

    /// Rejects a predicted slice: its voxels of `label` are cleared and the network
    /// leaves the slice alone from then on.
    pub fn reject(&mut self, label: LabelValue, slice: usize) -> Result<(), EditError> {
        self.review(label, slice, SliceState::Rejected, EditKind::Reject)
    }

    fn review(
        &mut self,
        label: LabelValue,
        slice: usize,
        after: SliceState,
        kind: EditKind,
    ) -> Result<(), EditError> {
        if self.stroke.is_some() {
            return Err(EditError::StrokeOpen);
        }
        let i = self.index_of(label)?;
        self.check_slice(slice)?;
        if self.structures[i].states[slice] != SliceState::Predicted {
            return Err(EditError::NotPredicted(slice));
        }
        let before_px = self.labels.slice(self.axis, slice);
        let mut after_px = before_px.clone();
        if after == SliceState::Rejected {
            for p in &mut after_px.data {
                if *p == label {
                    *p = 0;
                }
            }
            self.labels.set_slice(self.axis, slice, &after_px);
        }
        let mut delta = SliceDelta::between(slice, &before_px.data, &after_px.data);
        delta.states.push(StateChange {
            label,
            before: SliceState::Predicted,
            after,
            uncertainty_before: self.structures[i].uncertainty[slice],
            uncertainty_after: None,
        });
        self.structures[i].states[slice] = after;
        self.structures[i].uncertainty[slice] = None;
        self.history.push(kind, None, delta);
        self.touch(slice);
        Ok(())
    }

    /// The predicted slice of `label` the network is least sure about (ties: nearest to
    /// `current`); see [`review`].
    pub fn next_to_review(&self, label: LabelValue, current: usize) -> Option<usize> {
        let st = self.structure(label)?;
        review::most_uncertain(
            st.states
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == SliceState::Predicted)
                .map(|(n, _)| (n, st.uncertainty[n].unwrap_or(0.0))),
            current,
        )
    }

    /// As [`Self::next_to_review`], but the predicted slices in `flagged` (e.g. the
    /// area and shape jumps of [`overview::flag_jumps`]) come before all the others;
    /// uncertainty ranks within each group.
    pub fn next_to_review_flagged(
        &self,
        label: LabelValue,
        current: usize,
        flagged: &[usize],
    ) -> Option<usize> {
        let st = self.structure(label)?;
        review::most_uncertain(
            st.states
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == SliceState::Predicted)
                .map(|(n, _)| {
                    // Uncertainty lies in [0, 1]: a flag outranks any of it.
                    let bonus = if flagged.contains(&n) { 2.0 } else { 0.0 };
                    (n, st.uncertainty[n].unwrap_or(0.0) + bonus)
                }),
            current,
        )
    }

    // ----- propagation -----

    /// Support slices of `label`: its manual and accepted slices. Those without any
    /// voxel of the structure are kept: the user said "not on this slice".
    pub fn support_slices(&self, label: LabelValue) -> Vec<usize> {
        let Some(st) = self.structure(label) else {
            return Vec::new();
        };
        (0..self.slice_count())
            .filter(|&s| st.states[s].is_user_approved())
            .collect()
    }

    /// What to send to the network for `label`: the support slices, and the slices to
    /// predict — every unlabelled or predicted slice within `margin` slices beyond the
    /// first and last support slice (`None`: the whole axis), nearest to the support
    /// first. `None` when there is no support slice yet.
    pub fn propagation_plan(
        &self,
        label: LabelValue,
        margin: Option<usize>,
    ) -> Option<PropagationPlan> {
        let st = self.structure(label)?;
        let support = self.support_slices(label);
        let (&first, &last) = (support.first()?, support.last()?);
        let n = self.slice_count();
        let (lo, hi) = match margin {
            Some(m) => (first.saturating_sub(m), (last + m).min(n - 1)),
            None => (0, n - 1),
        };
        let distance = |s: usize| support.iter().map(|&x| x.abs_diff(s)).min().unwrap_or(0);
        let mut targets: Vec<usize> = (lo..=hi)
            .filter(|&s| st.states[s].network_may_write())
            .collect();
        targets.sort_by_key(|&s| (distance(s), s));
        Some(PropagationPlan {
            label,
            support,
            targets,
        })
    }

    /// Writes the network's prediction for `label` on working-axis slice `slice`:
    /// pixels inside by [`crate::volume::is_inside`] get the label where they are background or already
    /// the label; the label's other pixels on the slice are cleared. Slices the user
    /// owns (manual, accepted, rejected) are left alone and `false` is returned.
    /// Predictions of one run share `group` and form one undo step.
    pub fn apply_prediction(
        &mut self,
        label: LabelValue,
        slice: usize,
        probabilities: &Image2D<f32>,
        group: u64,
    ) -> Result<bool, EditError> {
        let i = self.index_of(label)?;
        self.check_slice(slice)?;
        let expected = self.geometry().slice_dims(self.axis);
        let actual = (probabilities.width, probabilities.height);
        if actual != expected {
            return Err(EditError::SizeMismatch { expected, actual });
        }
        if self.stroke.as_ref().is_some_and(|s| s.slice == slice) {
            return Ok(false);
        }
        let state = self.structures[i].states[slice];
        if !state.network_may_write() {
            return Ok(false);
        }
        let before_px = self.labels.slice(self.axis, slice);
        let mut after_px = before_px.clone();
        for (p, &prob) in after_px.data.iter_mut().zip(&probabilities.data) {
            let inside = crate::volume::is_inside(prob);
            if inside && (*p == 0 || *p == label) {
                *p = label;
            } else if !inside && *p == label {
                *p = 0;
            }
        }
        let uncertainty = review::slice_uncertainty(&probabilities.data);
        let mut delta = SliceDelta::between(slice, &before_px.data, &after_px.data);
        delta.states.push(StateChange {
            label,
            before: state,
            after: SliceState::Predicted,
            uncertainty_before: self.structures[i].uncertainty[slice],
            uncertainty_after: Some(uncertainty),
        });
        self.labels.set_slice(self.axis, slice, &after_px);
        self.structures[i].states[slice] = SliceState::Predicted;
        self.structures[i].uncertainty[slice] = Some(uncertainty);
        self.history.push(EditKind::Propagation, Some(group), delta);
        self.touch(slice);
        Ok(true)
    }

    /// Classical "Fill between slices", without the network: shape-based interpolation
    /// of `label` between its support slices ([`crate::volume::interpolate`]), written
    /// like a prediction onto every slice between the first and last support slice that
    /// the network may write (so it is reviewed like one), as undo step `group`. Returns
    /// the slices written; 0 with fewer than two support slices.
    pub fn fill_between_slices(
        &mut self,
        label: LabelValue,
        group: u64,
    ) -> Result<usize, EditError> {
        self.index_of(label)?;
        let Some(plan) = self.propagation_plan(label, Some(0)) else {
            return Ok(0);
        };
        if plan.support.len() < 2 {
            return Ok(0);
        }
        let prior = crate::volume::interpolate::ShapePrior::from_label_map(
            &self.labels,
            self.axis,
            &plan.support,
            |v| v == label,
            0.0,
        );
        let (w, h) = self.geometry().slice_dims(self.axis);
        let mut written = 0;
        for &z in &plan.targets {
            if self.apply_prediction(label, z, &prior.probability(z, w, h), group)? {
                written += 1;
            }
        }
        self.finish_propagation(group);
        Ok(written)
    }

    /// Ends a propagation run's undo step (later slices of the same group start a new one).
    pub fn finish_propagation(&mut self, group: u64) {
        self.history.close_group(group);
    }

    /// Clears the predicted slices of `label` that are cut off from its support slices
    /// (manual and accepted) by an empty slice: the structure is the unbroken run of
    /// non-empty slices through its support (`volume::extent`, the rule `icseg propagate`
    /// and `icseg eval` apply too). Cleared slices stay `Predicted` — the network's
    /// answer there is now "nothing" — and the change joins the propagation's undo step
    /// `group`; call it before [`Self::finish_propagation`]. Returns the slices cleared.
    pub fn keep_predicted_run(
        &mut self,
        label: LabelValue,
        group: u64,
    ) -> Result<usize, EditError> {
        let i = self.index_of(label)?;
        let n = self.structures[i].states.len();
        let non_empty: Vec<bool> = (0..n)
            .map(|z| self.labels.slice(self.axis, z).data.contains(&label))
            .collect();
        let support: Vec<usize> = (0..n)
            .filter(|&z| self.structures[i].states[z].is_user_approved())
            .collect();
        let Some((lo, hi)) = crate::volume::extent::run_through_support(&non_empty, &support)
        else {
            return Ok(0);
        };
        let mut cleared = 0;
        for z in (0..n).filter(|&z| (z < lo || z > hi) && non_empty[z]) {
            if self.structures[i].states[z] != SliceState::Predicted
                || self.stroke.as_ref().is_some_and(|s| s.slice == z)
            {
                continue;
            }
            let before = self.labels.slice(self.axis, z);
            let mut after = before.clone();
            after
                .data
                .iter_mut()
                .filter(|p| **p == label)
                .for_each(|p| *p = 0);
            let mut delta = SliceDelta::between(z, &before.data, &after.data);
            delta.states.push(StateChange {
                label,
                before: SliceState::Predicted,
                after: SliceState::Predicted,
                uncertainty_before: self.structures[i].uncertainty[z],
                uncertainty_after: Some(0.0),
            });
            self.labels.set_slice(self.axis, z, &after);
            self.structures[i].uncertainty[z] = Some(0.0);
            self.history.push(EditKind::Propagation, Some(group), delta);
            self.touch(z);
            cleared += 1;
        }
        Ok(cleared)
    }

    // ----- undo -----

    /// Undoes the newest step. Returns what was undone.
    pub fn undo(&mut self) -> Option<EditKind> {
        if self.stroke.is_some() {
            return None;
        }
        let edit = self.history.pop_undo()?;
        for d in edit.deltas.iter().rev() {
            self.apply_delta(d, Direction::Undo);
        }
        let kind = edit.kind;
        self.history.undone(edit);
        Some(kind)
    }

    /// Redoes the newest undone step. Returns what was redone.
    pub fn redo(&mut self) -> Option<EditKind> {
        if self.stroke.is_some() {
            return None;
        }
        let edit = self.history.pop_redo()?;
        for d in &edit.deltas {
            self.apply_delta(d, Direction::Redo);
        }
        let kind = edit.kind;
        self.history.redone(edit);
        Some(kind)
    }

    /// What [`Self::undo`] would undo.
    pub fn undo_kind(&self) -> Option<EditKind> {
        self.history.undo_kind()
    }

    /// What [`Self::redo`] would redo.
    pub fn redo_kind(&self) -> Option<EditKind> {
        self.history.redo_kind()
    }

    /// Number of steps that can be undone.
    pub fn undo_steps(&self) -> usize {
        self.history.undo_len()
    }

    /// Number of steps that can be redone.
    pub fn redo_steps(&self) -> usize {
        self.history.redo_len()
    }

    /// Heap bytes held by the undo history.
    pub fn history_bytes(&self) -> usize {
        self.history.bytes()
    }

    fn apply_delta(&mut self, d: &SliceDelta, direction: Direction) {
        let mut px = self.labels.slice(self.axis, d.slice);
        d.write_pixels(&mut px.data, direction);
        self.labels.set_slice(self.axis, d.slice, &px);
        for ch in &d.states {
            if let Ok(i) = self.index_of(ch.label) {
                let (state, unc) = match direction {
                    Direction::Undo => (ch.before, ch.uncertainty_before),
                    Direction::Redo => (ch.after, ch.uncertainty_after),
                };
                self.structures[i].states[d.slice] = state;
                self.structures[i].uncertainty[d.slice] = unc;
            }
        }
        self.touch(d.slice);
    }

    fn touch(&mut self, slice: usize) {
        self.revision += 1;
        if let Some(r) = self.slice_revisions.get_mut(slice) {
            *r = self.revision;
        }
    }

    // ----- files -----

    /// A snapshot of this session for a session or recovery file.
    pub fn to_file(&self, volume_path: Option<&std::path::Path>, fingerprint: u64) -> SessionFile {
        SessionFile {
            volume_path: volume_path.map(std::path::Path::to_path_buf),
            series_uid: None,
            volume_fingerprint: fingerprint,
            axis: self.axis,
            structures: self
                .structures
                .iter()
                .map(|s| StructureRecord {
                    value: s.value,
                    style: s.style.clone(),
                    states: s.states.iter().map(|st| st.code()).collect(),
                    uncertainty: s.uncertainty.clone(),
                })
                .collect(),
            labels: self.labels.clone(),
        }
    }

    /// Restores a session from a file, checking that it belongs to `volume`.
    pub fn from_file(file: SessionFile, volume: &Volume) -> Result<Self, SessionFileError> {
        file.labels
            .geometry()
            .check_same_grid(volume.geometry(), 1e-3)
            .map_err(|e| SessionFileError::OtherVolume(e.to_string()))?;
        let fingerprint = volume_fingerprint(volume);
        if file.volume_fingerprint != fingerprint {
            return Err(SessionFileError::OtherVolume(
                "the voxel values differ".into(),
            ));
        }
        let n = file.labels.geometry().slice_count(file.axis);
        let mut structures = Vec::with_capacity(file.structures.len());
        for r in file.structures {
            let states: Option<Vec<SliceState>> =
                r.states.chars().map(SliceState::from_code).collect();
            let states = states.filter(|s| s.len() == n).ok_or_else(|| {
                SessionFileError::Corrupt(format!(
                    "the slice states of structure {} do not match the volume",
                    r.value
                ))
            })?;
            let mut uncertainty = r.uncertainty;
            uncertainty.resize(n, None);
            structures.push(Structure {
                value: r.value,
                style: r.style,
                states,
                uncertainty,
            });
        }
        Ok(Self {
            labels: file.labels,
            axis: file.axis,
            structures,
            history: History::default(),
            stroke: None,
            revision: 1,
            slice_revisions: vec![1; n],
        })
    }
}

#[cfg(test)]
mod tests;
