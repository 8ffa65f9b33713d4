//! The explanation panel: for a clicked pixel, every support slice with the attention
//! heatmap of that pixel at the 1/32, 1/16 and 1/8 stages, and the attention mass each
//! support slice receives.

use eframe::egui::{self, Color32, Rect, Stroke, pos2, vec2};

use crate::display::view::{
    ViewMapping, box_aspect, display_box, display_to_screen, image_rect_showing,
};

use super::actions::Action;
use super::document::Document;
use super::painter::{HeatInput, ViewPainter};
use super::propagation::{ExplainView, StageChoice};
use super::render::Look;

const STAGE_NAMES: [&str; 3] = ["1/32", "1/16", "1/8"];
/// Thumbnail width limits (points): the panel's width shared by the stages shown.
const MIN_THUMB_WIDTH: f32 = 120.0;
const MAX_THUMB_WIDTH: f32 = 420.0;
/// Width of a thumbnail enlarged on hover.
const ENLARGED_WIDTH: f32 = 520.0;

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
    ui.horizontal(|ui| {
        ui.checkbox(&mut view.whole_slices, "whole slices")
            .on_hover_text(
                "Show the whole support slices instead of the region the network looked at",
            );
        let dir = export_folder(doc, view.query);
        if ui
            .button("Save PNGs")
            .on_hover_text(format!(
                "Save these pictures, as drawn here, to {}",
                dir.display()
            ))
            .clicked()
        {
            actions.push(Action::ExportExplanation(dir));
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

    let order = view.order_by_mass();
    let crop = view.crop_box(w, h);
    let shown: Vec<usize> = stages.iter().copied().filter(|&st| st < n_stages).collect();
    let gap = ui.spacing().item_spacing.x;
    let thumb_width = ((ui.available_width() - 16.0 - gap * (shown.len() as f32 - 1.0))
        / shown.len().max(1) as f32)
        .clamp(MIN_THUMB_WIDTH, MAX_THUMB_WIDTH);
    let click = (axis, px);

    egui::ScrollArea::vertical().show(ui, |ui| {
        for (rank, &n) in order.iter().enumerate() {
            let s = supports[n];
            ui.separator();
            let mass_line: Vec<String> = shown
                .iter()
                .map(|&st| {
                    format!(
                        "{} {:.1} %",
                        STAGE_NAMES[st],
                        100.0 * support_mass[st].get(n).copied().unwrap_or(0.0)
                    )
                })
                .collect();
            ui.horizontal(|ui| {
                ui.label(format!(
                    "#{} Support slice {} · mass {}",
                    rank + 1,
                    s + 1,
                    mass_line.join(" · ")
                ));
                // The stage shown (the finest when all are): lay it over the main view.
                let stage = *shown.last().unwrap_or(&2);
                let on = view.overlay.is_some_and(|(_, m)| m == n);
                if ui
                    .selectable_label(on, "on view")
                    .on_hover_text(
                        "Show this support slice in the main view with the attention map laid over it",
                    )
                    .clicked()
                {
                    if on {
                        view.overlay = None;
                    } else {
                        view.overlay = Some((stage, n));
                        actions.push(Action::SetSlice { axis, index: s });
                    }
                }
            });
            ui.horizontal(|ui| {
                for &st in &shown {
                    let Some(heat) = view.heatmap(st, n, w, h) else {
                        continue;
                    };
                    let thumb = Thumb {
                        geometry: &geometry,
                        slice: s,
                        crop,
                        look: &look,
                        heat,
                        heat_key: egui::Id::unique(("explain-heat", explained_id, st, n)).value(),
                        click,
                        stage: st,
                    };
                    let key = egui::Id::unique(("explain-thumb", st, n)).value();
                    let response = thumb.paint(ui, doc, painter, thumb_width, key);
                    response.on_hover_ui(|ui| {
                        let key = egui::Id::unique(("explain-zoom", st, n)).value();
                        thumb.paint(ui, doc, painter, ENLARGED_WIDTH, key);
                    });
                }
            });
        }
    });
    actions
}

/// One support slice's picture at one stage: cropped to the region the network looked
/// at (or the whole slice), with the heatmap, the structures and the clicked location.
struct Thumb<'a> {
    geometry: &'a crate::volume::Geometry,
    slice: usize,
    /// Slice pixel box shown (edges).
    crop: [f32; 4],
    look: &'a Look,
    heat: &'a crate::ui::render::Heatmap,
    heat_key: u64,
    /// The working axis and the clicked pixel.
    click: (crate::volume::Axis, [f32; 2]),
    stage: usize,
}

impl Thumb<'_> {
    /// Draws the picture `width` points wide; returns its response (for the hover).
    fn paint(
        &self,
        ui: &mut egui::Ui,
        doc: &Document,
        painter: &mut ViewPainter,
        width: f32,
        key: u64,
    ) -> egui::Response {
        let (axis, px) = self.click;
        let mapping = ViewMapping::new(self.geometry, axis, self.slice);
        let d = display_box(&mapping, self.crop);
        let size = vec2(
            width,
            (width * box_aspect(d, &mapping)).clamp(40.0, 2.0 * width),
        );
        let (rect, response) = ui.allocate_exact_size(size, egui::Sense::hover());
        let img = image_rect_showing(
            d,
            [rect.min.x, rect.min.y, rect.max.x, rect.max.y],
            &mapping,
        );
        let image_rect = Rect::from_min_max(pos2(img[0], img[1]), pos2(img[2], img[3]));
        painter.paint(
            ui,
            key,
            rect,
            image_rect,
            &mapping,
            self.look,
            doc,
            Some(HeatInput {
                heat: self.heat,
                key: self.heat_key,
            }),
        );
        // The clicked location, at the same pixel of the support slice.
        let (a, b) = axis.in_plane();
        let mut v = [0.0f32; 3];
        v[a] = px[0];
        v[b] = px[1];
        let c = display_to_screen(mapping.display_of(v), img, &mapping);
        ui.painter().with_clip_rect(rect).circle_stroke(
            pos2(c[0], c[1]),
            4.0,
            Stroke::new(1.5, Color32::from_rgb(0, 255, 160)),
        );
        ui.painter().text(
            rect.min + vec2(3.0, 2.0),
            egui::Align2::LEFT_TOP,
            STAGE_NAMES[self.stage],
            egui::FontId::proportional(11.0),
            Color32::WHITE,
        );
        response
    }
}

/// Where "Save PNGs" writes: beside the saved labels (or the volume), a folder named
/// after the clicked slice and pixel.
fn export_folder(doc: &Document, (slice, px): (usize, [f32; 2])) -> std::path::PathBuf {
    let base = doc
        .save_target
        .as_ref()
        .map(|t| t.path.as_path())
        .unwrap_or(doc.path())
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    base.join(format!(
        "icseg-explain-slice{:04}-x{:.0}-y{:.0}",
        slice + 1,
        px[0],
        px[1]
    ))
}
