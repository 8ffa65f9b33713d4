//! One slice view: image, overlays, crosshair, and the mouse interactions on it.

use eframe::egui::{self, Color32, Pos2, Rect, Sense, Stroke, Vec2, pos2, vec2};

use crate::session::SliceState;
use crate::volume::{Axis, Geometry};

use super::actions::{Action, BrushSettings, Tool};
use super::document::Document;
use super::painter::{HeatInput, ViewPainter};
use super::render::Look;
use super::slice_states::{state_colour, state_name};
use super::state::{Lasso, brush_radius_px};
use crate::display::view::{Camera, ViewMapping, display_to_screen, plane_of, screen_to_display};

/// What a view needs to know besides the document.
pub struct ViewContext<'a> {
    /// The axis the view is perpendicular to.
    pub axis: Axis,
    /// Its zoom and pan.
    pub camera: Camera,
    /// Current tool.
    pub tool: Tool,
    /// Brush settings (for the brush outline).
    pub brush: BrushSettings,
    /// A lasso in progress.
    pub lasso: Option<&'a Lasso>,
    /// The explained pixel `(working slice, [x, y])`, marked on the view.
    pub explain_marker: Option<(usize, [f32; 2])>,
    /// Draw overlays.
    pub show_labels: bool,
    /// Whether a stroke is in progress (keep sending stroke actions).
    pub stroking: bool,
    /// Show the slice-state scrubber.
    pub scrubber: bool,
    /// An explanation's attention map laid over the working view while it shows the
    /// map's support slice.
    pub heat: Option<HeatInput<'a>>,
}

/// What the pointer is over, for the status bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Readout {
    /// Voxel index.
    pub voxel: [usize; 3],
    /// Patient position (LPS, mm).
    pub patient_mm: [f64; 3],
    /// Voxel value.
    pub value: f32,
    /// Structure name at the voxel, if any.
    pub structure: Option<String>,
}

/// Per-view memory kept between frames (egui temp data).
#[derive(Clone, Copy, Default)]
struct ViewMemory {
    scroll_accum: f32,
    last_lasso: Option<[f32; 2]>,
}

/// Draws the view perpendicular to `ctx.axis` into the available space and returns the
/// actions its interactions ask for, and the readout under the pointer.
pub fn slice_view_ui(
    ui: &mut egui::Ui,
    doc: &Document,
    ctx: &ViewContext<'_>,
    painter: &mut ViewPainter,
) -> (Vec<Action>, Option<Readout>) {
    // On the working axis, the structure overview sits above the scrubber (always, so
    // that the view does not move when the first stroke makes it appear).
    let overview = ctx.scrubber && ctx.axis == doc.session.axis();
    let overview_h = if overview {
        super::overview::OVERVIEW_HEIGHT
    } else {
        0.0
    };
    let scrubber_h = if ctx.scrubber { 18.0 } else { 0.0 } + overview_h;
    let total = ui.available_rect_before_wrap();
    let view_rect = Rect::from_min_max(total.min, pos2(total.max.x, total.max.y - scrubber_h));
    let id = ui.scope_id().with(("slice-view", ctx.axis.index()));
    let response = ui.interact(view_rect, id, Sense::click_and_drag());
    ui.allocate_rect(total, Sense::hover());
    let geometry = doc.volume.geometry();
    let view_name = format!("{} view", plane_of(geometry, ctx.axis).name());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, &view_name));
    let view = View::new(doc, ctx, view_rect);

    // Drawing.
    ui.painter().rect_filled(view_rect, 0.0, Color32::BLACK);
    let look = Look {
        window: doc.window,
        show_labels: ctx.show_labels,
    };
    let image_rect = view.image_rect();
    let mapping = &view.mapping;
    painter.paint(
        ui,
        id.value(),
        view_rect,
        image_rect,
        mapping,
        &look,
        doc,
        ctx.heat
            .filter(|h| view.is_work_view() && h.heat.slice == view.slice),
    );
    let p = ui.painter().with_clip_rect(view_rect);
    view.draw_crosshair(&p);
    view.draw_title_and_orientation(&p);
    if view.is_work_view() {
        view.draw_lasso(&p);
        view.draw_explain_marker(&p);
    }
    let hover = response.hover_pos();
    if let Some(pos) = hover
        && view.can_edit()
        && matches!(ctx.tool, Tool::Brush | Tool::Eraser)
    {
        view.draw_brush_outline(&p, pos);
    }
    let readout = hover.and_then(|pos| view.readout_at(pos));

    // Interactions.
    let mut memory: ViewMemory = ui.data(|d| d.get_temp(id)).unwrap_or_default();
    let mut actions = view.navigation_actions(ui, &response, &mut memory);
    actions.extend(view.tool_actions(ui, &response, &mut memory));
    ui.data_mut(|d| d.insert_temp(id, memory));
    if ctx.scrubber {
        let bar_top = view_rect.max.y + overview_h;
        if overview {
            let plot = Rect::from_min_max(
                pos2(total.min.x, view_rect.max.y),
                pos2(total.max.x, bar_top),
            );
            actions.extend(super::overview::overview_plot_ui(
                ui,
                plot,
                doc,
                ctx.axis,
                id.with("overview"),
            ));
        }
        let bar = Rect::from_min_max(pos2(total.min.x, bar_top), total.max);
        actions.extend(scrubber_ui(ui, bar, doc, ctx.axis, id.with("scrubber")));
    }
    (actions, readout)
}

/// One frame of a slice view: the document, the view's settings, the slice shown and
/// where its image lies on screen.
struct View<'a> {
    doc: &'a Document,
    ctx: &'a ViewContext<'a>,
    /// Slice index along `ctx.axis`.
    slice: usize,
    mapping: ViewMapping,
    view_rect: Rect,
    /// The image's screen rectangle `[x0, y0, x1, y1]` (zoomed and panned; it may
    /// reach beyond the view).
    img: [f32; 4],
}

impl<'a> View<'a> {
    fn new(doc: &'a Document, ctx: &'a ViewContext<'a>, view_rect: Rect) -> Self {
        let slice = doc.cursor[ctx.axis.index()];
        let mapping = ViewMapping::new(doc.volume.geometry(), ctx.axis, slice);
        let img = ctx.camera.image_rect(view_box(view_rect), &mapping);
        Self {
            doc,
            ctx,
            slice,
            mapping,
            view_rect,
            img,
        }
    }

    /// Whether the view shows the working axis (the one painted and propagated on).
    fn is_work_view(&self) -> bool {
        self.ctx.axis == self.doc.session.axis()
    }

    fn image_rect(&self) -> Rect {
        let img = self.img;
        Rect::from_min_max(pos2(img[0], img[1]), pos2(img[2], img[3]))
    }

    /// Screen position of a voxel position.
    fn screen_of(&self, voxel: [f32; 3]) -> Pos2 {
        let d = self.mapping.display_of(voxel);
        let s = display_to_screen(d, self.img, &self.mapping);
        pos2(s[0], s[1])
    }

    /// The voxel under a screen point, if the point is on the image.
    fn voxel_at(&self, pos: Pos2) -> Option<[usize; 3]> {
        let d = screen_to_display([pos.x, pos.y], self.img, &self.mapping);
        self.mapping.voxel_index_at(d[0], d[1])
    }

    /// Working-slice pixel coordinates of a screen point.
    fn to_slice_px(&self, pos: Pos2) -> [f32; 2] {
        let (ha, hb) = self.doc.session.axis().in_plane();
        let d = screen_to_display([pos.x, pos.y], self.img, &self.mapping);
        let v = self.mapping.voxel_at(d[0], d[1]);
        [v[ha], v[hb]]
    }

    /// Screen position of working-slice pixel coordinates.
    fn screen_of_slice_px(&self, xy: [f32; 2]) -> Pos2 {
        let (ha, hb) = self.doc.session.axis().in_plane();
        let mut v = [0.0f32; 3];
        v[ha] = xy[0];
        v[hb] = xy[1];
        self.screen_of(v)
    }

    // ----- drawing -----

    /// Crosshair through the cursor, with a gap around it.
    fn draw_crosshair(&self, p: &egui::Painter) {
        let r = self.view_rect;
        let c = self.screen_of(self.doc.cursor.map(|c| c as f32));
        let cross = Stroke::new(1.0, Color32::from_rgba_unmultiplied(80, 200, 255, 110));
        let gap = 8.0;
        p.line_segment([pos2(r.min.x, c.y), pos2(c.x - gap, c.y)], cross);
        p.line_segment([pos2(c.x + gap, c.y), pos2(r.max.x, c.y)], cross);
        p.line_segment([pos2(c.x, r.min.y), pos2(c.x, c.y - gap)], cross);
        p.line_segment([pos2(c.x, c.y + gap), pos2(c.x, r.max.y)], cross);
    }

    /// Plane, slice number and state at the top left; patient direction letters at
    /// the edges.
    fn draw_title_and_orientation(&self, p: &egui::Painter) {
        let (doc, ctx, slice) = (self.doc, self.ctx, self.slice);
        let geometry = doc.volume.geometry();
        let n = geometry.slice_count(ctx.axis);
        let mut title = format!(
            "{} {}/{}",
            plane_of(geometry, ctx.axis).name(),
            slice + 1,
            n
        );
        if self.is_work_view() {
            if let Some(st) = doc.active.and_then(|l| doc.session.structure(l)) {
                let state = st.state(slice);
                if state != SliceState::Unlabelled {
                    title.push_str(&format!(" · {}", state_name(state)));
                }
            }
        } else if ctx.tool.edits() && doc.session.axis_free() {
            title.push_str(" · paint here to annotate along this view");
        } else if ctx.tool.edits() {
            title.push_str(&format!(
                " · paint in the {} view",
                plane_of(geometry, doc.session.axis()).name().to_lowercase()
            ));
        }
        let r = self.view_rect;
        let font = egui::FontId::proportional(13.0);
        p.text(
            r.min + vec2(6.0, 4.0),
            egui::Align2::LEFT_TOP,
            title,
            font.clone(),
            Color32::from_gray(230),
        );
        let [right, down] = orientation_letters(geometry, &self.mapping);
        let letter = |pos: Pos2, align: egui::Align2, text: char| {
            p.text(
                pos,
                align,
                text,
                font.clone(),
                Color32::from_rgb(255, 210, 90),
            );
        };
        letter(
            pos2(r.max.x - 6.0, r.center().y),
            egui::Align2::RIGHT_CENTER,
            right.0,
        );
        letter(
            pos2(r.min.x + 6.0, r.center().y),
            egui::Align2::LEFT_CENTER,
            right.1,
        );
        letter(
            pos2(r.center().x, r.max.y - 4.0),
            egui::Align2::CENTER_BOTTOM,
            down.0,
        );
        letter(
            pos2(r.center().x, r.min.y + 20.0),
            egui::Align2::CENTER_TOP,
            down.1,
        );
    }

    /// The lasso in progress on this slice.
    fn draw_lasso(&self, p: &egui::Painter) {
        if let Some(lasso) = self.ctx.lasso
            && lasso.slice == self.slice
        {
            let pts: Vec<Pos2> = lasso
                .points
                .iter()
                .map(|&q| self.screen_of_slice_px(q))
                .collect();
            p.add(egui::Shape::line(
                pts.clone(),
                Stroke::new(1.5, Color32::YELLOW),
            ));
            for q in pts {
                p.circle_filled(q, 2.0, Color32::YELLOW);
            }
        }
    }

    /// The explained pixel, when it is on this slice.
    fn draw_explain_marker(&self, p: &egui::Painter) {
        if let Some((s, xy)) = self.ctx.explain_marker
            && s == self.slice
        {
            let c = self.screen_of_slice_px(xy);
            let colour = Color32::from_rgb(0, 255, 160);
            p.circle_stroke(c, 7.0, Stroke::new(2.0, colour));
            p.line_segment(
                [c - vec2(11.0, 0.0), c + vec2(11.0, 0.0)],
                Stroke::new(1.0, colour),
            );
            p.line_segment(
                [c - vec2(0.0, 11.0), c + vec2(0.0, 11.0)],
                Stroke::new(1.0, colour),
            );
        }
    }

    /// The brush (or eraser) outline at the pointer, round in millimetres.
    fn draw_brush_outline(&self, p: &egui::Painter, pos: Pos2) {
        let [rx, ry] = brush_radius_px(&self.doc.session, self.ctx.brush.radius_mm);
        let image_rect = self.image_rect();
        let scale = image_rect.width() / self.mapping.n_u as f32;
        let scale_y = image_rect.height() / self.mapping.n_v as f32;
        // Screen radii: the in-plane axis along u gets rx or ry.
        let (ha, _) = self.doc.session.axis().in_plane();
        let (sx, sy) = if self.mapping.u_axis == ha {
            (rx * scale, ry * scale_y)
        } else {
            (ry * scale, rx * scale_y)
        };
        let colour = if self.ctx.tool == Tool::Eraser {
            Color32::from_rgb(255, 120, 120)
        } else {
            Color32::WHITE
        };
        p.add(ellipse(pos, vec2(sx, sy), Stroke::new(1.0, colour)));
    }

    /// What the pointer at `pos` is over.
    fn readout_at(&self, pos: Pos2) -> Option<Readout> {
        let doc = self.doc;
        let v = self.voxel_at(pos)?;
        let label = doc.session.labels().get(v).unwrap_or(0);
        Some(Readout {
            voxel: v,
            patient_mm: doc
                .volume
                .geometry()
                .patient_from_voxel(v.map(|x| x as f64)),
            value: doc.volume.get(v).unwrap_or(f32::NAN),
            structure: (label != 0).then(|| {
                doc.session
                    .structure(label)
                    .map_or_else(|| format!("label {label}"), |s| s.style.name.clone())
            }),
        })
    }

    // ----- interactions -----

    /// Zoom (pinch or Ctrl+wheel), slice stepping (wheel), pan (middle drag) and
    /// window/level (right drag, or left drag with the W/L tool): whatever the tool.
    fn navigation_actions(
        &self,
        ui: &egui::Ui,
        response: &egui::Response,
        memory: &mut ViewMemory,
    ) -> Vec<Action> {
        let (ctx, axis) = (self.ctx, self.ctx.axis);
        let mut actions = Vec::new();
        let zoom = ui.input(|i| i.zoom_delta());
        let scroll = wheel_points(ui);
        if response.hovered() {
            if zoom != 1.0 {
                if let Some(pos) = response.hover_pos() {
                    let mut cam = ctx.camera;
                    cam.zoom_about(zoom, [pos.x, pos.y], view_box(self.view_rect));
                    actions.push(Action::SetCamera { axis, camera: cam });
                }
            } else if scroll != 0.0 {
                memory.scroll_accum += scroll;
                let steps = (memory.scroll_accum / 40.0).trunc();
                let steps = if steps == 0.0 && memory.scroll_accum.abs() >= 1.0 {
                    memory.scroll_accum.signum()
                } else {
                    steps
                };
                if steps != 0.0 {
                    memory.scroll_accum = 0.0;
                    // Wheel up moves forward through the stack (higher slice numbers).
                    actions.push(Action::StepSlice {
                        axis,
                        delta: steps as i64,
                    });
                }
            }
        }
        if response.dragged_by(egui::PointerButton::Middle) {
            let d = response.drag_delta();
            let mut cam = ctx.camera;
            cam.pan = [cam.pan[0] + d.x, cam.pan[1] + d.y];
            actions.push(Action::SetCamera { axis, camera: cam });
        }
        let wl_drag = response.dragged_by(egui::PointerButton::Secondary)
            || (ctx.tool == Tool::WindowLevel && response.dragged_by(egui::PointerButton::Primary));
        if wl_drag {
            let d = response.drag_delta();
            actions.push(Action::SetWindow(self.doc.window.dragged(d.x, d.y)));
        }
        actions
    }

    /// What a left click or drag does: explain (the Explain tool or Alt+click), else
    /// the current tool. Editing tools act on the working view only.
    fn tool_actions(
        &self,
        ui: &egui::Ui,
        response: &egui::Response,
        memory: &mut ViewMemory,
    ) -> Vec<Action> {
        let primary = egui::PointerButton::Primary;
        let alt = ui.input(|i| i.modifiers.alt);
        if response.clicked_by(primary) && (self.ctx.tool == Tool::Explain || alt) {
            return match response.interact_pointer_pos() {
                Some(pos) if self.is_work_view() && self.voxel_at(pos).is_some() => {
                    vec![Action::Explain {
                        slice: self.slice,
                        at: self.to_slice_px(pos),
                    }]
                }
                _ => Vec::new(),
            };
        }
        match self.ctx.tool {
            Tool::Crosshair => {
                let pressed = response.clicked_by(primary) || response.dragged_by(primary);
                let voxel = response
                    .interact_pointer_pos()
                    .and_then(|p| self.voxel_at(p));
                match voxel {
                    Some(v) if pressed => vec![Action::SetCursor(v)],
                    _ => Vec::new(),
                }
            }
            Tool::Brush | Tool::Eraser if self.can_edit() => {
                self.on_this_axis(self.stroke_actions(ui, response))
            }
            Tool::Lasso if self.can_edit() => {
                self.on_this_axis(self.lasso_actions(ui, response, memory))
            }
            _ => Vec::new(),
        }
    }

    /// Whether the editing tools work in this view: it is the working view, or nothing
    /// is annotated yet, so that painting here makes its axis the working axis.
    fn can_edit(&self) -> bool {
        self.is_work_view() || self.doc.session.axis_free()
    }

    /// Edits in a view that is not yet the working view first make it so.
    fn on_this_axis(&self, actions: Vec<Action>) -> Vec<Action> {
        if actions.is_empty() || self.is_work_view() {
            return actions;
        }
        std::iter::once(Action::SetWorkAxis(self.ctx.axis))
            .chain(actions)
            .collect()
    }

    /// Brush and eraser: a drag paints a stroke, a click paints one dab.
    fn stroke_actions(&self, ui: &egui::Ui, response: &egui::Response) -> Vec<Action> {
        let primary = egui::PointerButton::Primary;
        let slice = self.slice;
        let mut actions = Vec::new();
        if response.drag_started_by(primary) {
            let start = ui
                .input(|i| i.pointer.press_origin())
                .or(response.interact_pointer_pos());
            if let Some(s) = start {
                actions.push(Action::StrokeBegin {
                    slice,
                    at: self.to_slice_px(s),
                });
            }
        }
        if self.ctx.stroking
            && response.dragged_by(primary)
            && let Some(pos) = response.interact_pointer_pos()
        {
            actions.push(Action::StrokeTo(self.to_slice_px(pos)));
        }
        if response.drag_stopped_by(primary) {
            actions.push(Action::StrokeEnd);
        }
        if response.clicked_by(primary)
            && let Some(pos) = response.interact_pointer_pos()
        {
            actions.push(Action::StrokeBegin {
                slice,
                at: self.to_slice_px(pos),
            });
            actions.push(Action::StrokeEnd);
        }
        actions
    }

    /// Lasso: a drag draws a freehand outline and fills it on release; clicks place
    /// polygon vertices and a double click closes the polygon.
    fn lasso_actions(
        &self,
        ui: &egui::Ui,
        response: &egui::Response,
        memory: &mut ViewMemory,
    ) -> Vec<Action> {
        let primary = egui::PointerButton::Primary;
        let slice = self.slice;
        let mut actions = Vec::new();
        if response.dragged_by(primary)
            && let Some(pos) = response.interact_pointer_pos()
        {
            let xy = self.to_slice_px(pos);
            if response.drag_started_by(primary)
                && let Some(o) = ui.input(|i| i.pointer.press_origin())
            {
                actions.push(Action::LassoPoint {
                    slice,
                    at: self.to_slice_px(o),
                });
            }
            let far = memory
                .last_lasso
                .is_none_or(|l| (l[0] - xy[0]).hypot(l[1] - xy[1]) >= 0.75);
            if far {
                actions.push(Action::LassoPoint { slice, at: xy });
                memory.last_lasso = Some(xy);
            }
        }
        if response.drag_stopped_by(primary) {
            actions.push(Action::LassoFinish);
            memory.last_lasso = None;
        }
        if response.double_clicked_by(primary) {
            actions.push(Action::LassoFinish);
        } else if response.clicked_by(primary)
            && let Some(pos) = response.interact_pointer_pos()
        {
            actions.push(Action::LassoPoint {
                slice,
                at: self.to_slice_px(pos),
            });
        }
        actions
    }
}

/// `[x0, y0, x1, y1]` of a rectangle.
fn view_box(r: Rect) -> [f32; 4] {
    [r.min.x, r.min.y, r.max.x, r.max.y]
}

/// This frame's mouse-wheel movement in points: wheel notches (lines) count 40 points,
/// touchpads give points. Ctrl+wheel is zoom and does not count.
fn wheel_points(ui: &egui::Ui) -> f32 {
    ui.input(|i| {
        i.events
            .iter()
            .filter_map(|e| match e {
                egui::Event::MouseWheel {
                    unit,
                    delta,
                    modifiers,
                    ..
                } if !modifiers.command => Some(match unit {
                    egui::MouseWheelUnit::Line => delta.y * 40.0,
                    egui::MouseWheelUnit::Page => delta.y * 400.0,
                    egui::MouseWheelUnit::Point => delta.y,
                }),
                _ => None,
            })
            .sum()
    })
}

fn ellipse(centre: Pos2, radii: Vec2, stroke: Stroke) -> egui::Shape {
    let n = 48;
    let pts = (0..n)
        .map(|k| {
            let t = k as f32 / n as f32 * std::f32::consts::TAU;
            centre + vec2(radii.x * t.cos(), radii.y * t.sin())
        })
        .collect();
    egui::Shape::closed_line(pts, stroke)
}

/// The slice scrubber under a view: click or drag to jump; on the working axis it marks
/// each slice's state for the active structure.
fn scrubber_ui(
    ui: &mut egui::Ui,
    bar: Rect,
    doc: &Document,
    axis: Axis,
    id: egui::Id,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let n = doc.volume.geometry().slice_count(axis).max(1);
    let response = ui.interact(bar, id, Sense::click_and_drag());
    let p = ui.painter();
    p.rect_filled(bar, 0.0, Color32::from_gray(30));
    let x_of = |s: usize| bar.min.x + (s as f32 + 0.5) / n as f32 * bar.width();
    if axis == doc.session.axis()
        && let Some(st) = doc.active.and_then(|l| doc.session.structure(l))
    {
        let w = (bar.width() / n as f32).max(1.0);
        for (s, &state) in st.states().iter().enumerate() {
            if state != SliceState::Unlabelled {
                let x = x_of(s);
                p.rect_filled(
                    Rect::from_min_max(
                        pos2(x - w / 2.0, bar.min.y + 3.0),
                        pos2(x + w / 2.0, bar.max.y - 3.0),
                    ),
                    0.0,
                    state_colour(state),
                );
            }
        }
    }
    let cur = x_of(doc.cursor[axis.index()]);
    p.line_segment(
        [pos2(cur, bar.min.y), pos2(cur, bar.max.y)],
        Stroke::new(2.0, Color32::WHITE),
    );
    if (response.clicked() || response.dragged())
        && let Some(pos) = response.interact_pointer_pos()
    {
        let s = ((pos.x - bar.min.x) / bar.width() * n as f32)
            .floor()
            .clamp(0.0, (n - 1) as f32) as usize;
        actions.push(Action::SetSlice { axis, index: s });
    }
    response.on_hover_text("Slices: blue manual, orange predicted, green accepted, red rejected");
    actions
}

/// Patient direction letters at the right/left and bottom/top edges of a view:
/// `[(right, left), (bottom, top)]`.
pub fn orientation_letters(geometry: &Geometry, mapping: &ViewMapping) -> [(char, char); 2] {
    let letter = |axis: usize, flip: bool| {
        let d = geometry.direction[axis];
        let (lps, v) = d
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, v)| (i, if flip { -v } else { *v }))
            .unwrap_or((0, 1.0));
        let pair = [('L', 'R'), ('P', 'A'), ('S', 'I')][lps];
        if v >= 0.0 { pair } else { (pair.1, pair.0) }
    };
    [
        letter(mapping.u_axis, mapping.u_flip),
        letter(mapping.v_axis, mapping.v_flip),
    ]
}
