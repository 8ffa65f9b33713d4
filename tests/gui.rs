//! The desktop app driven headless with egui_kittest: real widgets, real pointer and
//! keyboard events, the real engine (randomly initialised `lite` weights on the CPU).
#![cfg(feature = "gui")]

use std::path::Path;
use std::time::{Duration, Instant};

use eframe::egui::{self, Modifiers, PointerButton, Pos2, Rect};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use icseg::display::view::{Camera, ViewMapping};
use icseg::engine::{DeviceChoice, DeviceRequest, EngineConfig, WeightsChoice};
use icseg::model::ModelConfig;
use icseg::session::{RecoveryStore, SliceState};
use icseg::ui::actions::Action;
use icseg::ui::notice::Level;
use icseg::ui::render::{Look, cpu};
use icseg::ui::state::AppConfig;
use icseg::ui::{IcsegApp, sample_path};
use icseg::ui::{overview, propagation};
use icseg::volume::{Axis, Image2D};

/// A process id above Linux's `pid_max`: never running, so its files look orphaned.
const DEAD_PID: u32 = 4_194_399;
const SIZE: [f32; 2] = [1280.0, 800.0];

fn engine() -> propagation::EngineSettings {
    propagation::EngineSettings {
        engine: Some(EngineConfig {
            device: DeviceRequest::Choice(DeviceChoice::Cpu),
            model: ModelConfig::lite(),
            weights: WeightsChoice::Random,
            ..EngineConfig::default()
        }),
    }
}

fn config(dir: &Path, pid: u32, autosave: Duration) -> AppConfig {
    AppConfig {
        open: Some(sample_path().expect("the bundled sample is in assets/")),
        recovery: RecoveryStore::with_owner(dir.join("recovery"), pid),
        autosave_interval: autosave,
        engine: engine(),
    }
}

fn harness(config: AppConfig) -> Harness<'static, IcsegApp> {
    Harness::builder()
        .with_size(SIZE)
        .build_eframe(move |cc| IcsegApp::new(cc, config))
}

/// Steps the app (in real time, so background threads progress) until `done` holds.
fn step_until(
    h: &mut Harness<'_, IcsegApp>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&IcsegApp) -> bool,
) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.step();
}

/// Steps until the bundled sample is open.
fn wait_for_sample(h: &mut Harness<'_, IcsegApp>) {
    step_until(h, "the sample to load", Duration::from_secs(60), |a| {
        a.state.doc.is_some()
    });
}

/// The app with the bundled sample loaded, recovery in `dir` and no autosave during
/// the test.
fn harness_on_sample(dir: &Path) -> Harness<'static, IcsegApp> {
    let mut h = harness(config(dir, std::process::id(), Duration::from_secs(3600)));
    wait_for_sample(&mut h);
    h
}

/// The chained options the next propagation runs with (the default strategy).
fn chain_options(h: &Harness<'_, IcsegApp>) -> icseg::engine::ChainOptions {
    match h.state().state.strategy() {
        icseg::engine::Strategy::Chain(c) => c,
        other => panic!("the default strategy is chained, not {other:?}"),
    }
}

fn view_rect(h: &Harness<'_, IcsegApp>, name: &str) -> Rect {
    h.get_by_label(name).rect()
}

/// A primary-button drag through `points`, one event per frame.
fn drag(h: &mut Harness<'_, IcsegApp>, points: &[Pos2], modifiers: Modifiers) {
    let first = points[0];
    if modifiers != Modifiers::NONE {
        h.event(egui::Event::ModifiersChanged(modifiers));
    }
    h.event(egui::Event::PointerMoved(first));
    h.event(egui::Event::PointerButton {
        pos: first,
        button: PointerButton::Primary,
        pressed: true,
        modifiers,
    });
    for &p in &points[1..] {
        h.event(egui::Event::PointerMoved(p));
    }
    let last = *points.last().unwrap();
    h.event(egui::Event::PointerButton {
        pos: last,
        button: PointerButton::Primary,
        pressed: false,
        modifiers,
    });
    if modifiers != Modifiers::NONE {
        h.event(egui::Event::ModifiersChanged(Modifiers::NONE));
    }
    for _ in 0..points.len() + 3 {
        h.step();
    }
}

fn click(h: &mut Harness<'_, IcsegApp>, at: Pos2, modifiers: Modifiers) {
    drag(h, &[at], modifiers);
}

fn press(h: &mut Harness<'_, IcsegApp>, key: egui::Key, modifiers: Modifiers) {
    h.key_press_modifiers(modifiers, key);
    h.step();
    h.step();
}

fn labels_on(app: &IcsegApp, slice: usize) -> usize {
    let doc = app.state.doc.as_ref().unwrap();
    let l = doc.active.unwrap();
    doc.session
        .mask(slice, l)
        .data
        .iter()
        .filter(|&&v| v == 1)
        .count()
}

#[test]
fn annotate_propagate_review_explain_and_save_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness_on_sample(dir.path());
    step_until(
        &mut h,
        "the network to start",
        Duration::from_secs(120),
        |a| a.state.propagation.info().is_some() || a.state.propagation.failure().is_some(),
    );
    assert!(
        h.state().state.propagation.failure().is_none(),
        "the engine starts on the CPU"
    );
    let dims = h.state().state.doc.as_ref().unwrap().volume.dims();
    assert_eq!(dims, [197, 233, 189]);

    // Paint with the brush (the default tool) on the middle axial slice...
    let view = view_rect(&h, "Axial view");
    let c = view.center();
    let k0 = h.state().state.doc.as_ref().unwrap().work_slice();
    drag(
        &mut h,
        &[c - egui::vec2(40.0, 0.0), c, c + egui::vec2(40.0, 10.0)],
        Modifiers::NONE,
    );
    let first = labels_on(h.state(), k0);
    assert!(first > 50, "the stroke painted {first} voxels");
    // ...and, five slices up (PageUp), a second stroke.
    for _ in 0..5 {
        press(&mut h, egui::Key::PageUp, Modifiers::NONE);
    }
    let k1 = h.state().state.doc.as_ref().unwrap().work_slice();
    assert_eq!(k1, k0 + 5);
    // (Three points: with two, the stroke is the first dab alone, about π·4² voxels for
    // the 4 mm brush, right at the threshold below.)
    drag(
        &mut h,
        &[c - egui::vec2(30.0, 5.0), c, c + egui::vec2(30.0, 5.0)],
        Modifiers::NONE,
    );
    let second = labels_on(h.state(), k1);
    assert!(second > 50, "the stroke painted {second} voxels");
    {
        let doc = h.state().state.doc.as_ref().unwrap();
        let st = doc.session.structure(doc.active.unwrap()).unwrap();
        assert_eq!(st.state(k0), SliceState::Manual);
        assert_eq!(st.state(k1), SliceState::Manual);
    }

    // Undo and redo from the keyboard.
    press(&mut h, egui::Key::Z, Modifiers::COMMAND);
    assert_eq!(labels_on(h.state(), k1), 0);
    assert_eq!(labels_on(h.state(), k0), first);
    press(&mut h, egui::Key::Z, Modifiers::COMMAND | Modifiers::SHIFT);
    assert_eq!(labels_on(h.state(), k1), second);

    // Propagate from the side panel's button; the UI keeps running meanwhile.
    let before = h
        .state()
        .state
        .doc
        .as_ref()
        .unwrap()
        .session
        .labels()
        .clone();
    h.get_by_label("Propagate (P)").click();
    h.step();
    assert!(h.state().state.propagation.run().is_some(), "a run started");
    step_until(&mut h, "propagation", Duration::from_secs(600), |a| {
        a.state.propagation.run().is_none()
    });
    let last = h
        .state()
        .state
        .propagation
        .last()
        .cloned()
        .expect("the run finished");
    let frames = last.frames.expect("frames were measured during the run");
    let message = h.state().state.status_line().unwrap_or_default().to_owned();
    assert!(message.starts_with("Propagated"), "{message}");
    assert!(
        !message.contains("frame"),
        "frame times are for the diagnostics window, not the status line: {message}"
    );
    eprintln!(
        "propagated {} slices in {:.1} s; UI frames during the run: n={} median {:.1} ms p95 {:.1} ms max {:.1} ms",
        last.slices,
        last.total.as_secs_f64(),
        frames.frames,
        frames.median_ms,
        frames.p95_ms,
        frames.max_ms
    );
    let predicted: Vec<usize> = {
        let doc = h.state().state.doc.as_ref().unwrap();
        let st = doc.session.structure(doc.active.unwrap()).unwrap();
        let p: Vec<usize> = (0..dims[2])
            .filter(|&k| st.state(k) == SliceState::Predicted)
            .collect();
        // The support slices keep exactly what was painted.
        let [nx, ny, _] = dims;
        for k in [k0, k1] {
            let range = nx * ny * k..nx * ny * (k + 1);
            assert_eq!(
                doc.session.labels().labels()[range.clone()],
                before.labels()[range]
            );
        }
        p
    };
    // Default range: 10 slices beyond the support, support slices excluded.
    assert_eq!(predicted.len(), last.slices);
    assert_eq!(predicted.len(), (k1 + 10) - (k0 - 10) + 1 - 2);
    assert!(predicted.iter().all(|&k| k + 10 >= k0 && k <= k1 + 10));

    // Review: jump to the least certain prediction and accept it with Enter.
    press(&mut h, egui::Key::N, Modifiers::NONE);
    let k2 = h.state().state.doc.as_ref().unwrap().work_slice();
    assert!(predicted.contains(&k2));
    press(&mut h, egui::Key::Enter, Modifiers::NONE);
    {
        let doc = h.state().state.doc.as_ref().unwrap();
        let l = doc.active.unwrap();
        assert_eq!(
            doc.session.structure(l).unwrap().state(k2),
            SliceState::Accepted
        );
        assert_eq!(doc.session.support_slices(l), {
            let mut s = vec![k0, k1, k2];
            s.sort();
            s
        });
    }

    // Explain: Alt+click on the query slice opens the panel with one row per support slice.
    let k_query = h.state().state.doc.as_ref().unwrap().work_slice();
    let view = view_rect(&h, "Axial view");
    click(&mut h, view.center(), Modifiers::ALT);
    step_until(&mut h, "the explanation", Duration::from_secs(120), |a| {
        a.state
            .propagation
            .explanation()
            .is_some_and(|e| e.result.is_some())
    });
    h.step();
    let (support_count, latency) = {
        let app = h.state();
        let doc = app.state.doc.as_ref().unwrap();
        let e = app.state.propagation.explanation().unwrap();
        assert_eq!(e.query.0, k_query);
        // The chained propagation segmented the slice with its two nearest support
        // slices: the explanation shows exactly those.
        let support = doc.session.support_slices(doc.active.unwrap());
        let used = &e.result.as_ref().unwrap().support_slices;
        assert_eq!(used.len(), 2.min(support.len()), "{used:?} of {support:?}");
        assert!(
            used.iter().all(|z| support.contains(z)),
            "{used:?} of {support:?}"
        );
        (used.len(), e.latency.unwrap())
    };
    eprintln!(
        "explain latency (debug build, click to panel): {:.0} ms",
        latency.as_secs_f64() * 1000.0
    );
    let _ = h.get_by_label("Explanation");
    // Readable: the support slices ordered by attention mass (largest first), each
    // cropped to the region the network looked at.
    let (first, crop_px) = {
        let e = h.state().state.propagation.explanation().unwrap();
        let order = e.order_by_mass();
        let ex = e.result.as_ref().unwrap();
        let masses: Vec<f32> = order
            .iter()
            .map(|&n| ex.stages[2].support_mass[n])
            .collect();
        assert!(masses.windows(2).all(|m| m[0] >= m[1]), "{masses:?}");
        let doc = h.state().state.doc.as_ref().unwrap();
        let s = ex.support_slices[order[0]];
        let mapping = ViewMapping::new(doc.volume.geometry(), Axis::K, s);
        let d = icseg::display::view::display_box(&mapping, e.crop_box(197, 233));
        let px = [
            d[2].ceil() as u32 - d[0].floor() as u32,
            d[3].ceil() as u32 - d[1].floor() as u32,
        ];
        (s, px)
    };
    h.get_by_label_contains(&format!("#1 Support slice {} ", first + 1));
    // Saved as PNGs: one per support slice at the stage shown, cropped as in the panel.
    let png_dir = dir.path().join("explain");
    h.state_mut()
        .state
        .apply(Action::ExportExplanation(png_dir.clone()));
    let mut pngs: Vec<String> = std::fs::read_dir(&png_dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pngs.sort();
    assert_eq!(pngs.len(), support_count, "{pngs:?}");
    assert_eq!(pngs[0], format!("01_slice{:04}_1-8.png", first + 1));
    let (pw, ph) = image::image_dimensions(png_dir.join(&pngs[0])).unwrap();
    assert_eq!([pw, ph], crop_px);
    assert!(pw < 197 || ph < 233, "cropped: {pw}×{ph}");
    // "on view" lays the first support's attention over the main view, on its slice.
    h.get_all_by_label("on view").next().unwrap().click();
    h.step();
    h.step();
    assert_eq!(h.state().state.doc.as_ref().unwrap().work_slice(), first);
    assert!(
        h.state()
            .state
            .propagation
            .explanation()
            .unwrap()
            .overlay
            .is_some()
    );
    assert_eq!(
        h.query_all_by_label_contains("Support slice ").count(),
        support_count
    );
    h.get_by_label("side by side").click();
    h.step();
    h.step();
    h.get_by_label("Close").click();
    h.step();
    assert!(h.state().state.propagation.explanation().is_none());

    // Save as NIfTI through the dialog and read the file back.
    press(&mut h, egui::Key::S, Modifiers::COMMAND);
    let out = dir.path().join("brain.labels.nii.gz");
    h.state_mut()
        .state
        .save_dialog
        .as_mut()
        .expect("Ctrl+S asks where")
        .path = out.display().to_string();
    h.step();
    h.get_by_label("Save").click();
    h.step();
    h.step();
    let app = h.state();
    assert!(!app.state.unsaved(), "{:?}", app.state.notices);
    let doc = app.state.doc.as_ref().unwrap();
    let back = icseg::io::read_label_map(&out, doc.volume.geometry()).unwrap();
    assert_eq!(back.labels(), doc.session.labels().labels());
    assert!(out.with_extension("gz.icseg").exists());
}

#[test]
fn a_crashed_run_is_offered_for_recovery_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    // A run that "crashes": its process id is not running, it autosaves at once.
    let painted = {
        let mut cfg = config(dir.path(), DEAD_PID, Duration::ZERO);
        cfg.engine = propagation::EngineSettings { engine: None };
        let mut h = harness(cfg);
        wait_for_sample(&mut h);
        let c = view_rect(&h, "Axial view").center();
        drag(&mut h, &[c, c + egui::vec2(30.0, 0.0)], Modifiers::NONE);
        assert!(h.state().state.unsaved());
        let own = RecoveryStore::with_owner(dir.path().join("recovery"), DEAD_PID).own_path();
        step_until(&mut h, "the autosave", Duration::from_secs(60), |_| {
            own.exists()
        });
        h.state()
            .state
            .doc
            .as_ref()
            .unwrap()
            .session
            .labels()
            .clone()
    };
    let mut cfg = config(dir.path(), std::process::id(), Duration::from_secs(60));
    cfg.engine = propagation::EngineSettings { engine: None };
    cfg.open = None;
    let mut h = harness(cfg);
    h.step();
    let _ = h.get_by_label("Restore unsaved work?");
    h.get_by_label("Restore").click();
    step_until(
        &mut h,
        "the restored volume",
        Duration::from_secs(60),
        |a| a.state.doc.is_some(),
    );
    let doc = h.state().state.doc.as_ref().unwrap();
    assert_eq!(doc.session.labels(), &painted);
    assert!(doc.unsaved());
}

#[test]
fn quitting_with_unsaved_work_asks_and_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), std::process::id(), Duration::from_secs(3600));
    cfg.engine = propagation::EngineSettings { engine: None };
    let mut h = harness(cfg);
    wait_for_sample(&mut h);
    let c = view_rect(&h, "Axial view").center();
    click(&mut h, c, Modifiers::NONE);
    h.get_by_label("File").click();
    h.step();
    h.step();
    h.get_by_label("Quit").click();
    h.step();
    h.step();
    assert_eq!(h.state().state.quit, icseg::ui::state::QuitState::Asking);
    h.step();
    let _ = h.get_by_label("Save changes before quitting?");
    h.get_by_label("Cancel").click();
    h.step();
    assert_eq!(h.state().state.quit, icseg::ui::state::QuitState::Running);
}

#[test]
fn three_views_scroll_with_the_wheel_and_share_the_crosshair() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), std::process::id(), Duration::from_secs(3600));
    cfg.engine = propagation::EngineSettings { engine: None };
    let mut h = harness(cfg);
    wait_for_sample(&mut h);
    press(&mut h, egui::Key::Num4, Modifiers::NONE);
    let coronal = view_rect(&h, "Coronal view");
    let _ = view_rect(&h, "Sagittal view");
    let before = h.state().state.doc.as_ref().unwrap().cursor;
    h.event(egui::Event::PointerMoved(coronal.center()));
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: egui::vec2(0.0, 3.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: Modifiers::NONE,
    });
    h.step();
    h.step();
    let after = h.state().state.doc.as_ref().unwrap().cursor;
    assert_eq!(after[1], before[1] + 3, "three notches on the coronal view");
    // The crosshair tool moves the shared cursor from any view.
    press(&mut h, egui::Key::C, Modifiers::NONE);
    let axial = view_rect(&h, "Axial view");
    click(
        &mut h,
        axial.left_top() + egui::vec2(axial.width() * 0.25, axial.height() * 0.5),
        Modifiers::NONE,
    );
    let moved = h.state().state.doc.as_ref().unwrap().cursor;
    assert_eq!(
        moved[2], after[2],
        "clicking in the axial view keeps its slice"
    );
    assert_ne!([moved[0], moved[1]], [after[0], after[1]]);
}

/// The GPU path (WGSL through egui-wgpu) renders the same picture as the CPU fallback.
#[test]
fn the_gpu_renderer_matches_the_cpu_renderer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), std::process::id(), Duration::from_secs(3600));
    cfg.engine = propagation::EngineSettings { engine: None };
    let mut h = Harness::builder()
        .with_size(SIZE)
        .wgpu()
        .build_eframe(move |cc| IcsegApp::new(cc, cfg));
    wait_for_sample(&mut h);
    // A structure to see: a broad stroke.
    let view = view_rect(&h, "Axial view");
    press(&mut h, egui::Key::CloseBracket, Modifiers::NONE);
    press(&mut h, egui::Key::CloseBracket, Modifiers::NONE);
    let c = view.center();
    let points: Vec<Pos2> = (0..7)
        .map(|n| c + egui::vec2(-60.0 + 20.0 * n as f32, 0.0))
        .collect();
    drag(&mut h, &points, Modifiers::NONE);
    h.event(egui::Event::PointerGone);
    h.step();
    h.step();
    assert_eq!(*h.state().backend(), icseg::ui::painter::Backend::Gpu);
    let image = h.render().expect("wgpu renders");
    if let Ok(dir) = std::env::var("ICSEG_TEST_SHOTS") {
        image.save(Path::new(&dir).join("gpu-render.png")).unwrap();
    }
    let app = h.state();
    let doc = app.state.doc.as_ref().unwrap();
    let slice = doc.cursor[2];
    let mapping = ViewMapping::new(doc.volume.geometry(), Axis::K, slice);
    let look = Look {
        window: doc.window,
        show_labels: true,
    };
    let reference = cpu::render(&doc.volume, &doc.session, &mapping, &look, None);
    // Overlays drawn by egui on top of the image: the crosshair, the title, the letters.
    let cross = icseg::display::view::display_to_screen(
        mapping.display_of(doc.cursor.map(|c| c as f32)),
        Camera::default().image_rect([view.min.x, view.min.y, view.max.x, view.max.y], &mapping),
        &mapping,
    );
    let clear_of_overlays = |x: f32, y: f32| {
        (x - cross[0]).abs() > 3.0
            && (y - cross[1]).abs() > 3.0
            && x > view.min.x + 30.0
            && x < view.max.x - 30.0
            && y > view.min.y + 40.0
            && y < view.max.y - 30.0
    };
    let img =
        Camera::default().image_rect([view.min.x, view.min.y, view.max.x, view.max.y], &mapping);
    // Compare at display-pixel centres whose 3×3 neighbourhood holds one label, so that
    // outlines (drawn per screen pixel on the GPU, per voxel on the CPU) are left out.
    let label_at = |u: usize, v: usize| {
        doc.session
            .labels()
            .get(mapping.voxel_of_pixel(u, v))
            .unwrap()
    };
    let uniform = |u: usize, v: usize| {
        let l = label_at(u, v);
        (u - 1..=u + 1).all(|a| (v - 1..=v + 1).all(|b| label_at(a, b) == l))
    };
    let mut compared = 0;
    let mut labelled = 0;
    let mut worst = 0i32;
    for v in (5..mapping.n_v - 5).step_by(3) {
        for u in (5..mapping.n_u - 5).step_by(3) {
            if !uniform(u, v) {
                continue;
            }
            labelled += usize::from(label_at(u, v) != 0);
            let x = img[0] + (u as f32 + 0.5) / mapping.n_u as f32 * (img[2] - img[0]);
            let y = img[1] + (v as f32 + 0.5) / mapping.n_v as f32 * (img[3] - img[1]);
            if !clear_of_overlays(x, y) {
                continue;
            }
            let gpu = image.get_pixel(x as u32, y as u32).0;
            let cpu = reference[u + mapping.n_u * v];
            let d = (0..3)
                .map(|c| (gpu[c] as i32 - cpu[c] as i32).abs())
                .max()
                .unwrap();
            worst = worst.max(d);
            compared += 1;
        }
    }
    assert!(
        compared > 1000 && labelled > 5,
        "{compared} pixels, {labelled} labelled"
    );
    assert!(worst <= 3, "largest channel difference {worst}");
}

#[test]
fn fill_between_slices_interpolates_without_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness_on_sample(dir.path());
    let view = view_rect(&h, "Axial view");
    let c = view.center();
    let k0 = h.state().state.doc.as_ref().unwrap().work_slice();
    drag(
        &mut h,
        &[c - egui::vec2(30.0, 0.0), c + egui::vec2(30.0, 0.0)],
        Modifiers::NONE,
    );
    for _ in 0..4 {
        press(&mut h, egui::Key::PageUp, Modifiers::NONE);
    }
    let k1 = k0 + 4;
    drag(
        &mut h,
        &[c - egui::vec2(20.0, 10.0), c + egui::vec2(40.0, 10.0)],
        Modifiers::NONE,
    );
    assert!(
        labels_on(h.state(), k0) > 20 && labels_on(h.state(), k1) > 20,
        "painted {} and {}",
        labels_on(h.state(), k0),
        labels_on(h.state(), k1)
    );
    // The I key fills the three slices between, as predictions to review.
    press(&mut h, egui::Key::I, Modifiers::NONE);
    {
        let doc = h.state().state.doc.as_ref().unwrap();
        let st = doc.session.structure(doc.active.unwrap()).unwrap();
        for k in k0 + 1..k1 {
            assert_eq!(st.state(k), SliceState::Predicted, "slice {k}");
        }
        assert_eq!(st.state(k1 + 1), SliceState::Unlabelled);
    }
    for k in k0 + 1..k1 {
        assert!(labels_on(h.state(), k) > 15, "slice {k} is filled");
    }
    // One undo step removes the fill.
    press(&mut h, egui::Key::Z, Modifiers::COMMAND);
    assert_eq!(labels_on(h.state(), k0 + 2), 0);
    assert!(labels_on(h.state(), k1) > 20, "painting stays");
}

/// A harness on the sample without the network, the sample loaded.
fn sample_without_network(dir: &Path, size: [f32; 2]) -> Harness<'static, IcsegApp> {
    let mut cfg = config(dir, std::process::id(), Duration::from_secs(3600));
    cfg.engine = propagation::EngineSettings { engine: None };
    let mut h = Harness::builder()
        .with_size(size)
        .build_eframe(move |cc| IcsegApp::new(cc, cfg));
    wait_for_sample(&mut h);
    h
}

/// Probabilities of a disc of radius `r` pixels about `(cx, cy)` on a `w`×`h` slice,
/// `p_in` inside (0.99: sure; nearer 0.5: unsure).
fn disc(w: usize, h: usize, cx: f32, cy: f32, r: f32, p_in: f32) -> Image2D<f32> {
    let mut img = Image2D::filled(w, h, 0.0f32);
    for y in 0..h {
        for x in 0..w {
            if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r {
                img.set(x, y, p_in);
            }
        }
    }
    img
}

/// The structure overview: its bars are the per-slice areas, a click on the plot goes to
/// that slice, a slice whose area jumps is flagged and comes first in "Next to review",
/// and the side panel shows the statistics.
#[test]
fn the_overview_plot_jumps_to_the_clicked_slice_and_flags_join_the_review_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = sample_without_network(dir.path(), SIZE);
    assert!(
        h.state()
            .state
            .doc
            .as_ref()
            .unwrap()
            .overview()
            .unwrap()
            .stats
            .voxels
            == 0,
        "nothing drawn yet"
    );
    // Predictions on axial slices 80..=100: discs of radius 10 pixels, except a disc of
    // radius 20 on slice 90 (an area jump). Slice 85 is the one the network is least sure
    // about (p = 0.6); slice 90 is nearly sure (p = 0.9).
    {
        let doc = h.state_mut().state.doc.as_mut().unwrap();
        let l = doc.active.unwrap();
        let [nx, ny, _] = doc.volume.dims();
        let (cx, cy) = (nx as f32 / 2.0, ny as f32 / 2.0);
        for k in 80..=100 {
            let (r, p) = match k {
                90 => (20.0, 0.9),
                85 => (10.0, 0.6),
                _ => (10.0, 0.99),
            };
            doc.session
                .apply_prediction(l, k, &disc(nx, ny, cx, cy, r, p), 7)
                .unwrap();
        }
        doc.session.finish_propagation(7);
    }
    h.step();
    h.step();
    let (n, flagged, area_90, stats) = {
        let doc = h.state().state.doc.as_ref().unwrap();
        let o = doc.overview().expect("the overview is built every frame");
        (
            o.area_mm2.len(),
            o.flagged().collect::<Vec<_>>(),
            o.area_mm2[90],
            o.stats,
        )
    };
    assert_eq!(n, 189);
    assert_eq!(flagged, vec![89, 90, 91], "the jump and its two neighbours");
    // The sample has 1 mm voxels: a radius-20 disc covers about π·20² mm².
    assert!(
        (area_90 - std::f64::consts::PI * 400.0).abs() < 40.0,
        "{area_90}"
    );
    assert_eq!(stats.slice_range, Some((80, 100)));

    // The side panel's statistics are the same numbers.
    h.get_by_label(&format!(
        "{:.2} mL ({} voxels)",
        stats.volume_ml, stats.voxels
    ));
    h.get_by_label("81–101 (21 slices)");
    h.get_by_label("90, 91, 92");

    // Clicking the plot at slice 95 goes there.
    let plot = h.get_by_label(overview::OVERVIEW_LABEL).rect();
    let x = plot.min.x + (95.5 / n as f32) * plot.width();
    click(&mut h, egui::pos2(x, plot.center().y), Modifiers::NONE);
    assert_eq!(h.state().state.doc.as_ref().unwrap().work_slice(), 95);

    // Next to review: the flagged slice 90 before the less certain but unflagged 85.
    press(&mut h, egui::Key::N, Modifiers::NONE);
    assert_eq!(h.state().state.doc.as_ref().unwrap().work_slice(), 90);
    // Rejecting it clears it: its neighbours no longer jump, and Next goes on to the
    // least certain slice, 85.
    press(&mut h, egui::Key::Escape, Modifiers::NONE);
    assert_eq!(h.state().state.doc.as_ref().unwrap().work_slice(), 85);
    let doc = h.state().state.doc.as_ref().unwrap();
    assert_eq!(doc.overview().unwrap().flagged().count(), 0);

    // Frame build time with the plot and statistics shown (debug build, CPU renderer).
    for _ in 0..60 {
        h.step();
    }
    let f = h.state().recent_frame_times().unwrap();
    eprintln!(
        "frame build time with the overview plot: median {:.2} ms, p95 {:.2} ms, max {:.2} ms over {} frames",
        f.median_ms, f.p95_ms, f.max_ms, f.frames
    );
}

/// At 1024 points the status bar's message and its right-hand fields do not overlap; a
/// long message is cut, and its full text is shown on hover. Frame times are not in it.
#[test]
fn the_status_bar_lays_out_without_overlap_at_1024_px() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = sample_without_network(dir.path(), [1024.0, 700.0]);
    let long = "Propagated 20 slices in 1.2 s (62 ms per slice). Chained: each slice was segmented with its 2 nearest annotated slices; the network ran on 20 of 20 slices (beyond the annotations the structure ends at the first empty slice). The result is 40 % network and 60 % shape-based interpolation of your slices.";
    h.state_mut().state.notify(Level::Info, long);
    // The pointer over the view: the readout (voxel, position, value) fills in.
    let view = view_rect(&h, "Axial view");
    h.event(egui::Event::PointerMoved(view.center()));
    h.step();
    h.step();
    let message = h.get_by_label_contains("Propagated 20 slices").rect();
    let right: Vec<Rect> = ["render: ", " mm LPS", "network unavailable"]
        .iter()
        .map(|t| h.get_by_label_contains(t).rect())
        .collect();
    for r in &right {
        assert!(
            message.max.x <= r.min.x,
            "the message {message:?} overlaps a field at {r:?}"
        );
        assert!(r.max.x <= 1024.0 && r.min.x >= 0.0, "{r:?} is on screen");
        assert!((r.center().y - message.center().y).abs() < 4.0, "one line");
    }
    assert!(
        message.width() >= icseg::ui::panels::STATUS_MESSAGE_MIN_WIDTH - 20.0,
        "the message keeps room: {message:?}"
    );
    // The right-hand fields do not overlap each other.
    for (a, ra) in right.iter().enumerate() {
        for rb in &right[a + 1..] {
            assert!(!ra.intersects(*rb), "{ra:?} and {rb:?} overlap");
        }
    }
    // Hovering the cut message shows all of it.
    h.event(egui::Event::PointerMoved(message.center()));
    for _ in 0..60 {
        h.step();
    }
    let shown = h
        .query_all_by_label_contains("Propagated 20 slices")
        .count();
    assert!(
        shown >= 2,
        "the tooltip repeats the message ({shown} found)"
    );
}

/// Shortcuts work on start without a first click: the window asks for keyboard focus
/// when it opens and when the volume is shown, and no widget holds the keyboard.
#[test]
fn shortcuts_work_without_a_first_click() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), std::process::id(), Duration::from_secs(3600));
    cfg.engine = propagation::EngineSettings { engine: None };
    let mut h = harness(cfg);
    let start = Instant::now();
    while h.state().state.doc.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the sample loads"
        );
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    let asked = h.output().viewport_output[&egui::ViewportId::ROOT]
        .commands
        .contains(&egui::ViewportCommand::Focus);
    assert!(asked, "the frame that shows the volume asks for focus");
    h.step();
    press(&mut h, egui::Key::L, Modifiers::NONE);
    assert_eq!(h.state().state.tool, icseg::ui::actions::Tool::Lasso);
    press(&mut h, egui::Key::Num4, Modifiers::NONE);
    assert_eq!(h.state().state.layout, icseg::ui::actions::Layout::ThreeUp);
    let k = h.state().state.doc.as_ref().unwrap().work_slice();
    press(&mut h, egui::Key::PageUp, Modifiers::NONE);
    assert_eq!(h.state().state.doc.as_ref().unwrap().work_slice(), k + 1);
}

/// Any view: on a fresh session, painting in the coronal view makes its axis the working
/// axis; "Fill between slices" then fills coronal slices, the overview and review follow
/// that axis, undo works, and the session file keeps the axis.
#[test]
fn painting_in_the_coronal_view_then_propagating_fills_coronal_slices() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness_on_sample(dir.path());
    let coronal_axis = {
        let doc = h.state().state.doc.as_ref().unwrap();
        icseg::display::view::axes_in_display_order(doc.volume.geometry())[1]
    };
    assert_ne!(coronal_axis, Axis::K);
    press(&mut h, egui::Key::Num2, Modifiers::NONE);
    let view = view_rect(&h, "Coronal view");
    let c = view.center();
    let j0 = h.state().state.doc.as_ref().unwrap().cursor[coronal_axis.index()];
    drag(
        &mut h,
        &[c - egui::vec2(30.0, 0.0), c, c + egui::vec2(30.0, 0.0)],
        Modifiers::NONE,
    );
    {
        let doc = h.state().state.doc.as_ref().unwrap();
        assert_eq!(
            doc.session.axis(),
            coronal_axis,
            "the coronal axis is the working axis"
        );
        let st = doc.session.structure(doc.active.unwrap()).unwrap();
        assert_eq!(st.state(j0), SliceState::Manual);
    }
    assert!(
        labels_on(h.state(), j0) > 50,
        "painted {}",
        labels_on(h.state(), j0)
    );
    // Four coronal slices on (the keys scroll the view under the pointer), a second stroke.
    for _ in 0..4 {
        press(&mut h, egui::Key::PageUp, Modifiers::NONE);
    }
    let j1 = h.state().state.doc.as_ref().unwrap().cursor[coronal_axis.index()];
    assert_eq!(j1, j0 + 4);
    drag(
        &mut h,
        &[c - egui::vec2(20.0, 5.0), c, c + egui::vec2(20.0, 5.0)],
        Modifiers::NONE,
    );
    // Propagate along the coronal axis with the classical fill (no network here).
    press(&mut h, egui::Key::I, Modifiers::NONE);
    {
        let doc = h.state().state.doc.as_ref().unwrap();
        let st = doc.session.structure(doc.active.unwrap()).unwrap();
        assert_eq!(st.states().len(), doc.volume.dims()[coronal_axis.index()]);
        for j in j0 + 1..j1 {
            assert_eq!(st.state(j), SliceState::Predicted, "coronal slice {j}");
            assert!(labels_on(h.state(), j) > 20, "coronal slice {j} is filled");
        }
        // The overview measures coronal slices.
        let o = doc.overview().unwrap();
        assert_eq!(o.axis, coronal_axis);
        assert_eq!(o.stats.slice_range, Some((j0, j1)));
        // The session file keeps the axis.
        let restored = icseg::session::Session::from_file(doc.session_file(), &doc.volume).unwrap();
        assert_eq!(restored.axis(), coronal_axis);
        assert_eq!(
            restored
                .structure(doc.active.unwrap())
                .unwrap()
                .state(j0 + 1),
            SliceState::Predicted
        );
    }
    // Next to review goes to a coronal slice; undo removes the fill.
    press(&mut h, egui::Key::N, Modifiers::NONE);
    let j = h.state().state.doc.as_ref().unwrap().cursor[coronal_axis.index()];
    assert!((j0 + 1..j1).contains(&j), "reviewing coronal slice {j}");
    press(&mut h, egui::Key::Z, Modifiers::COMMAND);
    assert_eq!(labels_on(h.state(), j0 + 2), 0);
    // The network propagates along the coronal axis too (random weights: where it
    // writes is not checked, only that it predicts coronal slices around the support).
    step_until(
        &mut h,
        "the network to start",
        Duration::from_secs(120),
        |a| a.state.propagation.info().is_some(),
    );
    press(&mut h, egui::Key::P, Modifiers::NONE);
    assert!(h.state().state.propagation.run().is_some(), "a run started");
    step_until(&mut h, "propagation", Duration::from_secs(600), |a| {
        a.state.propagation.run().is_none()
    });
    {
        let doc = h.state().state.doc.as_ref().unwrap();
        let st = doc.session.structure(doc.active.unwrap()).unwrap();
        let last = h.state().state.propagation.last().unwrap();
        assert!(last.slices > 0);
        assert!(
            (0..st.states().len())
                .filter(|&j| st.state(j) == SliceState::Predicted)
                .all(|j| j + 10 >= j0 && j <= j1 + 10),
            "predictions stay within 10 coronal slices of the support"
        );
        assert_eq!(st.state(j0), SliceState::Manual);
        assert_eq!(st.state(j1), SliceState::Manual);
    }
    // Once annotated, the axial view no longer takes strokes (states are per axis).
    press(&mut h, egui::Key::Num1, Modifiers::NONE);
    let axial = view_rect(&h, "Axial view");
    let before = h.state().state.doc.as_ref().unwrap().session.revision();
    drag(
        &mut h,
        &[
            axial.center(),
            axial.center() + egui::vec2(20.0, 0.0),
            axial.center() + egui::vec2(40.0, 0.0),
        ],
        Modifiers::NONE,
    );
    let doc = h.state().state.doc.as_ref().unwrap();
    assert_eq!(doc.session.axis(), coronal_axis);
    assert_eq!(doc.session.revision(), before);
}

/// The chained options on the sample volume before, after one click on the checkbox
/// `label`, and after a second click.
fn chain_options_over_two_clicks(label: &str) -> [icseg::engine::ChainOptions; 3] {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness_on_sample(dir.path());
    let before = chain_options(&h);
    let mut click = || {
        h.get_by_label(label).click();
        h.step();
        chain_options(&h)
    };
    let once = click();
    [before, once, click()]
}

#[test]
fn the_shape_prior_can_follow_the_image() {
    let [before, once, twice] = chain_options_over_two_clicks("your shapes follow the image");
    assert_eq!(
        once.guided, !before.guided,
        "the checkbox switches the guided prior"
    );
    assert_eq!(twice.guided, before.guided);
}

#[test]
fn between_two_slices_the_prior_can_take_the_shape_that_fits_the_image() {
    use icseg::volume::interpolate::Between;
    let [before, once, twice] =
        chain_options_over_two_clicks("between your slices, the one that fits");
    let (before, after) = (before.between, once.between);
    assert_ne!(after, before, "the checkbox switches what lies between");
    assert!(
        [before, after].contains(&Between::Matched) && [before, after].contains(&Between::Nearest)
    );
    assert_eq!(twice.between, before);
}

#[test]
fn edges_can_follow_the_intensities() {
    let [before, once, twice] = chain_options_over_two_clicks("edges follow the intensities");
    assert_eq!(
        before.intensity,
        icseg::engine::INTENSITY_WEIGHT,
        "on by default"
    );
    assert_eq!(once.intensity, 0.0, "the checkbox turns the evidence off");
    assert_eq!(twice.intensity, icseg::engine::INTENSITY_WEIGHT);
}
