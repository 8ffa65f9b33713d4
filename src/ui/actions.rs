//! Everything the user can do, as plain values. Widgets return [`Action`]s; the app
//! applies them in [`super::state::AppState::apply`], which is ordinary code with
//! ordinary unit tests.

use std::path::PathBuf;

use crate::display::view::Camera;
use crate::display::{CtPreset, WindowLevel};
use crate::session::IntensityRange;
use crate::volume::{Axis, LabelValue};

use super::document::LabelFormat;
use super::propagation::StageChoice;

/// Editing and viewing tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tool {
    /// Click to move the crosshair.
    #[default]
    Crosshair,
    /// Paint the active structure.
    Brush,
    /// Erase the active structure.
    Eraser,
    /// Freehand lasso (drag) or polygon (click vertices, double-click to close) fill.
    Lasso,
    /// Click a pixel to see where the network looked.
    Explain,
    /// Drag to change window/level.
    WindowLevel,
}

impl Tool {
    /// All tools in toolbar order.
    pub const ALL: [Tool; 6] = [
        Self::Crosshair,
        Self::Brush,
        Self::Eraser,
        Self::Lasso,
        Self::Explain,
        Self::WindowLevel,
    ];

    /// Toolbar label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crosshair => "Crosshair",
            Self::Brush => "Brush",
            Self::Eraser => "Eraser",
            Self::Lasso => "Lasso",
            Self::Explain => "Explain",
            Self::WindowLevel => "W/L",
        }
    }

    /// Keyboard shortcut letter.
    pub fn key(self) -> &'static str {
        match self {
            Self::Crosshair => "C",
            Self::Brush => "B",
            Self::Eraser => "E",
            Self::Lasso => "L",
            Self::Explain => "X",
            Self::WindowLevel => "W",
        }
    }

    /// Whether the tool edits labels (and so works only on the working axis).
    pub fn edits(self) -> bool {
        matches!(self, Self::Brush | Self::Eraser | Self::Lasso)
    }
}

/// Brush and eraser settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BrushSettings {
    /// Radius in millimetres (round on anisotropic pixels).
    pub radius_mm: f32,
    /// Paint only voxels inside `range`.
    pub limit_to_range: bool,
    /// The intensity range for `limit_to_range`.
    pub range: IntensityRange,
    /// Whether painting may take voxels from other structures.
    pub overwrite_others: bool,
}

/// Brush radius limits in millimetres.
pub const BRUSH_RADIUS_MM: std::ops::RangeInclusive<f32> = 0.5..=100.0;

/// Which views are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One large view perpendicular to this axis.
    Single(Axis),
    /// The three views side by side.
    ThreeUp,
}

/// One thing the user asked for.
#[must_use = "actions do nothing until applied"]
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open a NIfTI file or DICOM folder.
    Open(PathBuf),
    /// Ask for a file to open (system dialog).
    OpenDialog,
    /// Show the Open from PACS window (DICOMweb search and pull).
    OpenPacs,
    /// Save the labels as DICOM SEG and store it on the PACS (STOW-RS).
    SendSegToPacs,
    /// Open one series of a DICOM folder.
    OpenSeries {
        /// The folder.
        path: PathBuf,
        /// Series Instance UID.
        series_uid: String,
    },
    /// Open a saved session (it names its volume).
    OpenSession(PathBuf),
    /// Load a label map file into the current session.
    ImportLabels(PathBuf),
    /// Annotate and propagate along `axis` from now on (only before any slice of any
    /// structure has a state: states along one axis mean nothing along another).
    SetWorkAxis(Axis),
    /// Move the crosshair.
    SetCursor([usize; 3]),
    /// Scroll slices of the view perpendicular to `axis`.
    StepSlice {
        /// View axis.
        axis: Axis,
        /// Slices to move (negative: backwards).
        delta: i64,
    },
    /// Jump to a slice.
    SetSlice {
        /// View axis.
        axis: Axis,
        /// Slice index.
        index: usize,
    },
    /// Choose a tool.
    SetTool(Tool),
    /// Multiply the brush radius (`[` and `]` use 1/1.25 and 1.25).
    ScaleBrush(f32),
    /// Change the brush's intensity limit and overwrite setting.
    SetBrush(BrushSettings),
    /// How far beyond the support slices to propagate (`None`: whole axis).
    SetPropagateMargin(Option<usize>),
    /// The most support slices one slice is segmented (and explained) with; more
    /// annotated slices are chosen from by similarity (`None`: use all; 0 counts as 1).
    SetSupportSize(Option<usize>),
    /// Chained propagation with these options, or (`None`) the paper's one-shot
    /// propagation with the support size.
    SetChain(Option<crate::engine::ChainOptions>),
    /// Classical "Fill between slices" for the active structure: shape-based
    /// interpolation between its support slices, without the network.
    FillBetweenSlices,
    /// Choose the layout.
    SetLayout(Layout),
    /// Zoom/pan of the view perpendicular to `axis`.
    SetCamera {
        /// View axis.
        axis: Axis,
        /// New zoom and pan.
        camera: Camera,
    },
    /// Fit every view.
    ResetCameras,
    /// Set the display window.
    SetWindow(WindowLevel),
    /// A CT preset window.
    Preset(CtPreset),
    /// The robust automatic window.
    AutoWindow,
    /// Make a structure the active one.
    SelectStructure(LabelValue),
    /// Add a structure and make it active.
    AddStructure,
    /// Rename a structure.
    RenameStructure(LabelValue, String),
    /// Change a structure's colour.
    SetColour(LabelValue, [u8; 3]),
    /// Show or hide a structure.
    SetVisible(LabelValue, bool),
    /// Change a structure's overlay opacity.
    SetOpacity(LabelValue, f32),
    /// Start a brush or eraser stroke at a point of the working-axis slice.
    StrokeBegin {
        /// Working-axis slice.
        slice: usize,
        /// Slice pixel coordinates.
        at: [f32; 2],
    },
    /// Continue the stroke to a point.
    StrokeTo([f32; 2]),
    /// Finish the stroke (one undo step).
    StrokeEnd,
    /// Add a lasso/polygon vertex on a working-axis slice.
    LassoPoint {
        /// Working-axis slice.
        slice: usize,
        /// Slice pixel coordinates.
        at: [f32; 2],
    },
    /// Close the lasso and fill it.
    LassoFinish,
    /// Drop the lasso.
    LassoCancel,
    /// Undo the last step.
    Undo,
    /// Redo the last undone step.
    Redo,
    /// Accept the prediction on the current working-axis slice.
    Accept,
    /// Reject the prediction on the current working-axis slice.
    Reject,
    /// Jump to the predicted slice to review next: the flagged area or shape jumps
    /// first, then the one the network is least sure about.
    NextToReview,
    /// Show or hide the diagnostics window (frame times, for developers).
    SetDiagnostics(bool),
    /// Send the active structure's support slices to the network.
    Propagate,
    /// Stop the running propagation.
    CancelPropagation,
    /// Explain the network's prediction at a pixel of a working-axis slice.
    Explain {
        /// Working-axis slice.
        slice: usize,
        /// Slice pixel coordinates.
        at: [f32; 2],
    },
    /// Close the explanation panel.
    CloseExplain,
    /// Save the explanation shown as PNGs (as the panel draws it) into a folder.
    ExportExplanation(PathBuf),
    /// Which attention stages the explanation panel shows.
    SetExplainStages(StageChoice),
    /// Save labels (and the session beside them) where Ctrl+S last saved, or ask.
    Save,
    /// Save labels (and the session) to a path in a format.
    SaveTo {
        /// Label file.
        path: PathBuf,
        /// Format.
        format: LabelFormat,
    },
    /// Write the session file only.
    SaveSession(PathBuf),
    /// Restore the `n`-th offered recovery file.
    RestoreRecovery(usize),
    /// Delete the `n`-th offered recovery file.
    DiscardRecovery(usize),
    /// Hide the `n`-th notice.
    DismissNotice(usize),
    /// Close the save dialog.
    CloseSaveDialog,
    /// Go ahead with the action that was waiting because it would replace unsaved work.
    ReplaceDiscarding,
    /// Drop the action that would replace unsaved work.
    CancelReplace,
    /// Quit, asking first if there is unsaved work.
    Quit,
    /// Quit without saving (the user confirmed).
    QuitDiscarding,
    /// Keep running (the user cancelled quitting).
    CancelQuit,
}
