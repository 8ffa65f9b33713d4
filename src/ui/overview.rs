//! The structure overview above the working-axis scrubber: the active structure's area
//! on every slice as a bar in its slice state's colour, the flagged jumps (see
//! [`crate::session::overview`]), its volume, and the current slice. A click or drag
//! jumps to the slice under the pointer. The numbers come from
//! [`Document::overview`]; this only draws them.

use eframe::egui::{self, Color32, Rect, Sense, Stroke, pos2};

use crate::session::{Overview, SliceState};
use crate::volume::Axis;

use super::actions::Action;
use super::document::Document;
use super::slice_states::{state_colour, state_name};

/// Height of the plot in points.
pub const OVERVIEW_HEIGHT: f32 = 54.0;
/// The accessibility label of the plot (tests find it by this).
pub const OVERVIEW_LABEL: &str = "Structure overview";
/// The colour of a flag.
pub const FLAG_COLOUR: Color32 = Color32::from_rgb(255, 215, 0);

/// The slice under screen x-coordinate `x` of a bar `[min_x, max_x]` showing `n`
/// slices (the scrubber's mapping: slice `s` is centred at `(s + 0.5) / n`).
pub fn slice_at(x: f32, min_x: f32, max_x: f32, n: usize) -> usize {
    let n = n.max(1);
    ((x - min_x) / (max_x - min_x).max(1e-6) * n as f32)
        .floor()
        .clamp(0.0, (n - 1) as f32) as usize
}

/// Whether there is anything to plot for the active structure.
pub fn has_overview(doc: &Document) -> bool {
    doc.overview().is_some_and(|o| {
        o.stats.voxels > 0 || o.states.iter().any(|&s| s != SliceState::Unlabelled)
    })
}

/// Draws the overview in `rect` and returns a jump to the slice clicked.
pub fn overview_plot_ui(
    ui: &mut egui::Ui,
    rect: Rect,
    doc: &Document,
    axis: Axis,
    id: egui::Id,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let response = ui.interact(rect, id, Sense::click_and_drag());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, OVERVIEW_LABEL));
    let p = ui.painter().with_clip_rect(rect);
    p.rect_filled(rect, 0.0, Color32::from_gray(18));
    let Some(o) = doc.overview().filter(|_| has_overview(doc)) else {
        p.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "the active structure's area per slice shows here",
            egui::FontId::proportional(11.0),
            Color32::from_gray(110),
        );
        return actions;
    };
    let n = o.area_mm2.len().max(1);
    let max_area = o.area_mm2.iter().copied().fold(0.0f64, f64::max);
    let slice_w = rect.width() / n as f32;
    let x_of = |s: usize| rect.min.x + (s as f32 + 0.5) * slice_w;
    let plot_top = rect.min.y + 8.0;
    let plot_h = rect.max.y - plot_top - 1.0;
    let w = slice_w.max(1.0);
    for (s, &area) in o.area_mm2.iter().enumerate() {
        let state = o.states.get(s).copied().unwrap_or_default();
        let x = x_of(s);
        if area > 0.0 && max_area > 0.0 {
            let h = (area / max_area) as f32 * plot_h;
            let colour = if state == SliceState::Unlabelled {
                Color32::from_gray(150)
            } else {
                state_colour(state)
            };
            p.rect_filled(
                Rect::from_min_max(
                    pos2(x - w / 2.0, rect.max.y - 1.0 - h),
                    pos2(x + w / 2.0, rect.max.y - 1.0),
                ),
                0.0,
                colour,
            );
        } else if state == SliceState::Rejected {
            // A rejected slice has no area left; mark it on the baseline.
            p.rect_filled(
                Rect::from_min_max(
                    pos2(x - w / 2.0, rect.max.y - 4.0),
                    pos2(x + w / 2.0, rect.max.y - 1.0),
                ),
                0.0,
                state_colour(state),
            );
        }
        if o.jumps.get(s).copied().flatten().is_some() {
            let top = pos2(x, rect.min.y + 7.0);
            p.add(egui::Shape::convex_polygon(
                vec![
                    pos2(x - 4.0, rect.min.y + 1.0),
                    pos2(x + 4.0, rect.min.y + 1.0),
                    top,
                ],
                FLAG_COLOUR,
                Stroke::NONE,
            ));
        }
    }
    let cur = x_of(doc.cursor[axis.index()]);
    p.line_segment(
        [pos2(cur, rect.min.y), pos2(cur, rect.max.y)],
        Stroke::new(1.0, Color32::WHITE),
    );
    p.text(
        rect.right_top() + egui::vec2(-4.0, 2.0),
        egui::Align2::RIGHT_TOP,
        volume_text(o),
        egui::FontId::proportional(11.0),
        Color32::from_gray(220),
    );
    if let Some(pos) = response.hover_pos() {
        let s = slice_at(pos.x, rect.min.x, rect.max.x, n);
        response.clone().on_hover_text(hover_text(o, s));
    }
    if (response.clicked() || response.dragged())
        && let Some(pos) = response.interact_pointer_pos()
    {
        let s = slice_at(pos.x, rect.min.x, rect.max.x, n);
        if s != doc.cursor[axis.index()] {
            actions.push(Action::SetSlice { axis, index: s });
        }
    }
    actions
}

/// "12.3 mL", with the number of flagged slices when there are any.
pub fn volume_text(o: &Overview) -> String {
    let flagged = o.flagged().count();
    let mut text = format!("{:.2} mL", o.stats.volume_ml);
    if flagged > 0 {
        text.push_str(&format!(" · {flagged} flagged"));
    }
    text
}

/// What the plot says about slice `s`.
pub fn hover_text(o: &Overview, s: usize) -> String {
    let state = o.states.get(s).copied().unwrap_or_default();
    let mut text = format!(
        "Slice {}: {:.0} mm², {}",
        s + 1,
        o.area_mm2.get(s).copied().unwrap_or(0.0),
        state_name(state).to_lowercase()
    );
    if let Some(j) = o.jumps.get(s).copied().flatten() {
        text.push_str(&format!(
            "\nFlagged: {} (reviewed first by Next)",
            j.describe()
        ));
    }
    text.push_str("\nClick to go to a slice.");
    text
}

/// The active structure's statistics, for the side panel (3D Slicer's Segment
/// Statistics: volume, slice range, mean and SD of the image inside).
pub fn statistics_ui(ui: &mut egui::Ui, doc: &Document) {
    let Some(o) = doc.overview() else {
        return;
    };
    let s = &o.stats;
    egui::Grid::new("structure-stats")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Volume");
            ui.label(format!("{:.2} mL ({} voxels)", s.volume_ml, s.voxels));
            ui.end_row();
            ui.label("Slices");
            ui.label(match s.slice_range {
                Some((a, b)) => format!("{}–{} ({} slices)", a + 1, b + 1, b - a + 1),
                None => "none".to_owned(),
            });
            ui.end_row();
            let unit = if s.hounsfield { " HU" } else { "" };
            ui.label("Mean ± SD");
            ui.label(match (s.mean, s.std) {
                (Some(m), Some(sd)) => format!("{m:.1} ± {sd:.1}{unit}"),
                _ => "—".to_owned(),
            });
            ui.end_row();
            let flagged: Vec<String> = o.flagged().map(|s| (s + 1).to_string()).collect();
            if !flagged.is_empty() {
                ui.label("Flagged");
                ui.label(flagged.join(", ")).on_hover_text(
                    "Slices whose area or outline jumps from a neighbouring slice; Next (N) shows the predicted ones first",
                );
                ui.end_row();
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_at_inverts_the_scrubber_mapping() {
        let (min, max, n) = (100.0, 300.0, 50);
        for s in [0, 1, 24, 49] {
            let x = min + (s as f32 + 0.5) / n as f32 * (max - min);
            assert_eq!(slice_at(x, min, max, n), s);
        }
        assert_eq!(slice_at(50.0, min, max, n), 0);
        assert_eq!(slice_at(900.0, min, max, n), 49);
    }
}
