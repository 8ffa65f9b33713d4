//! `ICSEG_PACS_DEMO=<folder> icseg`: the PACS round trip scripted through the real
//! window, for `scripts/pacs-smoke.sh` (Xvfb, the test Orthanc) and the screenshots in
//! `docs/`. It opens File → Open from PACS with the server of `ICSEG_PACS_URL`,
//! `ICSEG_PACS_USER`, `ICSEG_PACS_PASSWORD`, searches, picks the largest image series,
//! opens it (timing "Open" to the first frame that shows it), paints a square on the
//! middle slice, sends the DICOM SEG back, shows the server's answer, takes a screenshot
//! of the table and of the answer, and quits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eframe::egui;

use crate::session::{PaintMode, PaintOp, Shape};

use super::actions::Action;
use super::pacs::AuthKind;
use super::state::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Start,
    Studies,
    Series,
    ShotSearch,
    Pull,
    Paint,
    Send,
    ShotSent,
    Done,
}

/// The script's progress.
pub struct PacsDemo {
    out: PathBuf,
    stage: Stage,
    since: Instant,
    frames: u32,
    shot: Arc<Mutex<Option<Result<PathBuf, String>>>>,
    shot_pending: bool,
    opened_at: Option<Instant>,
    /// Lines for stdout.
    pub log: Vec<String>,
    /// Set when the script failed.
    pub failed: Option<String>,
}

impl PacsDemo {
    /// A script writing its screenshots into `out`.
    pub fn new(out: PathBuf) -> Self {
        Self {
            out,
            stage: Stage::Start,
            since: Instant::now(),
            frames: 0,
            shot: Arc::new(Mutex::new(None)),
            shot_pending: false,
            opened_at: None,
            log: Vec::new(),
            failed: None,
        }
    }

    /// Whether the script has finished.
    pub fn finished(&self) -> bool {
        self.stage == Stage::Done
    }

    fn next(&mut self, stage: Stage) {
        self.stage = stage;
        self.since = Instant::now();
        self.frames = 0;
    }

    fn fail(&mut self, why: String) {
        self.log.push(format!("pacs demo failed: {why}"));
        self.failed = Some(why);
        self.next(Stage::Done);
    }

    fn screenshot(&mut self, ctx: &egui::Context, name: &str) -> bool {
        if !self.shot_pending {
            if self.frames < 15 {
                ctx.request_repaint();
                return false;
            }
            let path = self.out.join(name);
            let slot = self.shot.clone();
            let waker = ctx.clone();
            ctx.request_screenshot(move |image| {
                let result = super::demo::save_png(&image, &path).map(|()| path);
                if let Ok(mut s) = slot.lock() {
                    *s = Some(result);
                }
                waker.request_repaint();
            });
            self.shot_pending = true;
            return false;
        }
        match self.shot.lock().ok().and_then(|mut s| s.take()) {
            None => {
                ctx.request_repaint_after(Duration::from_millis(20));
                false
            }
            Some(Ok(path)) => {
                self.shot_pending = false;
                self.log.push(format!("screenshot {}", path.display()));
                true
            }
            Some(Err(e)) => {
                self.shot_pending = false;
                self.fail(format!("screenshot {name}: {e}"));
                false
            }
        }
    }

    /// Advances the script by one frame (after the frame was drawn); returns actions.
    pub fn tick(&mut self, ctx: &egui::Context, state: &mut AppState) -> Vec<Action> {
        self.frames += 1;
        ctx.request_repaint_after(Duration::from_millis(30));
        let mut actions = Vec::new();
        if self.since.elapsed() > Duration::from_secs(120) {
            self.fail(format!("stage {:?} took too long", self.stage));
            return actions;
        }
        let failed_message = state
            .pacs
            .message
            .as_ref()
            .filter(|(error, _)| *error)
            .map(|(_, text)| text.clone());
        if state.pacs.busy.is_none()
            && let Some(text) = failed_message
        {
            self.fail(text);
            return actions;
        }
        let pacs = &mut state.pacs;
        match self.stage {
            Stage::Start => {
                if self.frames > 5 {
                    let env = |k: &str| std::env::var(k).unwrap_or_default();
                    pacs.url = env("ICSEG_PACS_URL");
                    pacs.user = env("ICSEG_PACS_USER");
                    pacs.password = env("ICSEG_PACS_PASSWORD");
                    pacs.auth_kind = if pacs.user.is_empty() {
                        AuthKind::None
                    } else {
                        AuthKind::Basic
                    };
                    actions.push(Action::OpenPacs);
                    pacs.search(0);
                    self.next(Stage::Studies);
                }
            }
            Stage::Studies => {
                if pacs.busy.is_none()
                    && let Some(page) = &pacs.studies
                {
                    let best = (0..page.studies.len())
                        .max_by_key(|&n| page.studies[n].instance_count.unwrap_or(0));
                    match best {
                        Some(n) => {
                            pacs.select_study(n);
                            self.next(Stage::Series);
                        }
                        None => self.fail("the PACS holds no studies".into()),
                    }
                }
            }
            Stage::Series => {
                if pacs.busy.is_none() {
                    let pick = (0..pacs.series.len())
                        .filter(|&n| pacs.series[n].modality != "SEG")
                        .max_by_key(|&n| pacs.series[n].instances.unwrap_or(0));
                    match pick {
                        Some(n) => {
                            pacs.selected_series = Some(n);
                            self.next(Stage::ShotSearch);
                        }
                        None => self.fail("the study has no image series".into()),
                    }
                }
            }
            Stage::ShotSearch => {
                if self.screenshot(ctx, "pacs-search.png") {
                    state.pacs.pull_selected();
                    self.opened_at = Some(Instant::now());
                    self.next(Stage::Pull);
                }
            }
            Stage::Pull => {
                // This frame drew the opened series: "Open" to first slice on screen.
                if state.doc.is_some() && state.loading().is_none() {
                    let s = self.opened_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
                    self.log.push(format!(
                        "open from PACS: {s:.2} s from Open to the first slice on screen"
                    ));
                    self.next(Stage::Paint);
                }
            }
            Stage::Paint => {
                if let Some(doc) = state.doc.as_mut()
                    && let Some(label) = doc.session.structures().first().map(|s| s.value)
                {
                    let [nx, ny, _] = doc.session.geometry().dims;
                    let (x0, x1) = (nx as f32 * 0.3, nx as f32 * 0.5);
                    let (y0, y1) = (ny as f32 * 0.3, ny as f32 * 0.5);
                    let op = PaintOp {
                        shape: Shape::Polygon {
                            points: vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
                        },
                        mode: PaintMode::Paint {
                            overwrite_others: false,
                        },
                        range: None,
                    };
                    let middle = doc.session.slice_count() / 2;
                    if let Err(e) = doc.session.paint(label, middle, &op, None) {
                        self.fail(e.to_string());
                        return actions;
                    }
                    actions.push(Action::SendSegToPacs);
                    self.next(Stage::Send);
                } else {
                    self.fail("no structure to paint".into());
                }
            }
            Stage::Send => {
                if self.frames > 2
                    && state.pacs.busy.is_none()
                    && let Some((false, text)) = &state.pacs.message
                {
                    self.log.push(format!("send SEG to PACS: {text}"));
                    self.next(Stage::ShotSent);
                }
            }
            Stage::ShotSent => {
                if self.screenshot(ctx, "pacs-sent.png") {
                    actions.push(Action::QuitDiscarding);
                    self.next(Stage::Done);
                }
            }
            Stage::Done => {}
        }
        actions
    }
}
