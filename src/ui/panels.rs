//! Menus, toolbar, side panel (structures, tools, review) and status bar. Each function
//! reads the state and returns the actions the user asked for.

use std::time::Instant;

use eframe::egui::{self, Color32};

use crate::display::view::{axes_in_display_order, plane_of};
use crate::display::{CtPreset, WindowLevel};
use crate::session::SliceState;
use crate::volume::interpolate::Between;

use super::actions::{Action, BRUSH_RADIUS_MM, Layout, Tool};
use super::document::{Document, LabelFormat};
use super::painter::Backend;
use super::propagation::DEFAULT_SUPPORT_SIZE;
use super::slice_states::{state_colour, state_name};
use super::slice_view::Readout;
use super::state::AppState;

/// The menu bar and toolbar.
pub fn top_bar_ui(ui: &mut egui::Ui, state: &AppState) -> Vec<Action> {
    let mut actions = Vec::new();
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| {
            if ui.button("Open file… (Ctrl+O)").clicked() {
                actions.push(Action::OpenDialog);
            }
            if ui.button("Open DICOM folder…").clicked()
                && let Some(p) = rfd::FileDialog::new().pick_folder()
            {
                actions.push(Action::Open(p));
            }
            if ui.button("Open session…").clicked()
                && let Some(p) = rfd::FileDialog::new()
                    .add_filter("ICSeg session", &["icseg"])
                    .pick_file()
            {
                actions.push(Action::OpenSession(p));
            }
            if ui.button("Open from PACS…").clicked() {
                actions.push(Action::OpenPacs);
            }
            ui.separator();
            let has_doc = state.doc.is_some();
            if ui
                .add_enabled(has_doc, egui::Button::new("Import label map…"))
                .clicked()
                && let Some(p) = pick_file()
            {
                actions.push(Action::ImportLabels(p));
            }
            if ui
                .add_enabled(has_doc, egui::Button::new("Save (Ctrl+S)"))
                .clicked()
            {
                actions.push(Action::Save);
            }
            if ui
                .add_enabled(has_doc, egui::Button::new("Save as…"))
                .clicked()
            {
                actions.push(Action::CloseSaveDialog);
                actions.push(Action::Save);
            }
            let dicom = state.doc.as_ref().is_some_and(|d| d.is_dicom());
            if ui
                .add_enabled(dicom, egui::Button::new("Send SEG to PACS"))
                .clicked()
            {
                actions.push(Action::SendSegToPacs);
            }
            ui.separator();
            if ui.button("Quit").clicked() {
                actions.push(Action::Quit);
            }
        });
        ui.menu_button("Edit", |ui| {
            let (undo, redo) = state.doc.as_ref().map_or((None, None), |d| {
                (d.session.undo_kind(), d.session.redo_kind())
            });
            let u = undo.map_or("Undo".to_owned(), |k| format!("Undo {} (Ctrl+Z)", k.name()));
            if ui
                .add_enabled(undo.is_some(), egui::Button::new(u))
                .clicked()
            {
                actions.push(Action::Undo);
            }
            let r = redo.map_or("Redo".to_owned(), |k| {
                format!("Redo {} (Ctrl+Shift+Z)", k.name())
            });
            if ui
                .add_enabled(redo.is_some(), egui::Button::new(r))
                .clicked()
            {
                actions.push(Action::Redo);
            }
        });
        ui.menu_button("View", |ui| {
            if let Some(doc) = &state.doc {
                for axis in axes_in_display_order(doc.volume.geometry()) {
                    let name = plane_of(doc.volume.geometry(), axis).name();
                    if ui.button(name).clicked() {
                        actions.push(Action::SetLayout(Layout::Single(axis)));
                    }
                }
            }
            if ui.button("Three views (4)").clicked() {
                actions.push(Action::SetLayout(Layout::ThreeUp));
            }
            if ui.button("Fit views (F)").clicked() {
                actions.push(Action::ResetCameras);
            }
            ui.separator();
            let mut diagnostics = state.show_diagnostics;
            if ui
                .checkbox(&mut diagnostics, "Diagnostics (frame times)")
                .changed()
            {
                actions.push(Action::SetDiagnostics(diagnostics));
            }
        });
        ui.menu_button("Window", |ui| {
            for p in CtPreset::ALL {
                if ui.button(p.label()).clicked() {
                    actions.push(Action::Preset(p));
                }
            }
            if ui.button("Automatic (MR)").clicked() {
                actions.push(Action::AutoWindow);
            }
        });
    });
    ui.horizontal(|ui| {
        for tool in Tool::ALL {
            let r = ui
                .selectable_label(state.tool == tool, tool.name())
                .on_hover_text(format!("{} ({})", tool.name(), tool.key()));
            if r.clicked() {
                actions.push(Action::SetTool(tool));
            }
        }
        ui.separator();
        if let Some(doc) = &state.doc {
            let geom = doc.volume.geometry();
            for axis in axes_in_display_order(geom) {
                let selected = state.layout == Layout::Single(axis);
                if ui
                    .selectable_label(selected, plane_of(geom, axis).name())
                    .clicked()
                {
                    actions.push(Action::SetLayout(Layout::Single(axis)));
                }
            }
            if ui
                .selectable_label(state.layout == Layout::ThreeUp, "3-up")
                .clicked()
            {
                actions.push(Action::SetLayout(Layout::ThreeUp));
            }
            ui.separator();
            if let Some(a) = window_editor_ui(ui, doc.window) {
                actions.push(a);
            }
        }
    });
    actions
}

fn pick_file() -> Option<std::path::PathBuf> {
    rfd::FileDialog::new()
        .add_filter("NIfTI or DICOM", &["nii", "gz", "dcm"])
        .add_filter("All files", &["*"])
        .pick_file()
}

/// The side panel: structures, tool settings, propagation and review.
pub fn side_panel_ui(ui: &mut egui::Ui, state: &AppState) -> Vec<Action> {
    let Some(doc) = &state.doc else {
        ui.label("Open a NIfTI file or DICOM folder (File menu), or drop it on the window.");
        return Vec::new();
    };
    let mut actions = structures_ui(ui, doc);
    ui.separator();
    actions.extend(brush_ui(ui, state, doc));
    ui.separator();
    actions.extend(propagate_ui(ui, state));
    ui.separator();
    actions.extend(review_ui(ui, doc));
    ui.separator();
    ui.heading("Statistics");
    super::overview::statistics_ui(ui, doc);
    actions
}

/// The structure list: colour, visibility, name, opacity; the active one highlighted.
fn structures_ui(ui: &mut egui::Ui, doc: &Document) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.heading("Structures");
    for st in doc.session.structures() {
        let v = st.value;
        ui.horizontal(|ui| {
            let mut colour = st.style.colour;
            if egui::color_picker::color_edit_button_srgb(ui, &mut colour).changed() {
                actions.push(Action::SetColour(v, colour));
            }
            let mut visible = st.style.visible;
            if ui
                .checkbox(&mut visible, "")
                .on_hover_text("Show or hide")
                .changed()
            {
                actions.push(Action::SetVisible(v, visible));
            }
            let mut name = st.style.name.clone();
            let active = doc.active == Some(v);
            let edit = egui::TextEdit::singleline(&mut name)
                .desired_width(110.0)
                .background_color(if active {
                    Color32::from_rgb(40, 70, 110)
                } else {
                    ui.visuals().extreme_bg_color
                });
            let r = ui.add(edit);
            if r.changed() {
                actions.push(Action::RenameStructure(v, name));
            }
            if r.gained_focus() || r.clicked() {
                actions.push(Action::SelectStructure(v));
            }
            if ui.selectable_label(active, "edit").clicked() {
                actions.push(Action::SelectStructure(v));
            }
        });
        let mut opacity = st.style.opacity;
        if ui
            .add(egui::Slider::new(&mut opacity, 0.0..=1.0).text("opacity"))
            .changed()
        {
            actions.push(Action::SetOpacity(v, opacity));
        }
    }
    if ui.button("+ Add structure").clicked() {
        actions.push(Action::AddStructure);
    }
    actions
}

/// Brush radius, intensity range and overwrite settings.
fn brush_ui(ui: &mut egui::Ui, state: &AppState, doc: &Document) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.heading("Brush");
    let mut radius = state.brush.radius_mm;
    if ui
        .add(
            egui::Slider::new(&mut radius, BRUSH_RADIUS_MM)
                .logarithmic(true)
                .text("radius mm  [ ]"),
        )
        .changed()
    {
        actions.push(Action::ScaleBrush(radius / state.brush.radius_mm));
    }
    let mut brush = state.brush;
    let mut changed = ui
        .checkbox(&mut brush.limit_to_range, "Only intensities in range")
        .changed();
    ui.add_enabled_ui(brush.limit_to_range, |ui| {
        ui.horizontal(|ui| {
            changed |= ui
                .add(egui::DragValue::new(&mut brush.range.min).speed(1.0))
                .changed();
            ui.label("to");
            changed |= ui
                .add(egui::DragValue::new(&mut brush.range.max).speed(1.0))
                .changed();
            if ui
                .button("= window")
                .on_hover_text("Use the display window's range")
                .clicked()
            {
                brush.range.min = doc.window.low();
                brush.range.max = doc.window.high();
                changed = true;
            }
        });
    });
    changed |= ui
        .checkbox(&mut brush.overwrite_others, "Paint over other structures")
        .changed();
    if changed {
        actions.push(Action::SetBrush(brush));
    }
    actions
}

/// Propagate and cancel, the range of slices and the support size; why the network is
/// unavailable, when it is.
fn propagate_ui(ui: &mut egui::Ui, state: &AppState) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.heading("Propagate");
    let running = state.propagation.run().is_some();
    ui.horizontal(|ui| {
        let can = !running && state.propagation.failure().is_none();
        if ui
            .add_enabled(can, egui::Button::new("Propagate (P)"))
            .on_hover_text(
                "Predict the active structure on the other slices from its support slices",
            )
            .clicked()
        {
            actions.push(Action::Propagate);
        }
        if ui
            .add_enabled(running, egui::Button::new("Cancel run"))
            .clicked()
        {
            actions.push(Action::CancelPropagation);
        }
    });
    if ui
        .add_enabled(!running, egui::Button::new("Fill between slices (I)"))
        .on_hover_text(
            "Classical shape-based interpolation between your slices, without the network (as 3D Slicer's Fill between slices)",
        )
        .clicked()
    {
        actions.push(Action::FillBetweenSlices);
    }
    actions.extend(strategy_ui(ui, state));
    let mut bounded = state.propagate_margin == Some(0);
    if ui
        .checkbox(&mut bounded, "only between my first and last slice")
        .on_hover_text(
            "Annotate both ends of the structure and propagate only between them (no search for where it ends)",
        )
        .changed()
    {
        actions.push(Action::SetPropagateMargin(if bounded { Some(0) } else { Some(10) }));
    }
    let mut whole = state.propagate_margin.is_none();
    let mut margin = state.propagate_margin.unwrap_or(10);
    ui.horizontal(|ui| {
        let a = ui.checkbox(&mut whole, "whole volume").changed();
        let b = ui
            .add_enabled(
                !whole,
                egui::DragValue::new(&mut margin)
                    .range(0..=1000)
                    .suffix(" slices beyond"),
            )
            .changed();
        if a || b {
            actions.push(Action::SetPropagateMargin((!whole).then_some(margin)));
        }
    });
    if state.chain.is_some() {
        if let Some(f) = state.propagation.failure() {
            ui.colored_label(Color32::from_rgb(255, 140, 100), f);
        }
        return actions;
    }
    let mut all = state.support_size.is_none();
    let mut size = state.support_size.unwrap_or(DEFAULT_SUPPORT_SIZE);
    ui.horizontal(|ui| {
        let a = ui
            .checkbox(&mut all, "all supports")
            .on_hover_text("Segment every slice with every annotated and accepted slice")
            .changed();
        let b = ui
            .add_enabled(
                !all,
                egui::DragValue::new(&mut size)
                    .range(1..=64)
                    .suffix(" most similar"),
            )
            .on_hover_text(
                "With more annotated and accepted slices than this, each slice is segmented with the ones whose images the network finds most similar to it",
            )
            .changed();
        if a || b {
            actions.push(Action::SetSupportSize((!all).then_some(size)));
        }
    });
    if let Some(f) = state.propagation.failure() {
        ui.colored_label(Color32::from_rgb(255, 140, 100), f);
    }
    actions
}

/// Chained (default) or one-shot propagation, and the chained options a user may want
/// to change: how much the shape interpolation counts, and the memory.
fn strategy_ui(ui: &mut egui::Ui, state: &AppState) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut chained = state.chain.is_some();
    ui.horizontal(|ui| {
        let a = ui
            .radio_value(&mut chained, true, "chained")
            .on_hover_text(
                "Each slice uses its nearest annotated slices (and, with memory, the slices predicted just before it); the structure ends at the first empty slice; the result is blended with the shapes of your nearest slices, carried along the image",
            )
            .changed();
        let b = ui
            .radio_value(&mut chained, false, "one-shot (paper)")
            .on_hover_text("Every slice on its own against the annotated slices, as in the paper")
            .changed();
        if a || b {
            actions.push(Action::SetChain(
                chained.then(|| state.chain.unwrap_or_default()),
            ));
        }
    });
    if let Some(mut c) = state.chain {
        let mut changed = false;
        ui.horizontal(|ui| {
            ui.label("your shapes");
            changed |= ui
                .add(egui::Slider::new(&mut c.prior_weight, 0.0..=1.0).fixed_decimals(2))
                .on_hover_text(
                    "How much the shapes of your slices (carried to each slice) count against the network: 0 network only, 1 your shapes only",
                )
                .changed();
        });
        changed |= ui
            .checkbox(&mut c.guided, "your shapes follow the image")
            .on_hover_text(
                "Carry each of your slices to its neighbours along a registration of the image (the structure moves and bends with the anatomy) instead of copying it where you drew it",
            )
            .changed();
        let mut matched = c.between == Between::Matched;
        if ui
            .add_enabled(
                c.guided,
                egui::Checkbox::new(&mut matched, "between your slices, the one that fits"),
            )
            .on_hover_text(
                "Between two of your slices, carry both shapes and take, pixel by pixel, the one whose own image fits this slice there (the nearer one where both fit alike); off: the nearer slice's shape only",
            )
            .changed()
        {
            c.between = if matched {
                Between::Matched
            } else {
                Between::Nearest
            };
            changed = true;
        }
        let mut intensity = c.intensity > 0.0;
        if ui
            .checkbox(&mut intensity, "edges follow the intensities")
            .on_hover_text(
                "Near the predicted edge, pixels that look like the inside of your slices (or like what surrounds it) are pulled in (or out): bone, muscle, fat and air keep their borders",
            )
            .changed()
        {
            c.intensity = if intensity {
                crate::engine::INTENSITY_WEIGHT
            } else {
                0.0
            };
            changed = true;
        }
        ui.horizontal(|ui| {
            changed |= ui
                .add(
                    egui::DragValue::new(&mut c.memory)
                        .range(0..=8)
                        .suffix(" predicted slices as memory"),
                )
                .changed();
        });
        if changed {
            actions.push(Action::SetChain(Some(c)));
        }
    }
    actions
}

/// Review buttons and the active structure's slice counts, support set and uncertainty.
fn review_ui(ui: &mut egui::Ui, doc: &Document) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.heading("Review");
    ui.horizontal(|ui| {
        if ui
            .button("Next (N)")
            .on_hover_text("The predicted slice the network is least sure about")
            .clicked()
        {
            actions.push(Action::NextToReview);
        }
        if ui.button("Accept (Enter)").clicked() {
            actions.push(Action::Accept);
        }
        if ui.button("Reject (Esc)").clicked() {
            actions.push(Action::Reject);
        }
    });
    if let Some(st) = doc.active.and_then(|l| doc.session.structure(l)) {
        let support = doc.session.support_slices(st.value);
        let count = |s: SliceState| st.states().iter().filter(|&&x| x == s).count();
        for s in [
            SliceState::Manual,
            SliceState::Predicted,
            SliceState::Accepted,
            SliceState::Rejected,
        ] {
            ui.horizontal(|ui| {
                let (rect, _) =
                    ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                ui.painter().rect_filled(rect, 1.0, state_colour(s));
                ui.label(format!("{}: {}", state_name(s), count(s)));
            });
        }
        ui.label(format!(
            "Support set: {} slice{}",
            support.len(),
            if support.len() == 1 { "" } else { "s" }
        ))
        .on_hover_text(format!("{support:?}"));
        let slice = doc.work_slice();
        if let Some(u) = st.uncertainty(slice) {
            ui.label(format!("Uncertainty of this slice: {u:.2} bits"));
        }
    }
    actions
}

/// Widest the pointer readout may grow in the status bar (points).
const READOUT_MAX_WIDTH: f32 = 330.0;
/// The message (or progress) on the left keeps at least this much of the bar.
pub const STATUS_MESSAGE_MIN_WIDTH: f32 = 240.0;

/// The status bar: the pointer readout, the last run's speed, the device and model, the
/// renderer on the right; the newest message (or loading, or a propagation's progress
/// with ETA and Cancel) in what is left on the left, cut with "…" when too long (the
/// full text on hover). Nothing overlaps at any width: the right-hand fields are laid
/// out first, each at most a fixed width, and the message takes the rest.
pub fn status_bar_ui(
    ui: &mut egui::Ui,
    state: &AppState,
    readout: Option<&Readout>,
    backend: &Backend,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let total = ui.available_width();
    ui.horizontal(|ui| {
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            // Keep room for the message: the right-hand side may use what is left.
            let right_budget = (total - STATUS_MESSAGE_MIN_WIDTH).max(0.0);
            let start = ui.available_width();
            let used = |ui: &egui::Ui| start - ui.available_width();
            let field = |ui: &mut egui::Ui, text: String, hover: String, max: f32| {
                ui.scope(|ui| {
                    ui.set_max_width(max.max(0.0));
                    ui.add(egui::Label::new(text).truncate())
                        .on_hover_text(hover);
                });
            };
            let render = match backend {
                Backend::Gpu => "GPU",
                Backend::Cpu => "CPU",
            };
            field(
                ui,
                format!("render: {render}"),
                format!("The slices are drawn on the {render}"),
                right_budget - used(ui),
            );
            let (text, hover) = match (state.propagation.info(), state.propagation.failure()) {
                (Some(info), _) => {
                    let weights = match &info.weights {
                        crate::engine::WeightsStatus::Loaded(_) => "trained",
                        crate::engine::WeightsStatus::RandomInit => "random init",
                    };
                    (
                        format!("{} · {}", info.device, info.model),
                        format!(
                            "Network: model {} ({weights}) on {}",
                            info.model, info.device
                        ),
                    )
                }
                (None, Some(f)) => ("network unavailable".to_owned(), f.to_owned()),
                (None, None) => ("network starting…".to_owned(), String::new()),
            };
            if right_budget - used(ui) > 40.0 {
                ui.separator();
                field(ui, text, hover, (right_budget - used(ui)).min(240.0));
            }
            if let Some(last) = state.propagation.last()
                && right_budget - used(ui) > 40.0
            {
                ui.separator();
                let text = format!(
                    "last run {:.0} ms/slice",
                    last.total.as_secs_f64() * 1000.0 / last.slices.max(1) as f64
                );
                let mut hover = format!(
                    "The last propagation: {} slices in {:.1} s",
                    last.slices,
                    last.total.as_secs_f64()
                );
                if let Some(k) = last.support_size {
                    hover.push_str(&format!(
                        "; {k} of {} support slices per slice",
                        last.support_slices
                    ));
                }
                field(ui, text, hover, (right_budget - used(ui)).min(200.0));
            }
            if let Some(r) = readout
                && right_budget - used(ui) > 40.0
            {
                ui.separator();
                let [i, j, k] = r.voxel;
                let [x, y, z] = r.patient_mm;
                let mut text = format!(
                    "({i}, {j}, {k}) · {x:.1}, {y:.1}, {z:.1} mm LPS · {:.1}",
                    r.value
                );
                if let Some(s) = &r.structure {
                    text.push_str(&format!(" · {s}"));
                }
                let hover = text.clone();
                field(
                    ui,
                    text,
                    hover,
                    (right_budget - used(ui)).min(READOUT_MAX_WIDTH),
                );
            }
            ui.separator();
            // The rest of the bar, left to right: the message.
            ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                actions.extend(status_message_ui(ui, state));
            });
        });
    });
    actions
}

/// The left of the status bar: loading, a propagation's progress, or the newest
/// message (cut to the space there is; the full text on hover).
fn status_message_ui(ui: &mut egui::Ui, state: &AppState) -> Vec<Action> {
    let mut actions = Vec::new();
    if let Some((path, started)) = state.loading() {
        ui.add(egui::Spinner::new());
        ui.add(
            egui::Label::new(format!(
                "Loading {} ({:.0} s)…",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                started.elapsed().as_secs_f32()
            ))
            .truncate(),
        );
    } else if let Some(run) = state.propagation.run() {
        let eta = run
            .eta(Instant::now())
            .map_or("estimating…".to_owned(), |d| {
                format!("{:.0} s left", d.as_secs_f32().ceil())
            });
        let width = (ui.available_width() - 90.0).clamp(60.0, 220.0);
        ui.add(
            egui::ProgressBar::new(run.fraction())
                .desired_width(width)
                .text(format!("Propagating {}/{} · {eta}", run.done, run.total)),
        );
        if ui.button("Cancel run").clicked() {
            actions.push(Action::CancelPropagation);
        }
    } else if let Some(line) = state.status_line() {
        ui.add(egui::Label::new(line).truncate());
    }
    actions
}

/// A window/level readout that can be typed into.
pub fn window_editor_ui(ui: &mut egui::Ui, window: WindowLevel) -> Option<Action> {
    let mut w = window;
    let a = ui
        .add(egui::DragValue::new(&mut w.width).prefix("W ").speed(1.0))
        .changed();
    let b = ui
        .add(egui::DragValue::new(&mut w.centre).prefix("L ").speed(1.0))
        .changed();
    (a || b).then(|| Action::SetWindow(WindowLevel::new(w.centre, w.width)))
}

/// The save dialog's body.
pub fn save_format_ui(ui: &mut egui::Ui, format: &mut LabelFormat, dicom: bool) {
    ui.horizontal(|ui| {
        ui.radio_value(format, LabelFormat::Nifti, LabelFormat::Nifti.name());
        ui.add_enabled_ui(dicom, |ui| {
            ui.radio_value(format, LabelFormat::DicomSeg, LabelFormat::DicomSeg.name())
                .on_disabled_hover_text("DICOM SEG needs a DICOM input volume");
        });
    });
}
