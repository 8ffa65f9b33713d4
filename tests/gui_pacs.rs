//! File → Open from PACS and Send SEG to PACS in the app, driven headless with
//! egui_kittest against the test Orthanc of `scripts/orthanc.sh` (skipped without it,
//! except under `CI=true`). With `ICSEG_SCREENSHOTS=<folder>` it also saves pictures
//! of the search table and of the server's answer (for `docs/screenshots/`).
#![cfg(feature = "gui")]

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use icseg::session::{PaintMode, PaintOp, RecoveryStore, Shape};
use icseg::ui::IcsegApp;
use icseg::ui::actions::Action;
use icseg::ui::pacs::AuthKind;
use icseg::ui::propagation::EngineSettings;
use icseg::ui::state::AppConfig;

fn step_until(h: &mut Harness<'_, IcsegApp>, what: &str, done: impl Fn(&IcsegApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.step();
}

fn screenshot(h: &mut Harness<'_, IcsegApp>, name: &str) {
    let Some(dir) = std::env::var_os("ICSEG_SCREENSHOTS") else {
        return;
    };
    match h.render() {
        Ok(image) => image
            .save(std::path::Path::new(&dir).join(name))
            .expect("the screenshot is written"),
        Err(e) => eprintln!("no screenshot ({e})"),
    }
}

#[test]
fn open_a_series_from_the_pacs_and_send_the_seg_back() {
    let Some((url, user, password)) = icseg::testing::test_pacs() else {
        return;
    };
    let server = icseg::pacs::ServerConfig {
        base_url: url.clone(),
        auth: icseg::pacs::Auth::Basic {
            user: user.clone(),
            password: password.clone(),
        },
        ca_file: None,
    };
    let probe = icseg::pacs::Client::new(&server).and_then(|c| {
        c.search_studies(&icseg::pacs::StudyQuery {
            limit: 1,
            ..Default::default()
        })
    });
    if let Err(e) = probe {
        eprintln!("the test PACS does not answer: {e}");
        icseg::testing::missing_pacs();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = AppConfig {
        open: None,
        recovery: RecoveryStore::with_owner(dir.path().join("recovery"), std::process::id()),
        autosave_interval: Duration::from_secs(3600),
        engine: EngineSettings { engine: None },
    };
    let mut h = Harness::builder()
        .with_size([1280.0, 860.0])
        .build_eframe(move |cc| IcsegApp::new(cc, config));
    h.step();
    h.get_by_label("File").click();
    h.step();
    h.step();
    h.get_by_label("Open from PACS…").click();
    h.step();
    h.step();
    assert!(h.state().state.pacs.open, "the PACS window opens");
    {
        let pacs = &mut h.state_mut().state.pacs;
        pacs.url = url;
        pacs.auth_kind = AuthKind::Basic;
        pacs.user = user;
        pacs.password = password;
        pacs.cache = dir.path().join("cache");
    }
    h.step();
    h.get_by_label("Search").click();
    step_until(&mut h, "the study search", |a| {
        a.state.pacs.busy.is_none() && a.state.pacs.studies.is_some()
    });
    let studies = h.state().state.pacs.studies.clone().unwrap().studies;
    if let Some((_, text)) = &h.state().state.pacs.message
        && studies.is_empty()
    {
        panic!("no studies: {text}");
    }
    // The study with the most images, then its largest image series.
    let best = (0..studies.len())
        .max_by_key(|&n| studies[n].instance_count.unwrap_or(0))
        .unwrap();
    h.state_mut().state.pacs.select_study(best);
    step_until(&mut h, "the series list", |a| {
        a.state.pacs.busy.is_none() && !a.state.pacs.series.is_empty()
    });
    let series = h.state().state.pacs.series.clone();
    let pick = (0..series.len())
        .filter(|&n| series[n].modality != "SEG")
        .max_by_key(|&n| series[n].instances.unwrap_or(0))
        .unwrap();
    h.state_mut().state.pacs.selected_series = Some(pick);
    h.step();
    screenshot(&mut h, "pacs-search.png");
    let clicked = Instant::now();
    h.get_by_label("Open series").click();
    step_until(&mut h, "the pulled series to open", |a| {
        a.state.doc.is_some()
    });
    eprintln!(
        "Open series → volume on screen: {:.2} s",
        clicked.elapsed().as_secs_f64()
    );
    assert!(
        !h.state().state.pacs.open,
        "the window closes once the series opens"
    );
    let slices = h.state().state.doc.as_ref().unwrap().session.slice_count();
    assert_eq!(Some(slices as u32), series[pick].instances);

    // A structure on one slice, then File → Send SEG to PACS.
    {
        let doc = h.state_mut().state.doc.as_mut().unwrap();
        let label = doc.session.structures()[0].value;
        let op = PaintOp {
            shape: Shape::Polygon {
                points: vec![
                    [100.0, 100.0],
                    [200.0, 100.0],
                    [200.0, 200.0],
                    [100.0, 200.0],
                ],
            },
            mode: PaintMode::Paint {
                overwrite_others: false,
            },
            range: None,
        };
        doc.session.paint(label, slices / 2, &op, None).unwrap();
    }
    h.state_mut().state.apply(Action::SendSegToPacs);
    step_until(&mut h, "the SEG to be sent", |a| {
        a.state.pacs.busy.is_none() && a.state.pacs.message.is_some()
    });
    let (error, text) = h.state().state.pacs.message.clone().unwrap();
    assert!(
        !error && text.starts_with("Sent to the PACS: stored 1 instance"),
        "{text}"
    );
    assert!(
        h.state().state.pacs.open,
        "the answer is shown in the PACS window"
    );
    h.step();
    screenshot(&mut h, "pacs-sent.png");
}
