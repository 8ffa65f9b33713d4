//! The eframe application: lays out panels and views each frame, turns input into
//! [`Action`]s and hands them to [`AppState`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui::{self, Key, KeyboardShortcut, Modifiers};

use crate::display::view::axes_in_display_order;
use crate::session::RecoveryFile;
use crate::volume::Axis;

use super::actions::{Action, Layout, Tool};
use super::explain::explain_panel_ui;
use super::notice::{Level, Waker};
use super::painter::ViewPainter;
use super::panels::{save_format_ui, side_panel_ui, status_bar_ui, top_bar_ui};
use super::slice_view::{Readout, ViewContext, slice_view_ui};
use super::state::{AppConfig, AppState, QuitState, SaveDialog, SeriesChoice};

/// The ICSeg desktop application.
pub struct IcsegApp {
    /// Everything but egui; public so tests can inspect and drive it.
    pub state: AppState,
    painter: ViewPainter,
    readout: Option<Readout>,
    /// The view axis the pointer was last over (keyboard slice scrolling follows it).
    focus_axis: Option<Axis>,
    /// When the previous frame started.
    last_frame: Option<Instant>,
    /// The window title last sent.
    title: String,
    /// A scripted session (`ICSEG_DEMO=<folder>`).
    demo: Option<super::demo::Demo>,
    /// The scripted PACS round trip (`ICSEG_PACS_DEMO=<folder>`).
    pacs_demo: Option<super::pacs_demo::PacsDemo>,
    /// Whether the window was asked for keyboard focus: on the first frame, and again
    /// when the first document arrives (a new window under a plain X server may not get
    /// it, and shortcuts would do nothing until a first click).
    focus_asked: (bool, bool),
    /// Time spent building the last frames (newest last), for the diagnostics window.
    recent_frames: std::collections::VecDeque<Duration>,
}

/// Frames kept for [`IcsegApp::recent_frame_times`].
const RECENT_FRAMES: usize = 240;

impl IcsegApp {
    /// Creates the app inside eframe (or a test harness).
    pub fn new(cc: &eframe::CreationContext<'_>, config: AppConfig) -> Self {
        let ctx = cc.egui_ctx.clone();
        let waker = Arc::new(move || ctx.request_repaint());
        Self::with_waker(config, waker)
    }

    /// Creates the app with a custom waker.
    pub fn with_waker(config: AppConfig, waker: Waker) -> Self {
        let force_cpu = std::env::var_os("ICSEG_CPU_RENDER").is_some();
        Self {
            state: AppState::new(config, waker),
            painter: ViewPainter::new(force_cpu),
            readout: None,
            focus_axis: None,
            last_frame: None,
            title: String::new(),
            demo: std::env::var_os("ICSEG_DEMO").map(|d| super::demo::Demo::new(d.into())),
            pacs_demo: std::env::var_os("ICSEG_PACS_DEMO")
                .map(|d| super::pacs_demo::PacsDemo::new(d.into())),
            focus_asked: (false, false),
            recent_frames: std::collections::VecDeque::with_capacity(RECENT_FRAMES),
        }
    }

    /// Median, 95th percentile and longest time spent building the last frames (up to
    /// 240), as in the diagnostics window.
    pub fn recent_frame_times(&self) -> Option<super::propagation::FrameSummary> {
        let times: Vec<Duration> = self.recent_frames.iter().copied().collect();
        super::propagation::summarise_frames(&times)
    }

    /// Asks the OS for keyboard focus on the first frame and when the first document
    /// is shown.
    fn take_focus(&mut self, ctx: &egui::Context) {
        let has_doc = self.state.doc.is_some();
        if !self.focus_asked.0 || (has_doc && !self.focus_asked.1) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
            self.focus_asked = (true, has_doc);
        }
    }

    /// The diagnostics window (View → Diagnostics): frame times, for developers.
    fn diagnostics_window(&self, ctx: &egui::Context) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut open = self.state.show_diagnostics;
        egui::Window::new("Diagnostics")
            .open(&mut open)
            .resizable(false)
            .show(ctx, |ui| {
                if let Some(f) = self.recent_frame_times() {
                    ui.label(format!(
                        "UI frame build time (last {} frames): median {:.1} ms, 95th percentile {:.1} ms, max {:.1} ms",
                        f.frames, f.median_ms, f.p95_ms, f.max_ms
                    ));
                }
                if let Some(last) = self.state.propagation.last() {
                    ui.label("During the last propagation:");
                    for line in super::propagation::frame_diagnostics(last.frames, last.intervals) {
                        ui.label(line);
                    }
                }
            });
        if !open {
            actions.push(Action::SetDiagnostics(false));
        }
        actions
    }

    /// Which renderer drew the last frame.
    pub fn backend(&self) -> &super::painter::Backend {
        self.painter.backend()
    }

    fn shortcuts(&self, ctx: &egui::Context) -> Vec<Action> {
        let mut actions = Vec::new();
        if ctx.egui_wants_keyboard_input() {
            return actions;
        }
        let modal_open = !self.state.recovery_offers.is_empty()
            || self.state.series_choice.is_some()
            || self.state.save_dialog.is_some()
            || self.state.pending_replace.is_some()
            || self.state.quit == QuitState::Asking;
        let work_axis = self
            .state
            .doc
            .as_ref()
            .map(|d| d.session.axis())
            .unwrap_or(Axis::K);
        let slice_axis = self.focus_axis.unwrap_or(match self.state.layout {
            Layout::Single(a) => a,
            Layout::ThreeUp => work_axis,
        });
        let lasso = self.state.lasso.is_some();
        // Esc first closes menus and pop-ups; only then does it reject a slice.
        let popup_open = ctx.any_popup_open();
        ctx.input_mut(|i| {
            let cmd = Modifiers::COMMAND;
            if i.consume_shortcut(&KeyboardShortcut::new(cmd | Modifiers::SHIFT, Key::Z))
                || i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::Y))
            {
                actions.push(Action::Redo);
            }
            if i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::Z)) {
                actions.push(Action::Undo);
            }
            if i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::S)) {
                actions.push(Action::Save);
            }
            if i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::O)) {
                actions.push(Action::OpenDialog);
            }
            if modal_open {
                return;
            }
            let plain = |i: &mut egui::InputState, k: Key| i.consume_key(Modifiers::NONE, k);
            for (key, tool) in [
                (Key::C, Tool::Crosshair),
                (Key::B, Tool::Brush),
                (Key::E, Tool::Eraser),
                (Key::L, Tool::Lasso),
                (Key::X, Tool::Explain),
                (Key::W, Tool::WindowLevel),
            ] {
                if plain(i, key) {
                    actions.push(Action::SetTool(tool));
                }
            }
            if plain(i, Key::OpenBracket) {
                actions.push(Action::ScaleBrush(1.0 / 1.25));
            }
            if plain(i, Key::CloseBracket) {
                actions.push(Action::ScaleBrush(1.25));
            }
            for (key, delta) in [
                (Key::PageUp, 1),
                (Key::PageDown, -1),
                (Key::ArrowUp, 1),
                (Key::ArrowDown, -1),
            ] {
                if plain(i, key) {
                    actions.push(Action::StepSlice {
                        axis: slice_axis,
                        delta,
                    });
                }
            }
            if plain(i, Key::Enter) {
                actions.push(if lasso {
                    Action::LassoFinish
                } else {
                    Action::Accept
                });
            }
            if !popup_open && plain(i, Key::Escape) {
                actions.push(if lasso {
                    Action::LassoCancel
                } else {
                    Action::Reject
                });
            }
            if plain(i, Key::N) {
                actions.push(Action::NextToReview);
            }
            if plain(i, Key::P) {
                actions.push(Action::Propagate);
            }
            if plain(i, Key::I) {
                actions.push(Action::FillBetweenSlices);
            }
            if plain(i, Key::F) {
                actions.push(Action::ResetCameras);
            }
            if plain(i, Key::A) {
                actions.push(Action::AutoWindow);
            }
            if plain(i, Key::Num4) {
                actions.push(Action::SetLayout(Layout::ThreeUp));
            }
        });
        if let Some(doc) = &self.state.doc {
            let order = axes_in_display_order(doc.volume.geometry());
            ctx.input_mut(|i| {
                for (key, axis) in [
                    (Key::Num1, order[0]),
                    (Key::Num2, order[1]),
                    (Key::Num3, order[2]),
                ] {
                    if i.consume_key(Modifiers::NONE, key) {
                        actions.push(Action::SetLayout(Layout::Single(axis)));
                    }
                }
            });
        }
        actions
    }

    /// The modal dialogs the state asks for (recovery, series choice, save, replace,
    /// quit) and the window of unread problems.
    fn dialogs(&mut self, ctx: &egui::Context) -> Vec<Action> {
        let state = &mut self.state;
        let mut actions = Vec::new();
        if !state.recovery_offers.is_empty() {
            actions.extend(recovery_dialog(ctx, &state.recovery_offers));
        }
        // File → Open from PACS (not modal: the viewer stays usable during a pull).
        state.pacs.window_ui(ctx);
        if let Some(choice) = &state.series_choice {
            let (chosen, cancelled) = series_dialog(ctx, choice);
            actions.extend(chosen);
            if cancelled {
                state.series_choice = None;
            }
        }
        if let Some(dialog) = &mut state.save_dialog {
            let dicom = state.doc.as_ref().is_some_and(|d| d.is_dicom());
            actions.extend(save_dialog(ctx, dialog, dicom));
        }
        if state.pending_replace.is_some() {
            actions.extend(confirm_dialog(
                ctx,
                "replace",
                "Replace unsaved annotations?",
                "This replaces the current annotations, which have changes that are not saved.",
                [
                    ("Save first", &[Action::CancelReplace, Action::Save]),
                    ("Discard and continue", &[Action::ReplaceDiscarding]),
                    ("Cancel", &[Action::CancelReplace]),
                ],
            ));
        }
        if state.quit == QuitState::Asking {
            actions.extend(confirm_dialog(
                ctx,
                "quit",
                "Save changes before quitting?",
                "The annotations have changes that are not saved.",
                [
                    ("Save", &[Action::CancelQuit, Action::Save]),
                    ("Quit without saving", &[Action::QuitDiscarding]),
                    ("Cancel", &[Action::CancelQuit]),
                ],
            ));
        }
        actions.extend(messages_window(ctx, state));
        actions
    }

    fn views_ui(&mut self, ui: &mut egui::Ui) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(doc) = &self.state.doc else {
            ui.centered_and_justified(|ui| {
                if self.state.loading().is_some() {
                    ui.add(egui::Spinner::new().size(32.0));
                } else {
                    ui.label("Drop a NIfTI file or DICOM folder here, or use File > Open.");
                }
            });
            return actions;
        };
        let axes: Vec<Axis> = match self.state.layout {
            Layout::Single(a) => vec![a],
            Layout::ThreeUp => axes_in_display_order(doc.volume.geometry()).to_vec(),
        };
        let marker = self.state.propagation.explanation().map(|e| e.query);
        let stroking = self.state.stroking();
        // One support's attention laid over the working view (Explain panel, "on view").
        let (w, h) = doc.volume.geometry().slice_dims(doc.session.axis());
        let heat = self.state.propagation.explanation_mut().and_then(|e| {
            let (stage, n) = e.overlay?;
            let key = egui::Id::unique(("view-heat", e.id.0, stage, n)).value();
            e.heatmap(stage, n, w, h)
                .map(|heat| super::painter::HeatInput { heat, key })
        });
        let rect = ui.available_rect_before_wrap();
        let n = axes.len() as f32;
        let gap = 4.0;
        let width = (rect.width() - gap * (n - 1.0)) / n;
        let mut readout = None;
        let mut focus = self.focus_axis;
        for (k, &axis) in axes.iter().enumerate() {
            let x0 = rect.min.x + k as f32 * (width + gap);
            let r = egui::Rect::from_min_size(
                egui::pos2(x0, rect.min.y),
                egui::vec2(width, rect.height()),
            );
            let ctx = ViewContext {
                axis,
                camera: self.state.cameras[axis.index()],
                tool: self.state.tool,
                brush: self.state.brush,
                lasso: self.state.lasso.as_ref(),
                explain_marker: marker,
                show_labels: true,
                stroking,
                scrubber: true,
                heat,
            };
            let mut child = ui.new_child(
                egui::UiBuilder::new()
                    .max_rect(r)
                    .id_salt(("view", axis.index())),
            );
            let (a, ro) = slice_view_ui(&mut child, doc, &ctx, &mut self.painter);
            actions.extend(a);
            if ro.is_some() {
                readout = ro;
                focus = Some(axis);
            }
        }
        ui.allocate_rect(rect, egui::Sense::hover());
        self.readout = readout;
        self.focus_axis = focus;
        actions
    }
}

/// Offers the recovery files of a run that did not shut down cleanly.
fn recovery_dialog(ctx: &egui::Context, offers: &[RecoveryFile]) -> Vec<Action> {
    let mut actions = Vec::new();
    egui::Modal::new(egui::Id::unique("recovery")).show(ctx, |ui| {
        ui.heading("Restore unsaved work?");
        ui.label("ICSeg did not shut down cleanly last time. Its autosaved work can be restored:");
        for (n, offer) in offers.iter().enumerate() {
            let age = offer
                .modified
                .and_then(|m| m.elapsed().ok())
                .map_or("unknown time".into(), format_age);
            ui.horizontal(|ui| {
                ui.label(format!("autosaved {age} ago"));
                if ui.button("Restore").clicked() {
                    actions.push(Action::RestoreRecovery(n));
                }
                if ui.button("Discard").clicked() {
                    actions.push(Action::DiscardRecovery(n));
                }
            });
        }
    });
    actions
}

/// Lets the user pick one image series of a DICOM folder; also says whether the
/// dialog was cancelled.
fn series_dialog(ctx: &egui::Context, choice: &SeriesChoice) -> (Vec<Action>, bool) {
    let mut actions = Vec::new();
    let mut cancelled = false;
    egui::Modal::new(egui::Id::unique("series")).show(ctx, |ui| {
        ui.heading("Choose a series");
        ui.label("This folder holds several image series:");
        for s in choice
            .series
            .iter()
            .filter(|s| s.kind == crate::io::dicom::SeriesKind::Image)
        {
            let text = format!(
                "#{} {} {} — {} slices of {}×{}",
                s.series_number.map_or("?".into(), |n| n.to_string()),
                s.modality,
                s.description,
                s.slices,
                s.columns,
                s.rows
            );
            if ui.button(text).clicked() {
                actions.push(Action::OpenSeries {
                    path: choice.path.clone(),
                    series_uid: s.series_instance_uid.clone(),
                });
            }
        }
        if ui.button("Cancel").clicked() {
            cancelled = true;
        }
    });
    (actions, cancelled)
}

/// The save dialog: format, file name (typed or browsed), Save or Cancel.
fn save_dialog(ctx: &egui::Context, dialog: &mut SaveDialog, dicom: bool) -> Vec<Action> {
    let mut actions = Vec::new();
    egui::Modal::new(egui::Id::unique("save")).show(ctx, |ui| {
        ui.heading("Save labels");
        save_format_ui(ui, &mut dialog.format, dicom);
        ui.horizontal(|ui| {
            ui.label("File:");
            ui.add(egui::TextEdit::singleline(&mut dialog.path).desired_width(420.0));
            if ui.button("Browse…").clicked()
                && let Some(p) = rfd::FileDialog::new()
                    .set_file_name(&dialog.path)
                    .save_file()
            {
                dialog.path = p.display().to_string();
            }
        });
        ui.label("A session file (.icseg) with the slice states is written beside it.");
        ui.horizontal(|ui| {
            if ui.button("Save").clicked() {
                actions.push(Action::SaveTo {
                    path: dialog.path.clone().into(),
                    format: dialog.format,
                });
            }
            if ui.button("Cancel").clicked() {
                actions.push(Action::CloseSaveDialog);
            }
        });
    });
    actions
}

/// A question with three answers; each button gives its actions.
fn confirm_dialog(
    ctx: &egui::Context,
    id: &str,
    heading: &str,
    text: &str,
    buttons: [(&str, &[Action]); 3],
) -> Vec<Action> {
    let mut actions = Vec::new();
    egui::Modal::new(egui::Id::unique(id)).show(ctx, |ui| {
        ui.heading(heading);
        ui.label(text);
        ui.horizontal(|ui| {
            for (label, answer) in buttons {
                if ui.button(label).clicked() {
                    actions.extend_from_slice(answer);
                }
            }
        });
    });
    actions
}

/// Errors and warnings not yet dismissed (the newest five), in a corner window.
fn messages_window(ctx: &egui::Context, state: &AppState) -> Vec<Action> {
    let mut actions = Vec::new();
    let problems: Vec<(usize, String, Level)> = state
        .problems()
        .map(|(n, p)| (n, p.text.clone(), p.level))
        .collect();
    if problems.is_empty() {
        return actions;
    }
    egui::Window::new("Messages")
        .anchor(egui::Align2::RIGHT_BOTTOM, egui::vec2(-10.0, -40.0))
        .resizable(false)
        .collapsible(true)
        .show(ctx, |ui| {
            for (n, text, level) in problems.iter().rev().take(5) {
                ui.horizontal(|ui| {
                    let colour = match level {
                        Level::Error => egui::Color32::from_rgb(255, 120, 100),
                        _ => egui::Color32::from_rgb(255, 200, 90),
                    };
                    ui.add(egui::Label::new(egui::RichText::new(text).color(colour)).wrap());
                    if ui.small_button("Dismiss").clicked() {
                        actions.push(Action::DismissNotice(*n));
                    }
                });
            }
        });
    actions
}

fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

impl eframe::App for IcsegApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let started = Instant::now();
        let ctx = ui.ctx().clone();
        self.state.poll();
        if let Some(text) = self.painter.begin_frame(frame, self.state.doc.as_ref()) {
            self.state.notify(Level::Warning, text);
        }

        self.take_focus(&ctx);
        let mut actions = self.shortcuts(&ctx);

        // Files dropped on the window.
        let dropped: Vec<std::path::PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if let Some(p) = dropped.into_iter().next() {
            actions.push(Action::Open(p));
        }

        // The window's close button.
        if ctx.input(|i| i.viewport().close_requested()) && self.state.quit != QuitState::Confirmed
        {
            if self.state.unsaved() {
                ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                actions.push(Action::Quit);
            } else {
                self.state.shutdown();
            }
        }

        egui::Panel::top("top").show(ui, |ui| {
            actions.extend(top_bar_ui(ui, &self.state));
        });
        egui::Panel::bottom("status").show(ui, |ui| {
            actions.extend(status_bar_ui(
                ui,
                &self.state,
                self.readout.as_ref(),
                self.painter.backend(),
            ));
        });
        egui::Panel::left("side")
            .default_size(260.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    actions.extend(side_panel_ui(ui, &self.state));
                });
            });
        if self.state.propagation.explanation().is_some() {
            egui::Panel::right("explain")
                .default_size(460.0)
                .show(ui, |ui| {
                    if let (Some(doc), Some(view)) =
                        (&self.state.doc, self.state.propagation.explanation_mut())
                    {
                        actions.extend(explain_panel_ui(ui, doc, view, &mut self.painter));
                    }
                });
        }
        egui::CentralPanel::default().show(ui, |ui| {
            actions.extend(self.views_ui(ui));
        });
        actions.extend(self.dialogs(&ctx));
        if self.state.show_diagnostics {
            actions.extend(self.diagnostics_window(&ctx));
        }
        if let Some(demo) = &mut self.demo
            && !demo.finished()
        {
            actions.extend(demo.tick(&ctx, &self.state));
            if demo.finished() {
                for line in &demo.log {
                    println!("{line}");
                }
                if demo.failed.is_some() {
                    std::process::exit(2);
                }
            }
        }

        if let Some(demo) = &mut self.pacs_demo
            && !demo.finished()
        {
            actions.extend(demo.tick(&ctx, &mut self.state));
            if demo.finished() {
                for line in &demo.log {
                    println!("{line}");
                }
                if demo.failed.is_some() {
                    std::process::exit(2);
                }
            }
        }

        let acted = !actions.is_empty();
        for a in actions {
            self.state.apply(a);
        }
        if self.state.quit == QuitState::Confirmed {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        let title = self.state.doc.as_ref().map_or_else(
            || "ICSeg".to_owned(),
            |doc| {
                format!(
                    "ICSeg — {}{}",
                    doc.title(),
                    if doc.unsaved() { " •" } else { "" }
                )
            },
        );
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
        if acted {
            ctx.request_repaint();
        }
        if self.state.loading().is_some() || self.state.propagation.run().is_some() {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        let spent = started.elapsed();
        let interval = self.last_frame.map(|t| started.duration_since(t));
        self.last_frame = Some(started);
        self.state.propagation.record_frame(spent, interval);
        if self.recent_frames.len() == RECENT_FRAMES {
            self.recent_frames.pop_front();
        }
        self.recent_frames.push_back(spent);
    }

    fn on_exit(&mut self) {
        if self.state.quit != QuitState::Confirmed && !self.state.unsaved() {
            self.state.shutdown();
        }
    }
}
