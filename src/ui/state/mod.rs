//! The application state without any egui: documents, tools, files, background work.
//! [`AppState::apply`] carries out [`Action`]s; [`AppState::poll`] takes in results of
//! background work once per frame. Both are plain code, tested without a window.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::display::robust_window;
use crate::display::view::Camera;
use crate::io::{self, LoadError, LoadedVolume};
use crate::session::{
    AutosaveTimer, EditError, EditKind, IntensityRange, PaintMode, PaintOp, RecoveryFile,
    RecoveryStore, Session, SessionFile, SessionFileError, Shape,
};
use crate::volume::{Axis, Image2D};

use super::actions::{Action, BRUSH_RADIUS_MM, BrushSettings, Layout, Tool};
use super::document::{Document, LabelFormat, SaveTarget, session_path_for};
use super::notice::{Level, Notice, Waker};
use super::propagation::{DEFAULT_SUPPORT_SIZE, Propagation};

/// Start-up settings.
#[derive(Clone)]
pub struct AppConfig {
    /// What to open first; `None` opens nothing.
    pub open: Option<PathBuf>,
    /// Where recovery files go.
    pub recovery: RecoveryStore,
    /// How often unsaved work is written to the recovery file.
    pub autosave_interval: Duration,
    /// Propagation settings (weights, device).
    pub engine: super::propagation::EngineSettings,
}

/// A brush stroke in progress.
struct Stroke {
    last: [f32; 2],
    mode: PaintMode,
    image: Option<Image2D<f32>>,
}

/// A lasso in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Lasso {
    /// Working-axis slice.
    pub slice: usize,
    /// Vertices in slice pixels.
    pub points: Vec<[f32; 2]>,
}

/// The save dialog's contents.
#[derive(Clone, Debug, PartialEq)]
pub struct SaveDialog {
    /// Label file path being edited.
    pub path: String,
    /// Chosen format.
    pub format: LabelFormat,
}

/// Where quitting stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuitState {
    /// Not quitting.
    Running,
    /// Asking about unsaved work.
    Asking,
    /// Allowed to close.
    Confirmed,
}

enum LoadRequest {
    Volume(PathBuf),
    Series { path: PathBuf, series_uid: String },
}

struct LoadJob {
    path: PathBuf,
    rx: Receiver<Result<LoadedVolume, LoadError>>,
    restore: Option<SessionFile>,
    started: Instant,
}

/// A series choice the user has to make.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesChoice {
    /// The DICOM folder that was opened.
    pub path: PathBuf,
    /// Every series found there (the dialog offers the image series).
    pub series: Vec<io::SeriesSummary>,
}

struct AutosaveJob {
    revision: u64,
    rx: Receiver<Result<PathBuf, SessionFileError>>,
}

/// Everything the app knows, minus egui.
pub struct AppState {
    /// Start-up settings.
    pub config: AppConfig,
    /// The open volume, if any.
    pub doc: Option<Document>,
    /// What a left click or drag on the working view does.
    pub tool: Tool,
    /// Radius, intensity range and overwriting for the brush and eraser.
    pub brush: BrushSettings,
    /// One view or three.
    pub layout: Layout,
    /// Zoom/pan per view axis.
    pub cameras: [Camera; 3],
    /// Messages, oldest first.
    pub notices: Vec<Notice>,
    /// A DICOM folder with several series waiting for a choice.
    pub series_choice: Option<SeriesChoice>,
    /// Recovery files offered on start.
    pub recovery_offers: Vec<RecoveryFile>,
    /// The save dialog, when open.
    pub save_dialog: Option<SaveDialog>,
    /// Whether the app is running, asking about unsaved work, or may close.
    pub quit: QuitState,
    /// An action that would replace unsaved annotations (opening another volume, a
    /// session or a label map), waiting for the user's answer.
    pub pending_replace: Option<Action>,
    replace_confirmed: bool,
    /// A lasso being drawn.
    pub lasso: Option<Lasso>,
    /// The link to the inference engine: the running propagation and the explanation.
    pub propagation: Propagation,
    /// The Open from PACS window and its DICOMweb worker.
    pub pacs: super::pacs::PacsWindow,
    /// Propagate only this many slices beyond the first/last support slice
    /// (`None`: the whole axis).
    pub propagate_margin: Option<usize>,
    /// The most support slices one slice is segmented with; with more annotated and
    /// accepted slices, each slice gets the ones most similar to it (`None`: all).
    pub support_size: Option<usize>,
    /// Chained propagation (nearest annotations, predicted slices as memory, honest
    /// ends, shape prior) with these options; `None`: the paper's one-shot propagation
    /// with [`Self::support_size`].
    pub chain: Option<crate::engine::ChainOptions>,
    /// Whether the diagnostics window (frame times, for developers) is open.
    pub show_diagnostics: bool,
    /// "Fill between slices" runs so far (their undo groups).
    fill_groups: u64,
    stroke: Option<Stroke>,
    load: Option<LoadJob>,
    autosave: AutosaveTimer,
    autosave_job: Option<AutosaveJob>,
    waker: Waker,
}

/// Undo groups of "Fill between slices" start here, far from the engine's job ids
/// (which group a propagation's predictions).
const FILL_GROUPS: u64 = 1 << 62;

impl AppState {
    /// A new state; starts loading `config.open` and looks for recovery files.
    pub fn new(config: AppConfig, waker: Waker) -> Self {
        let recovery_offers = config.recovery.orphans();
        let propagation = Propagation::new(&config.engine, waker.clone());
        let mut state = Self {
            autosave: AutosaveTimer::new(config.autosave_interval, Instant::now(), 0),
            doc: None,
            tool: Tool::Brush,
            brush: BrushSettings {
                radius_mm: 4.0,
                limit_to_range: false,
                range: IntensityRange {
                    min: 0.0,
                    max: 100.0,
                },
                overwrite_others: false,
            },
            layout: Layout::Single(Axis::K),
            cameras: [Camera::default(); 3],
            notices: Vec::new(),
            series_choice: None,
            recovery_offers,
            save_dialog: None,
            quit: QuitState::Running,
            pending_replace: None,
            replace_confirmed: false,
            lasso: None,
            propagation,
            pacs: super::pacs::PacsWindow::new(waker.clone()),
            propagate_margin: Some(10),
            support_size: Some(DEFAULT_SUPPORT_SIZE),
            chain: Some(crate::engine::ChainOptions::default()),
            show_diagnostics: false,
            fill_groups: 0,
            stroke: None,
            load: None,
            autosave_job: None,
            waker,
            config,
        };
        if let Some(path) = state.config.open.clone() {
            state.start_load(LoadRequest::Volume(path), None);
        }
        state
    }

    /// Adds a message for the user (errors are also logged).
    pub fn notify(&mut self, level: Level, text: impl Into<String>) {
        let text = text.into();
        match level {
            Level::Error => log::error!("{text}"),
            Level::Warning => log::warn!("{text}"),
            Level::Info => log::info!("{text}"),
        }
        self.notices.push(Notice { level, text });
        if self.notices.len() > 50 {
            self.notices.remove(0);
        }
    }

    /// The newest information line for the status bar.
    pub fn status_line(&self) -> Option<&str> {
        self.notices.last().map(|n| n.text.as_str())
    }

    /// Errors and warnings not yet dismissed, with their indices.
    pub fn problems(&self) -> impl Iterator<Item = (usize, &Notice)> {
        self.notices
            .iter()
            .enumerate()
            .filter(|(_, n)| n.level != Level::Info)
    }

    /// Whether a volume is being loaded, and since when.
    pub fn loading(&self) -> Option<(&Path, Instant)> {
        self.load.as_ref().map(|l| (l.path.as_path(), l.started))
    }

    /// Whether any work is unsaved.
    pub fn unsaved(&self) -> bool {
        self.doc.as_ref().is_some_and(Document::unsaved)
    }

    // ----- loading -----

    fn start_load(&mut self, request: LoadRequest, restore: Option<SessionFile>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waker = self.waker.clone();
        let path = match &request {
            LoadRequest::Volume(p) | LoadRequest::Series { path: p, .. } => p.clone(),
        };
        std::thread::Builder::new()
            .name("icseg-load".into())
            .spawn(move || {
                let result = match request {
                    LoadRequest::Volume(p) => io::open_volume(&p),
                    LoadRequest::Series { path, series_uid } => {
                        io::dicom::load_series(&path, &series_uid)
                    }
                };
                let _ = tx.send(result);
                waker();
            })
            .expect("spawning a thread");
        self.load = Some(LoadJob {
            path,
            rx,
            restore,
            started: Instant::now(),
        });
    }

    /// Takes in finished background work: loaded volumes, autosaves, network results.
    /// Call once per frame.
    pub fn poll(&mut self) {
        if let Some(job) = &self.load {
            match job.rx.try_recv() {
                Ok(result) => {
                    let job = self.load.take().expect("checked above");
                    self.finish_load(job.path, result, job.restore);
                }
                Err(TryRecvError::Disconnected) => {
                    let job = self.load.take().expect("checked above");
                    self.notify(
                        Level::Error,
                        format!(
                            "loading stopped unexpectedly; try opening the file again: {}",
                            job.path.display()
                        ),
                    );
                }
                Err(TryRecvError::Empty) => {}
            }
        }
        if let Some(job) = &self.autosave_job {
            match job.rx.try_recv() {
                Ok(result) => {
                    let job = self.autosave_job.take().expect("checked above");
                    match result {
                        Ok(_) => self.autosave.written(Instant::now(), job.revision),
                        Err(e) => {
                            // Try again after the next interval rather than every frame.
                            self.autosave.written(Instant::now(), u64::MAX);
                            self.notify(Level::Warning, format!("autosave failed: {e}"));
                        }
                    }
                }
                Err(TryRecvError::Disconnected) => self.autosave_job = None,
                Err(TryRecvError::Empty) => {}
            }
        }
        if let Some(folder) = self.pacs.poll() {
            self.open(folder);
        }
        let events = self.propagation.poll(self.doc.as_mut());
        for (level, text) in events.notices {
            self.notify(level, text);
        }
        if events.propagation_finished {
            self.autosave_now();
        }
        if let Some(doc) = &mut self.doc {
            doc.refresh_overview();
        }
        if self.autosave_job.is_none()
            && let Some(doc) = &self.doc
            && self.autosave.due(Instant::now(), doc.session.revision())
        {
            self.autosave_now();
        }
    }

    /// Blocks until the running load (if any) has finished and been taken in. For tests
    /// and the command line; the app polls instead.
    pub fn wait_for_load(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.load.is_some() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
            self.poll();
        }
        true
    }

    /// Blocks until a running autosave has finished.
    pub fn wait_for_autosave(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.autosave_job.is_some() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
            self.poll();
        }
        true
    }

    fn finish_load(
        &mut self,
        path: PathBuf,
        result: Result<LoadedVolume, LoadError>,
        restore: Option<SessionFile>,
    ) {
        let loaded = match result {
            Ok(l) => l,
            Err(LoadError::MultipleSeries { series }) => {
                self.series_choice = Some(SeriesChoice { path, series });
                return;
            }
            Err(e) => {
                self.notify(Level::Error, e.to_string());
                return;
            }
        };
        for w in &loaded.warnings {
            self.notify(Level::Warning, w.to_string());
        }
        let doc = match restore {
            Some(file) => match Session::from_file(file, &loaded.volume) {
                Ok(session) => {
                    self.notify(Level::Info, "Restored the session.");
                    Document::with_session(loaded, path, session, None, 0)
                }
                Err(e) => {
                    self.notify(Level::Error, e.to_string());
                    Document::new(loaded, path)
                }
            },
            None => Document::new(loaded, path),
        };
        self.set_document(doc);
    }

    /// Makes `doc` the open document (replacing any other).
    pub fn set_document(&mut self, doc: Document) {
        self.notify(
            Level::Info,
            format!(
                "Opened {} ({}×{}×{} voxels).",
                doc.title(),
                doc.volume.dims()[0],
                doc.volume.dims()[1],
                doc.volume.dims()[2]
            ),
        );
        self.propagation.document_changed();
        self.stroke = None;
        self.lasso = None;
        self.cameras = [Camera::default(); 3];
        self.layout = Layout::Single(doc.session.axis());
        self.autosave = AutosaveTimer::new(
            self.config.autosave_interval,
            Instant::now(),
            doc.saved_revision,
        );
        self.doc = Some(doc);
    }

    // ----- autosave -----

    /// Writes the recovery file now (in the background).
    pub fn autosave_now(&mut self) {
        if self.autosave_job.is_some() {
            return;
        }
        let Some(doc) = &self.doc else { return };
        if !doc.unsaved() {
            return;
        }
        let file = doc.session.to_file(Some(doc.path()), doc.fingerprint);
        let revision = doc.session.revision();
        let store = self.config.recovery.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waker = self.waker.clone();
        std::thread::Builder::new()
            .name("icseg-autosave".into())
            .spawn(move || {
                let _ = tx.send(store.write(&file));
                waker();
            })
            .expect("spawning a thread");
        self.autosave_job = Some(AutosaveJob { revision, rx });
    }

    // ----- actions -----

    /// Carries out one action: each kind is one named step below.
    pub fn apply(&mut self, action: Action) {
        match action {
            // Files.
            Action::Open(path) => self.open(path),
            Action::OpenDialog => self.open_dialog(),
            Action::OpenPacs => self.pacs.open = true,
            Action::SendSegToPacs => self.send_seg_to_pacs(),
            Action::OpenSeries { path, series_uid } => self.open_series(path, series_uid),
            Action::OpenSession(path) => self.open_session(path),
            Action::ImportLabels(path) => self.import_labels(path),
            Action::ReplaceDiscarding => self.replace_discarding(),
            Action::CancelReplace => self.pending_replace = None,
            Action::Save => self.save(),
            Action::SaveTo { path, format } => self.save_to(path, format),
            Action::SaveSession(path) => self.save_session(&path),
            Action::CloseSaveDialog => self.save_dialog = None,
            Action::RestoreRecovery(n) => self.restore_recovery(n),
            Action::DiscardRecovery(n) => self.discard_recovery(n),
            // Navigation and display.
            Action::SetCursor(c) => self.with_doc(|d| d.set_cursor(c)),
            Action::StepSlice { axis, delta } => self.with_doc(|d| d.step_slice(axis, delta)),
            Action::SetSlice { axis, index } => self.with_doc(|d| d.set_slice(axis, index)),
            Action::SetLayout(l) => self.layout = l,
            Action::SetCamera { axis, camera } => self.cameras[axis.index()] = camera,
            Action::ResetCameras => self.cameras = [Camera::default(); 3],
            Action::SetWindow(w) => self.with_doc(|d| d.window = w),
            Action::Preset(p) => self.with_doc(|d| d.window = p.window()),
            Action::AutoWindow => self.with_doc(|d| d.window = robust_window(d.volume.voxels())),
            // Tools and settings.
            Action::SetTool(t) => {
                self.lasso = None;
                self.tool = t;
            }
            Action::ScaleBrush(f) => self.scale_brush(f),
            Action::SetBrush(b) => {
                self.brush = BrushSettings {
                    radius_mm: self.brush.radius_mm,
                    ..b
                };
            }
            Action::SetPropagateMargin(m) => self.propagate_margin = m,
            Action::SetSupportSize(k) => self.support_size = k.map(|k| k.max(1)),
            Action::SetChain(c) => self.chain = c,
            // Structures.
            Action::SelectStructure(v) => self.select_structure(v),
            Action::AddStructure => self.add_structure(),
            Action::RenameStructure(v, name) => self.style(v, |s| {
                if !name.trim().is_empty() {
                    s.name = name.trim().to_owned();
                }
            }),
            Action::SetColour(v, c) => self.style(v, |s| s.colour = c),
            Action::SetVisible(v, on) => self.style(v, |s| s.visible = on),
            Action::SetOpacity(v, a) => self.style(v, |s| s.opacity = a.clamp(0.0, 1.0)),
            // Editing and review.
            Action::StrokeBegin { slice, at } => self.stroke_begin(slice, at),
            Action::StrokeTo(at) => self.stroke_to(at),
            Action::StrokeEnd => self.stroke_end(),
            Action::LassoPoint { slice, at } => self.lasso_point(slice, at),
            Action::LassoFinish => self.lasso_finish(),
            Action::LassoCancel => self.lasso = None,
            Action::Undo => self.undo(),
            Action::Redo => self.redo(),
            Action::Accept => self.review(true),
            Action::Reject => self.review(false),
            Action::NextToReview => self.next_to_review(),
            Action::SetDiagnostics(on) => self.show_diagnostics = on,
            Action::SetWorkAxis(axis) => self.set_work_axis(axis),
            // The network.
            Action::Propagate => self.propagate(),
            Action::FillBetweenSlices => self.fill_between_slices(),
            Action::CancelPropagation => self.propagation.cancel(),
            Action::Explain { slice, at } => self.explain(slice, at),
            Action::CloseExplain => self.propagation.close_explanation(),
            Action::ExportExplanation(dir) => self.export_explanation(&dir),
            Action::SetExplainStages(stages) => {
                if let Some(e) = self.propagation.explanation_mut() {
                    e.stages = stages;
                }
            }
            // Messages and quitting.
            Action::DismissNotice(n) => {
                if n < self.notices.len() {
                    self.notices.remove(n);
                }
            }
            Action::Quit => self.quit(),
            Action::QuitDiscarding => {
                self.quit = QuitState::Confirmed;
                self.shutdown();
            }
            Action::CancelQuit => self.quit = QuitState::Running,
        }
    }

    /// Runs `f` on the open document, if there is one.
    fn with_doc(&mut self, f: impl FnOnce(&mut Document)) {
        if let Some(doc) = &mut self.doc {
            f(doc);
        }
    }

    // ----- files -----

    fn open(&mut self, path: PathBuf) {
        if !self.ask_before_replacing(Action::Open(path.clone())) {
            self.start_load(LoadRequest::Volume(path), None);
        }
    }

    fn open_dialog(&mut self) {
        match rfd::FileDialog::new().pick_file() {
            Some(path) => self.open(path),
            None => self.notify(
                Level::Info,
                "No file dialog is available here; drop the file on the window instead.",
            ),
        }
    }

    fn open_series(&mut self, path: PathBuf, series_uid: String) {
        self.series_choice = None;
        self.start_load(LoadRequest::Series { path, series_uid }, None);
    }

    fn open_session(&mut self, path: PathBuf) {
        if self.ask_before_replacing(Action::OpenSession(path.clone())) {
            return;
        }
        match SessionFile::read(&path) {
            Ok(file) => self.restore_session(file),
            Err(e) => self.notify(Level::Error, e.to_string()),
        }
    }

    fn import_labels(&mut self, path: PathBuf) {
        if !self.ask_before_replacing(Action::ImportLabels(path.clone())) {
            self.read_labels(&path);
        }
    }

    /// Goes ahead with the action parked by [`Self::ask_before_replacing`].
    fn replace_discarding(&mut self) {
        if let Some(action) = self.pending_replace.take() {
            self.replace_confirmed = true;
            self.apply(action);
        }
    }

    fn restore_recovery(&mut self, n: usize) {
        if n < self.recovery_offers.len() {
            let offer = self.recovery_offers.remove(n);
            match SessionFile::read(&offer.path) {
                Ok(file) => {
                    self.config.recovery.discard(&offer);
                    self.restore_session(file);
                }
                Err(e) => self.notify(Level::Error, e.to_string()),
            }
        }
    }

    fn discard_recovery(&mut self, n: usize) {
        if n < self.recovery_offers.len() {
            let offer = self.recovery_offers.remove(n);
            self.config.recovery.discard(&offer);
        }
    }

    // ----- tools and structures -----

    fn scale_brush(&mut self, factor: f32) {
        self.brush.radius_mm =
            (self.brush.radius_mm * factor).clamp(*BRUSH_RADIUS_MM.start(), *BRUSH_RADIUS_MM.end());
    }

    fn select_structure(&mut self, v: crate::volume::LabelValue) {
        if let Some(doc) = &mut self.doc
            && doc.session.structure(v).is_some()
        {
            doc.active = Some(v);
        }
    }

    fn add_structure(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        let n = doc.session.structures().len() + 1;
        match doc.session.add_structure(&format!("Structure {n}")) {
            Ok(v) => doc.active = Some(v),
            Err(e) => {
                let text = e.to_string();
                self.notify(Level::Error, text);
            }
        }
    }

    fn lasso_point(&mut self, slice: usize, at: [f32; 2]) {
        match &mut self.lasso {
            Some(l) if l.slice == slice => l.points.push(at),
            _ => {
                self.lasso = Some(Lasso {
                    slice,
                    points: vec![at],
                })
            }
        }
    }

    fn undo(&mut self) {
        self.history_step(Session::undo, "Undid", "Nothing to undo.");
    }

    fn redo(&mut self) {
        self.history_step(Session::redo, "Redid", "Nothing to redo.");
    }

    /// Undoes or redoes one edit and says which (`done` and the edit's name), or that
    /// there was `nothing` to do.
    fn history_step(
        &mut self,
        step: fn(&mut Session) -> Option<EditKind>,
        done: &str,
        nothing: &str,
    ) {
        let Some(doc) = &mut self.doc else { return };
        match step(&mut doc.session) {
            Some(kind) => {
                let text = format!("{done} {}.", kind.name());
                self.notify(Level::Info, text);
            }
            None => self.notify(Level::Info, nothing.to_owned()),
        }
    }

    fn explain(&mut self, slice: usize, at: [f32; 2]) {
        if let Some(doc) = &self.doc {
            let r = self.propagation.explain(doc, slice, at, self.support_size);
            if let Err(e) = r {
                self.notify(Level::Error, e.to_string());
            }
        }
    }

    fn quit(&mut self) {
        self.quit = if self.unsaved() {
            QuitState::Asking
        } else {
            QuitState::Confirmed
        };
        if self.quit == QuitState::Confirmed {
            self.shutdown();
        }
    }

    /// With unsaved annotations, parks `action` until the user confirms (returns true:
    /// do not go ahead now). A confirmed action passes once.
    fn ask_before_replacing(&mut self, action: Action) -> bool {
        if self.replace_confirmed || !self.unsaved() {
            self.replace_confirmed = false;
            return false;
        }
        self.pending_replace = Some(action);
        true
    }

    /// Clean exit: stop background work and remove this run's recovery file (the user
    /// saved or chose to discard).
    pub fn shutdown(&mut self) {
        self.propagation.cancel();
        self.config.recovery.clear_own();
    }

    fn style(
        &mut self,
        v: crate::volume::LabelValue,
        f: impl FnOnce(&mut crate::session::StructureStyle),
    ) {
        if let Some(doc) = &mut self.doc
            && let Some(style) = doc.session.style_mut(v)
        {
            f(style);
        }
    }

    fn restore_session(&mut self, file: SessionFile) {
        let Some(path) = file.volume_path.clone() else {
            self.notify(
                Level::Error,
                "the session does not say which volume it belongs to; open the volume first",
            );
            return;
        };
        // The volume may already be open.
        if let Some(doc) = &self.doc
            && doc.fingerprint == file.volume_fingerprint
        {
            match Session::from_file(file, &doc.volume) {
                Ok(session) => {
                    let doc = self.doc.take().expect("checked above");
                    let path = doc.path.clone();
                    let d = Document::with_session(doc.into_loaded(), path, session, None, 0);
                    self.set_document(d);
                    self.notify(Level::Info, "Restored the session.");
                }
                Err(e) => self.notify(Level::Error, e.to_string()),
            }
            return;
        }
        let request = match file.series_uid.clone() {
            Some(series_uid) => LoadRequest::Series { path, series_uid },
            None => LoadRequest::Volume(path),
        };
        self.start_load(request, Some(file));
    }

    /// Replaces the document's annotations with the label map at `path`.
    fn read_labels(&mut self, path: &Path) {
        let Some(doc) = &mut self.doc else { return };
        match io::read_label_map(path, doc.volume.geometry()) {
            Ok(labels) => {
                let session = Session::with_labels(labels, doc.session.axis());
                doc.active = session.structures().first().map(|s| s.value);
                doc.session = session;
                doc.saved_revision = u64::MAX;
                self.propagation.document_changed();
                let text = format!("Loaded labels from {}.", path.display());
                self.notify(Level::Info, text);
            }
            Err(e) => self.notify(Level::Error, e.to_string()),
        }
    }

    // ----- editing -----

    fn stroke_begin(&mut self, slice: usize, at: [f32; 2]) {
        let mode = match self.tool {
            Tool::Brush => PaintMode::Paint {
                overwrite_others: self.brush.overwrite_others,
            },
            Tool::Eraser => PaintMode::Erase,
            _ => return,
        };
        let Some(doc) = &mut self.doc else { return };
        let Some(label) = doc.active else {
            self.notify(
                Level::Error,
                "add a structure in the label list before painting",
            );
            return;
        };
        let kind = if mode == PaintMode::Erase {
            EditKind::Erase
        } else {
            EditKind::Paint
        };
        if let Err(e) = doc.session.begin_stroke(label, slice, kind) {
            self.notify(Level::Error, e.to_string());
            return;
        }
        let image = self
            .brush
            .limit_to_range
            .then(|| doc.volume.slice(doc.session.axis(), slice));
        self.stroke = Some(Stroke {
            last: at,
            mode,
            image,
        });
        self.stroke_to(at);
    }

    fn stroke_to(&mut self, at: [f32; 2]) {
        let (Some(doc), Some(stroke)) = (&mut self.doc, &mut self.stroke) else {
            return;
        };
        let radius_px = brush_radius_px(&doc.session, self.brush.radius_mm);
        let op = PaintOp {
            shape: Shape::Capsule {
                from: stroke.last,
                to: at,
                radius_px,
            },
            mode: stroke.mode,
            range: self.brush.limit_to_range.then_some(self.brush.range),
        };
        doc.session.stroke(&op, stroke.image.as_ref());
        stroke.last = at;
    }

    fn stroke_end(&mut self) {
        if self.stroke.take().is_some()
            && let Some(doc) = &mut self.doc
        {
            doc.session.end_stroke();
        }
    }

    fn lasso_finish(&mut self) {
        let Some(lasso) = self.lasso.take() else {
            return;
        };
        let Some(doc) = &mut self.doc else { return };
        let Some(label) = doc.active else { return };
        if lasso.points.len() < 3 {
            self.notify(Level::Info, "A lasso needs at least three points.");
            return;
        }
        let image = self
            .brush
            .limit_to_range
            .then(|| doc.volume.slice(doc.session.axis(), lasso.slice));
        let op = PaintOp {
            shape: Shape::Polygon {
                points: lasso.points,
            },
            mode: PaintMode::Paint {
                overwrite_others: self.brush.overwrite_others,
            },
            range: self.brush.limit_to_range.then_some(self.brush.range),
        };
        if let Err(e) = doc.session.paint(label, lasso.slice, &op, image.as_ref()) {
            self.notify(Level::Error, e.to_string());
        }
    }

    fn review(&mut self, accept: bool) {
        let Some(doc) = &mut self.doc else { return };
        let Some(label) = doc.active else { return };
        let slice = doc.work_slice();
        let result = if accept {
            doc.session.accept(label, slice)
        } else {
            doc.session.reject(label, slice)
        };
        match result {
            Ok(()) => {
                let text = if accept {
                    format!("Accepted slice {slice}: it is now support.")
                } else {
                    format!("Rejected slice {slice}: cleared.")
                };
                self.notify(Level::Info, text);
                // Move on to the next slice that needs a look.
                self.next_to_review();
            }
            Err(EditError::NotPredicted(_)) => self.notify(
                Level::Info,
                format!("Slice {slice} holds no prediction to accept or reject."),
            ),
            Err(e) => self.notify(Level::Error, e.to_string()),
        }
    }

    fn set_work_axis(&mut self, axis: Axis) {
        let Some(doc) = &mut self.doc else { return };
        if doc.session.axis() == axis {
            return;
        }
        let plane = crate::display::view::plane_of(doc.volume.geometry(), axis).name();
        match doc.session.set_axis(axis) {
            Ok(()) => {
                // An explanation belongs to the old axis.
                self.propagation.close_explanation();
                self.notify(
                    Level::Info,
                    format!(
                        "Annotating in the {} view: propagation, review and the overview follow its slices.",
                        plane.to_lowercase()
                    ),
                );
            }
            Err(_) => self.notify(
                Level::Info,
                "The working view is fixed once a slice is annotated; undo everything (or start a new session) to annotate in another view.",
            ),
        }
    }

    fn export_explanation(&mut self, dir: &Path) {
        let (Some(doc), Some(view)) = (&self.doc, self.propagation.explanation_mut()) else {
            return;
        };
        match super::export::write_explanation_pngs(doc, view, dir) {
            Ok(files) => self.notify(
                Level::Info,
                format!(
                    "Saved the explanation as {} PNG{} in {}",
                    files.len(),
                    if files.len() == 1 { "" } else { "s" },
                    dir.display()
                ),
            ),
            Err(e) => self.notify(Level::Error, format!("could not save the explanation: {e}")),
        }
    }

    fn next_to_review(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        let Some(label) = doc.active else { return };
        doc.refresh_overview();
        let flagged: Vec<usize> = doc
            .overview()
            .map(|o| o.flagged().collect())
            .unwrap_or_default();
        match doc
            .session
            .next_to_review_flagged(label, doc.work_slice(), &flagged)
        {
            Some(s) => {
                let axis = doc.session.axis().index();
                doc.cursor[axis] = s;
            }
            None => self.notify(Level::Info, "No predicted slice is left to review."),
        }
    }

    fn propagate(&mut self) {
        let strategy = self.strategy();
        let Some(doc) = &mut self.doc else { return };
        let Some(label) = doc.active else {
            self.notify(
                Level::Error,
                "add a structure and paint it on a few slices first",
            );
            return;
        };
        let Some(plan) = doc.session.propagation_plan(label, self.propagate_margin) else {
            self.notify(
                Level::Error,
                "paint the structure on at least one slice (or accept a prediction) before propagating",
            );
            return;
        };
        if plan.targets.is_empty() {
            self.notify(
                Level::Info,
                "Every slice in range is already annotated or reviewed.",
            );
            return;
        }
        if let Err(e) = self.propagation.start(doc, plan, strategy) {
            self.notify(Level::Error, e.to_string());
        }
    }

    /// Fills the active structure between its support slices by shape-based
    /// interpolation (no network); the slices become predictions to review.
    fn fill_between_slices(&mut self) {
        if self.propagation.run().is_some() {
            self.notify(
                Level::Info,
                "Wait for the propagation to finish (or cancel it) first.",
            );
            return;
        }
        let Some(doc) = &mut self.doc else { return };
        let Some(label) = doc.active else {
            self.notify(
                Level::Error,
                "add a structure and paint it on a few slices first",
            );
            return;
        };
        self.fill_groups += 1;
        let group = FILL_GROUPS + self.fill_groups;
        match doc.session.fill_between_slices(label, group) {
            Ok(0) => self.notify(
                Level::Info,
                "Fill between slices needs the structure painted on at least two slices, with unreviewed slices between them.",
            ),
            Ok(n) => self.notify(
                Level::Info,
                format!("Filled {n} slices between your slices by shape-based interpolation (no network); review them like predictions."),
            ),
            Err(e) => self.notify(Level::Error, e.to_string()),
        }
    }

    /// How the next propagation uses the support set: the chained options as set in
    /// the panel (by default the prior carries the two nearest annotations along the
    /// image, which also suits "only between my first and last slice":
    /// `docs/evaluation.md`), or the paper's one-shot propagation.
    pub fn strategy(&self) -> crate::engine::Strategy {
        match self.chain {
            Some(options) => crate::engine::Strategy::Chain(options),
            None => crate::engine::Strategy::OneShot {
                support_size: self.support_size,
            },
        }
    }

    // ----- saving -----

    fn save(&mut self) {
        let Some(doc) = &self.doc else { return };
        match doc.save_target.clone() {
            Some(t) => self.save_to(t.path, t.format),
            None => {
                let format = if doc.is_dicom() {
                    LabelFormat::DicomSeg
                } else {
                    LabelFormat::Nifti
                };
                self.save_dialog = Some(SaveDialog {
                    path: doc.default_save_path(format).display().to_string(),
                    format,
                });
            }
        }
    }

    /// Saves the labels as DICOM SEG (to the SEG file already chosen, else beside the
    /// series) and sends that file to the PACS window's server; a failed send keeps the
    /// file and can be retried.
    fn send_seg_to_pacs(&mut self) {
        let Some(doc) = &self.doc else { return };
        let path = match &doc.save_target {
            Some(t) if t.format == LabelFormat::DicomSeg => t.path.clone(),
            _ => doc.default_save_path(LabelFormat::DicomSeg),
        };
        self.save_to(path.clone(), LabelFormat::DicomSeg);
        let saved = self
            .doc
            .as_ref()
            .and_then(|d| d.save_target.as_ref())
            .is_some_and(|t| t.path == path && t.format == LabelFormat::DicomSeg);
        if !saved {
            return;
        }
        self.pacs.open = true;
        if self.pacs.url.trim().is_empty() {
            self.pacs.message = Some((
                true,
                "Choose the PACS server first, then send again.".into(),
            ));
            self.pacs.last_sent = Some(path);
            return;
        }
        self.pacs.send(path);
    }

    fn save_to(&mut self, path: PathBuf, format: LabelFormat) {
        let Some(doc) = &mut self.doc else { return };
        if let Err(e) = super::export::write_labels(doc, &path, format) {
            self.notify(Level::Error, e.to_string());
            return;
        }
        let session_path = session_path_for(&path);
        let file = doc.session_file();
        if let Err(e) = file.write(&session_path) {
            self.notify(Level::Error, e.to_string());
            return;
        }
        doc.saved_revision = doc.session.revision();
        doc.save_target = Some(SaveTarget {
            path: path.clone(),
            format,
        });
        self.save_dialog = None;
        self.config.recovery.clear_own();
        self.autosave.written(Instant::now(), doc.saved_revision);
        let text = format!(
            "Saved {} to {} (session beside it).",
            format.name(),
            path.display()
        );
        self.notify(Level::Info, text);
    }

    fn save_session(&mut self, path: &Path) {
        let Some(doc) = &self.doc else { return };
        let file = doc.session_file();
        match file.write(path) {
            Ok(()) => {
                let text = format!("Saved the session to {}.", path.display());
                self.notify(Level::Info, text);
            }
            Err(e) => self.notify(Level::Error, e.to_string()),
        }
    }

    /// Whether a stroke is in progress.
    pub fn stroking(&self) -> bool {
        self.stroke.is_some()
    }
}

/// Brush radius in slice pixels for a radius in mm (round in millimetres).
pub fn brush_radius_px(session: &Session, radius_mm: f32) -> [f32; 2] {
    let (sx, sy) = session.geometry().slice_spacing_mm(session.axis());
    [radius_mm / sx as f32, radius_mm / sy as f32]
}

#[cfg(test)]
mod tests;
