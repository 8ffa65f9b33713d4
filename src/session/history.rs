//! Undo/redo as compact per-slice deltas.
//!
//! An [`Edit`] is what one user action (a brush stroke, an accept, a reject) or one
//! propagation run changed. It holds one [`SliceDelta`] per touched slice of the working
//! axis: the changed label pixels as runs with their old and new values, and the slice
//! states that changed. Undo writes the old values back, redo the new ones, so memory
//! grows with the number of changed pixels, never with the volume size.

use crate::volume::LabelValue;

use super::SliceState;

/// A run of consecutive changed pixels in a slice buffer (`x` fastest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// First pixel index.
    pub start: u32,
    /// Number of pixels.
    pub len: u32,
}

/// A change of one structure's state on one slice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct StateChange {
    pub label: LabelValue,
    pub before: SliceState,
    pub after: SliceState,
    pub uncertainty_before: Option<f32>,
    pub uncertainty_after: Option<f32>,
}

/// What one action changed on one slice of the working axis.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SliceDelta {
    /// Slice index along the working axis.
    pub slice: usize,
    runs: Vec<Run>,
    /// Label values before, one per pixel covered by `runs`, in run order.
    before: Vec<LabelValue>,
    /// Label values after, same layout as `before`.
    after: Vec<LabelValue>,
    /// Structure states that changed on this slice.
    pub states: Vec<StateChange>,
}

impl SliceDelta {
    /// The difference between two versions of one slice's label pixels.
    ///
    /// # Panics
    /// If the buffers differ in length (a programming error).
    pub fn between(slice: usize, before: &[LabelValue], after: &[LabelValue]) -> Self {
        assert_eq!(before.len(), after.len(), "slice buffers differ in size");
        let mut delta = Self {
            slice,
            ..Self::default()
        };
        let mut n = 0;
        while n < before.len() {
            if before[n] == after[n] {
                n += 1;
                continue;
            }
            let start = n;
            while n < before.len() && before[n] != after[n] {
                n += 1;
            }
            delta.runs.push(Run {
                start: start as u32,
                len: (n - start) as u32,
            });
            delta.before.extend_from_slice(&before[start..n]);
            delta.after.extend_from_slice(&after[start..n]);
        }
        delta
    }

    /// True when neither pixels nor states change.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.states.is_empty()
    }

    /// Number of changed pixels.
    pub fn changed_pixels(&self) -> usize {
        self.before.len()
    }

    /// Writes the old (`undo`) or new (`redo`) pixel values into a slice buffer.
    pub fn write_pixels(&self, pixels: &mut [LabelValue], direction: Direction) {
        let values = match direction {
            Direction::Undo => &self.before,
            Direction::Redo => &self.after,
        };
        let mut offset = 0;
        for run in &self.runs {
            let (s, l) = (run.start as usize, run.len as usize);
            pixels[s..s + l].copy_from_slice(&values[offset..offset + l]);
            offset += l;
        }
    }

    /// Bytes this delta occupies on the heap (for the history's memory budget).
    pub fn heap_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
            + (self.before.capacity() + self.after.capacity()) * std::mem::size_of::<LabelValue>()
            + self.states.capacity() * std::mem::size_of::<StateChange>()
    }
}

/// Which way a delta is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Restore the state before the edit.
    Undo,
    /// Re-apply the edit.
    Redo,
}

/// What kind of action an undo step records (shown in the Edit menu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditKind {
    /// A brush stroke.
    Paint,
    /// An eraser stroke.
    Erase,
    /// A lasso/polygon fill.
    Fill,
    /// A predicted slice accepted into the support set.
    Accept,
    /// A predicted slice rejected (cleared).
    Reject,
    /// Slices predicted by the network.
    Propagation,
}

impl EditKind {
    /// A short human name ("brush stroke").
    pub fn name(self) -> &'static str {
        match self {
            Self::Paint => "brush stroke",
            Self::Erase => "eraser stroke",
            Self::Fill => "polygon fill",
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Propagation => "propagation",
        }
    }
}

/// One undoable step: the deltas of every slice it touched, applied in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Edit {
    pub kind: EditKind,
    /// Propagation runs tag their edit with the job's generation so that slices arriving
    /// one by one join the same undo step.
    pub group: Option<u64>,
    pub deltas: Vec<SliceDelta>,
}

impl Edit {
    fn heap_bytes(&self) -> usize {
        self.deltas
            .iter()
            .map(SliceDelta::heap_bytes)
            .sum::<usize>()
            + self.deltas.capacity() * std::mem::size_of::<SliceDelta>()
    }
}

/// The undo and redo stacks with a step limit and a memory budget.
#[derive(Debug)]
pub(crate) struct History {
    undo: Vec<Edit>,
    redo: Vec<Edit>,
    max_steps: usize,
    max_bytes: usize,
}

/// Default number of undo steps kept.
pub const DEFAULT_UNDO_STEPS: usize = 256;
/// Default memory budget of the undo history (bytes).
pub const DEFAULT_UNDO_BYTES: usize = 512 << 20;

impl Default for History {
    fn default() -> Self {
        Self::new(DEFAULT_UNDO_STEPS, DEFAULT_UNDO_BYTES)
    }
}

impl History {
    pub fn new(max_steps: usize, max_bytes: usize) -> Self {
        Self {
            undo: Vec::new(),
            redo: Vec::new(),
            max_steps: max_steps.max(1),
            max_bytes,
        }
    }

    /// Records a new step; clears the redo stack. A delta for a `group` that is still on
    /// top of the undo stack joins that step instead of starting a new one.
    pub fn push(&mut self, kind: EditKind, group: Option<u64>, delta: SliceDelta) {
        if delta.is_empty() {
            return;
        }
        self.redo.clear();
        if let (Some(g), Some(top)) = (group, self.undo.last_mut())
            && top.group == Some(g)
        {
            top.deltas.push(delta);
        } else {
            self.undo.push(Edit {
                kind,
                group,
                deltas: vec![delta],
            });
        }
        self.trim();
    }

    /// Stops `group` from collecting further deltas (the next one opens a new step).
    pub fn close_group(&mut self, group: u64) {
        for e in self.undo.iter_mut().rev() {
            if e.group == Some(group) {
                e.group = None;
            }
        }
    }

    fn trim(&mut self) {
        while self.undo.len() > self.max_steps {
            self.undo.remove(0);
        }
        while self.undo.len() > 1 && self.bytes() > self.max_bytes {
            self.undo.remove(0);
        }
    }

    /// Heap bytes held by both stacks.
    pub fn bytes(&self) -> usize {
        self.undo
            .iter()
            .chain(&self.redo)
            .map(Edit::heap_bytes)
            .sum()
    }

    /// Takes the newest step for undoing; the caller applies it and hands it to
    /// [`Self::undone`].
    pub fn pop_undo(&mut self) -> Option<Edit> {
        self.undo.pop()
    }

    /// Takes the newest undone step for redoing.
    pub fn pop_redo(&mut self) -> Option<Edit> {
        self.redo.pop()
    }

    /// Files an undone step onto the redo stack.
    pub fn undone(&mut self, mut edit: Edit) {
        edit.group = None;
        self.redo.push(edit);
    }

    /// Files a redone step back onto the undo stack.
    pub fn redone(&mut self, edit: Edit) {
        self.undo.push(edit);
    }

    pub fn undo_kind(&self) -> Option<EditKind> {
        self.undo.last().map(|e| e.kind)
    }

    pub fn redo_kind(&self) -> Option<EditKind> {
        self.redo.last().map(|e| e.kind)
    }

    pub fn undo_len(&self) -> usize {
        self.undo.len()
    }

    pub fn redo_len(&self) -> usize {
        self.redo.len()
    }

    pub fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_stores_only_changed_runs_and_round_trips() {
        let before = vec![0, 0, 1, 1, 0, 0, 0, 2];
        let after = vec![0, 3, 3, 1, 0, 0, 5, 2];
        let d = SliceDelta::between(4, &before, &after);
        assert_eq!(
            d.runs,
            vec![Run { start: 1, len: 2 }, Run { start: 6, len: 1 }]
        );
        assert_eq!(d.changed_pixels(), 3);
        let mut px = after.clone();
        d.write_pixels(&mut px, Direction::Undo);
        assert_eq!(px, before);
        d.write_pixels(&mut px, Direction::Redo);
        assert_eq!(px, after);
    }

    #[test]
    fn identical_slices_give_an_empty_delta_that_is_not_recorded() {
        let mut h = History::default();
        h.push(
            EditKind::Paint,
            None,
            SliceDelta::between(0, &[1, 2], &[1, 2]),
        );
        assert_eq!(h.undo_len(), 0);
    }

    #[test]
    fn grouped_deltas_join_the_open_step_until_something_else_happens() {
        let mut h = History::default();
        let d = |s| SliceDelta::between(s, &[0], &[1]);
        h.push(EditKind::Propagation, Some(7), d(1));
        h.push(EditKind::Propagation, Some(7), d(2));
        assert_eq!(h.undo_len(), 1);
        h.push(EditKind::Paint, None, d(3));
        h.push(EditKind::Propagation, Some(7), d(4));
        assert_eq!(h.undo_len(), 3);
        h.close_group(7);
        h.push(EditKind::Propagation, Some(7), d(5));
        assert_eq!(h.undo_len(), 4);
    }

    #[test]
    fn step_limit_drops_the_oldest_steps() {
        let mut h = History::new(100, usize::MAX);
        for s in 0..150 {
            h.push(EditKind::Paint, None, SliceDelta::between(s, &[0], &[1]));
        }
        assert_eq!(h.undo_len(), 100);
        let oldest_kept = h.undo.first().unwrap().deltas[0].slice;
        assert_eq!(oldest_kept, 50);
    }

    #[test]
    fn memory_budget_drops_old_steps_but_keeps_the_newest() {
        let big_before = vec![0u16; 10_000];
        let big_after = vec![1u16; 10_000];
        // Each step is about 40 kB; a 100 kB budget keeps two.
        let mut h = History::new(1000, 100_000);
        for s in 0..10 {
            h.push(
                EditKind::Paint,
                None,
                SliceDelta::between(s, &big_before, &big_after),
            );
        }
        assert_eq!(h.undo_len(), 2);
        assert!(h.bytes() <= 100_000);
    }

    #[test]
    fn a_new_edit_clears_the_redo_stack() {
        let mut h = History::default();
        h.push(EditKind::Paint, None, SliceDelta::between(0, &[0], &[1]));
        let e = h.pop_undo().unwrap();
        h.undone(e);
        assert_eq!(h.redo_len(), 1);
        h.push(EditKind::Erase, None, SliceDelta::between(0, &[0], &[2]));
        assert_eq!(h.redo_len(), 0);
    }
}
