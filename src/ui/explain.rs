//! The explanation panel: for a clicked pixel, every support slice with the attention
//! heatmap of that pixel at the 1/32, 1/16 and 1/8 stages, and the attention mass each
//! support slice receives.

use eframe::egui::{self, Color32, Rect, Stroke, pos2, vec2};

use crate::display::view::{Camera, ViewMapping, display_to_screen};

use super::actions::Action;
use super::document::Document;
use super::painter::{HeatInput, ViewPainter};
use super::propagation::{ExplainView, StageChoice};
use super::render::Look;

const STAGE_NAMES: [&str; 3] = ["1/32", "1/16", "1/8"];
const THUMB_WIDTH: f32 = 150.0;

/// Draws the panel; returns actions (close) and whether the stage choice changed.
pub fn explain_panel_ui(
    ui: &mut egui::Ui,
    doc: &Document,
    view: &mut ExplainView,
    painter: &mut ViewPainter,
) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.horizontal(|ui| {
        ui.heading("Explanation");
        if ui.button("Close").clicked() {
            actions.push(Action::CloseExplain);
        }
    });
    let (slice, px) = view.query;
    ui.label(format!(
        "Slice {}, pixel ({:.0}, {:.0})",
        slice + 1,
        px[0],
        px[1]
    ));
    let Some(latency) = view.latency else {
        ui.horizontal(|ui| {
            ui.add(egui::Spinner::new());
            ui.label(format!(
                "asking the network… {:.0} ms",
                view.requested.elapsed().as_secs_f64() * 1000.0
            ));
        });
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(50));
        return actions;
    };
    let (engine_latency, cache) = view
        .result
        .as_ref()
        .map(|r| (r.latency, r.cache))
        .expect("latency is set with the result");
    ui.label(format!(
        "{:.0} ms from click to panel (network {:.0} ms, support features {})",
        latency.as_secs_f64() * 1000.0,
        engine_latency.as_secs_f64() * 1000.0,
        match cache {
            crate::engine::CacheUse::Hit => "cached",
            crate::engine::CacheUse::ImagesCached => "image features cached",
            crate::engine::CacheUse::Miss => "computed",
        }
    ));
    ui.horizontal(|ui| {
        for (s, name) in STAGE_NAMES.iter().enumerate() {
            if ui
                .selectable_label(view.stages == StageChoice::One(s), *name)
                .clicked()
            {
                view.stages = StageChoice::One(s);
            }
        }
        if ui
            .selectable_label(view.stages == StageChoice::All, "side by side")
            .clicked()
        {
            view.stages = StageChoice::All;
        }
    });
    let stages: Vec<usize> = match view.stages {
        StageChoice::One(s) => vec![s],
        StageChoice::All => vec![0, 1, 2],
    };
    let result = view.result.as_ref().expect("checked above");
    let masses: Vec<String> = result
        .stages
        .iter()
        .zip(STAGE_NAMES)
        .map(|(st, n)| format!("{n}: {:.2}", st.query_mass))
        .collect();
    ui.label(format!("Attention on the support set (rest on register tokens) — {}", masses.join(", ")))
        .on_hover_text("The share of the clicked location's attention that goes to support slices rather than to the learned register tokens.");
    if result.candidates != result.support_slices.len() {
        ui.label(format!(
            "The {} slices this slice's prediction used (of {} annotated or accepted slices: the nearest in a chained propagation, the most similar in a one-shot one with a support size).",
            result.support_slices.len(),
            result.candidates
        ));
    }
    let supports = result.support_slices.clone();
    let n_stages = result.stages.len();
    let support_mass: Vec<Vec<f32>> = result
        .stages
        .iter()
        .map(|s| s.support_mass.clone())
        .collect();
    let explained_id = view.id.0;
    let geometry = doc.volume.geometry().clone();
    let axis = doc.session.axis();
    let (w, h) = geometry.slice_dims(axis);
    let look = Look {
        window: doc.window,
        show_labels: true,
    };

    egui::ScrollArea::vertical().show(ui, |ui| {
        for (n, &s) in supports.iter().enumerate() {
            ui.separator();
            let mass_line: Vec<String> = stages
                .iter()
                .filter(|&&st| st < n_stages)
                .map(|&st| {
                    format!(
                        "{} {:.1} %",
                        STAGE_NAMES[st],
                        100.0 * support_mass[st].get(n).copied().unwrap_or(0.0)
                    )
                })
                .collect();
            ui.label(format!(
                "Support slice {} · mass {}",
                s + 1,
                mass_line.join(" · ")
            ));
            ui.horizontal(|ui| {
                for &st in &stages {
                    if st >= n_stages {
                        continue;
                    }
                    let Some(heat) = view.heatmap(st, n, w, h) else {
                        continue;
                    };
                    let mapping = ViewMapping::new(&geometry, axis, s);
                    let [wm, hm] = mapping.size_mm();
                    let size = vec2(THUMB_WIDTH, THUMB_WIDTH * hm / wm.max(1e-6));
                    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                    let key = egui::Id::unique(("explain-thumb", st, n)).value();
                    let heat_key = egui::Id::unique(("explain-heat", explained_id, st, n)).value();
                    let img = Camera::default()
                        .image_rect([rect.min.x, rect.min.y, rect.max.x, rect.max.y], &mapping);
                    let image_rect = Rect::from_min_max(pos2(img[0], img[1]), pos2(img[2], img[3]));
                    painter.paint(
                        ui,
                        key,
                        rect,
                        image_rect,
                        &mapping,
                        &look,
                        doc,
                        Some(HeatInput {
                            heat,
                            key: heat_key,
                        }),
                    );
                    // The clicked location, at the same pixel of the support slice.
                    let (a, b) = axis.in_plane();
                    let mut v = [0.0f32; 3];
                    v[a] = px[0];
                    v[b] = px[1];
                    let d = mapping.display_of(v);
                    let c = display_to_screen(d, img, &mapping);
                    ui.painter().circle_stroke(
                        pos2(c[0], c[1]),
                        4.0,
                        Stroke::new(1.5, Color32::from_rgb(0, 255, 160)),
                    );
                    ui.painter().text(
                        rect.min + vec2(3.0, 2.0),
                        egui::Align2::LEFT_TOP,
                        STAGE_NAMES[st],
                        egui::FontId::proportional(11.0),
                        Color32::WHITE,
                    );
                }
            });
        }
    });
    actions
}
