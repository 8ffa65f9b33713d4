//! A scripted session through the real app, for the window smoke test and the
//! screenshots in `docs/`: `ICSEG_DEMO=<folder> icseg`. It loads the bundled sample,
//! paints a structure on two slices with the intensity-limited brush, propagates,
//! accepts a slice, explains a pixel, saves a screenshot after each step, logs what it
//! measured (frame times while propagating, explanation latency), and quits. Everything
//! goes through the same [`Action`]s a user's clicks produce.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eframe::egui;

use crate::session::IntensityRange;

use super::actions::{Action, Layout, Tool};
use super::propagation::{StageChoice, summarise_frames};
use super::state::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Load,
    Engine,
    Paint,
    ShotAnnotate,
    Baseline,
    Propagate,
    ShotPropagated,
    Explain,
    ExplainWarm,
    ShotExplain,
    Done,
}

/// The script's progress.
pub struct Demo {
    out: PathBuf,
    stage: Stage,
    since: Instant,
    frames: u32,
    shot: Arc<Mutex<Option<Result<PathBuf, String>>>>,
    shot_pending: bool,
    last_tick: Option<Instant>,
    intervals: Vec<Duration>,
    /// Lines for stdout.
    pub log: Vec<String>,
    /// Set when the script failed.
    pub failed: Option<String>,
}

impl Demo {
    /// A demo writing its screenshots into `out`.
    pub fn new(out: PathBuf) -> Self {
        Self {
            out,
            stage: Stage::Load,
            since: Instant::now(),
            frames: 0,
            shot: Arc::new(Mutex::new(None)),
            shot_pending: false,
            last_tick: None,
            intervals: Vec::new(),
            log: Vec::new(),
            failed: None,
        }
    }

    /// Whether the script has finished (successfully or not).
    pub fn finished(&self) -> bool {
        self.stage == Stage::Done
    }

    fn next(&mut self, stage: Stage) {
        self.stage = stage;
        self.since = Instant::now();
        self.frames = 0;
    }

    fn fail(&mut self, why: String) {
        self.log.push(format!("demo failed: {why}"));
        self.failed = Some(why);
        self.next(Stage::Done);
    }

    /// Takes a screenshot named `name`; returns true once it is written.
    fn screenshot(&mut self, ctx: &egui::Context, name: &str) -> bool {
        if !self.shot_pending {
            // Let a few frames settle (textures, layout) first.
            if self.frames < 15 {
                ctx.request_repaint();
                return false;
            }
            let path = self.out.join(name);
            let slot = self.shot.clone();
            let waker = ctx.clone();
            ctx.request_screenshot(move |image| {
                let result = save_png(&image, &path).map(|()| path);
                if let Ok(mut s) = slot.lock() {
                    *s = Some(result);
                }
                waker.request_repaint();
            });
            self.shot_pending = true;
            return false;
        }
        let taken = self.shot.lock().ok().and_then(|mut s| s.take());
        match taken {
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

    /// Advances the script by one frame; returns the actions to apply.
    pub fn tick(&mut self, ctx: &egui::Context, state: &AppState) -> Vec<Action> {
        self.frames += 1;
        let now = Instant::now();
        if let Some(t) = self.last_tick.replace(now) {
            self.intervals.push(now.duration_since(t));
        }
        ctx.request_repaint_after(Duration::from_millis(30));
        let mut actions = Vec::new();
        if self.since.elapsed() > Duration::from_secs(900) {
            self.fail(format!("stage {:?} took too long", self.stage));
            return actions;
        }
        match self.stage {
            Stage::Load => {
                if state.doc.is_some() {
                    self.next(Stage::Engine);
                } else if state.loading().is_none() && self.frames > 5 {
                    self.fail("no volume could be opened".into());
                }
            }
            Stage::Engine => {
                if let Some(f) = state.propagation.failure() {
                    let f = f.to_owned();
                    self.fail(f);
                } else if state.propagation.info().is_some() {
                    self.next(Stage::Paint);
                }
            }
            Stage::Paint => {
                // Lateral ventricles of the MNI152 template: dark CSF, painted with a
                // large brush limited to CSF-like intensities.
                let Some(doc) = &state.doc else {
                    return actions;
                };
                let dark = IntensityRange {
                    min: 15.0,
                    max: 95.0,
                };
                let mut brush = state.brush;
                brush.limit_to_range = true;
                brush.range = dark;
                actions.push(Action::SetBrush(brush));
                actions.push(Action::ScaleBrush(6.0 / state.brush.radius_mm));
                actions.push(Action::SetTool(Tool::Brush));
                // Strokes along each ventricle (voxel i, j on axial slices 86 and 94).
                for k in [86usize, 94] {
                    if k >= doc.volume.dims()[2] {
                        continue;
                    }
                    for i in [88.0f32, 108.0] {
                        actions.push(Action::StrokeBegin {
                            slice: k,
                            at: [i, 105.0],
                        });
                        actions.push(Action::StrokeTo([i, 135.0]));
                        actions.push(Action::StrokeEnd);
                    }
                }
                actions.push(Action::SetSlice {
                    axis: doc.session.axis(),
                    index: 94,
                });
                actions.push(Action::SetLayout(Layout::Single(doc.session.axis())));
                self.next(Stage::ShotAnnotate);
            }
            Stage::ShotAnnotate => {
                if self.frames == 1 {
                    // The screenshots show the views, not the random-weights warning
                    // (the status bar still says which weights run).
                    return dismiss_all(state);
                }
                if self.screenshot(ctx, "annotate.png") {
                    self.intervals.clear();
                    self.next(Stage::Baseline);
                }
            }
            Stage::Baseline => {
                // Frame intervals with the network idle, repainting continuously.
                ctx.request_repaint();
                if self.frames > 60 {
                    if let Some(f) = summarise_frames(&self.intervals) {
                        self.log.push(format!(
                            "frame intervals with the network idle: median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
                            f.median_ms, f.p95_ms, f.max_ms
                        ));
                    }
                    actions.push(Action::Propagate);
                    self.next(Stage::Propagate);
                }
            }
            Stage::Propagate => {
                if self.frames > 3 && state.propagation.run().is_none() {
                    match state.propagation.last() {
                        Some(last) => {
                            self.log.push(format!(
                                "propagated {} slices in {:.2} s ({:.0} ms per slice)",
                                last.slices,
                                last.total.as_secs_f64(),
                                last.total.as_secs_f64() * 1000.0 / last.slices.max(1) as f64
                            ));
                            if let Some(f) = last.frames {
                                self.log.push(format!(
                                    "UI frame build time while propagating: {} frames, median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
                                    f.frames, f.median_ms, f.p95_ms, f.max_ms
                                ));
                            }
                            if let Some(f) = last.intervals {
                                self.log.push(format!(
                                    "frame intervals while propagating: median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
                                    f.median_ms, f.p95_ms, f.max_ms
                                ));
                            }
                            actions.push(Action::NextToReview);
                            actions.push(Action::Accept);
                            actions.push(Action::SetLayout(Layout::ThreeUp));
                            self.next(Stage::ShotPropagated);
                        }
                        None => self.fail("the propagation did not finish".into()),
                    }
                }
            }
            Stage::ShotPropagated => {
                if self.frames == 1 {
                    return dismiss_all(state);
                }
                if self.screenshot(ctx, "propagated.png") {
                    let Some(doc) = &state.doc else {
                        return actions;
                    };
                    actions.push(Action::SetLayout(Layout::Single(doc.session.axis())));
                    actions.push(Action::SetSlice {
                        axis: doc.session.axis(),
                        index: 90,
                    });
                    actions.push(Action::Explain {
                        slice: 90,
                        at: [86.0, 116.0],
                    });
                    self.next(Stage::Explain);
                }
            }
            Stage::Explain | Stage::ExplainWarm => match state.propagation.explanation() {
                Some(e) if e.result.is_some() => {
                    let cache = e.result.as_ref().map(|r| r.cache);
                    let network = e
                        .result
                        .as_ref()
                        .map_or(0.0, |r| r.latency.as_secs_f64() * 1000.0);
                    if let Some(l) = e.latency {
                        self.log.push(format!(
                            "explanation: {:.0} ms from click to result in the UI, network {network:.0} ms (support features: {cache:?})",
                            l.as_secs_f64() * 1000.0
                        ));
                    }
                    if self.stage == Stage::Explain {
                        // A second click on the same support set: features come from the cache.
                        actions.push(Action::Explain {
                            slice: 90,
                            at: [110.0, 118.0],
                        });
                        self.next(Stage::ExplainWarm);
                    } else {
                        actions.push(Action::SetExplainStages(StageChoice::All));
                        self.next(Stage::ShotExplain);
                    }
                }
                Some(_) => {}
                None if self.frames > 3 => self.fail("the explanation failed".into()),
                None => {}
            },
            Stage::ShotExplain => {
                if self.frames == 1 {
                    return dismiss_all(state);
                }
                if self.screenshot(ctx, "explain.png") {
                    actions.push(Action::QuitDiscarding);
                    self.next(Stage::Done);
                }
            }
            Stage::Done => {}
        }
        actions
    }
}

/// Dismisses every warning and error shown (newest first, so indices stay valid).
fn dismiss_all(state: &AppState) -> Vec<Action> {
    let mut shown: Vec<usize> = state.problems().map(|(n, _)| n).collect();
    shown.reverse();
    shown.into_iter().map(Action::DismissNotice).collect()
}

pub(super) fn save_png(image: &egui::ColorImage, path: &std::path::Path) -> Result<(), String> {
    let [w, h] = image.size;
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
    let img = image::RgbaImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| "the screenshot has the wrong size".to_owned())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    img.save(path)
        .map_err(|e| format!("{e}: {}", path.display()))
}
