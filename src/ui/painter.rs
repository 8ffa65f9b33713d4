//! Chooses the GPU or CPU slice renderer each frame and draws views with it.

use std::collections::HashMap;

use eframe::egui;

use super::document::Document;
use super::render::gpu::{GpuSliceRenderer, HeatUpload, SliceCallback};
use super::render::{Heatmap, Look, cpu};
use crate::display::view::ViewMapping;

/// Which renderer draws the slices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// WGSL shaders through egui-wgpu.
    Gpu,
    /// egui textures built on the CPU (no wgpu render state, or the GPU refused).
    Cpu,
}

#[derive(Clone, Copy, PartialEq)]
struct CpuKey {
    doc: u64,
    revision: u64,
    axis: usize,
    slice: usize,
    window: [u32; 2],
    show_labels: bool,
    heat: Option<u64>,
}

/// Draws slice views, on the GPU when possible.
pub struct ViewPainter {
    backend: Backend,
    gpu_failed: Option<String>,
    cpu: HashMap<u64, (CpuKey, egui::TextureHandle)>,
    forced_cpu: bool,
}

/// A heatmap to draw on a view, with a key that changes with its contents.
#[derive(Clone, Copy)]
pub struct HeatInput<'a> {
    /// The heatmap.
    pub heat: &'a Heatmap,
    /// Changes whenever the values do.
    pub key: u64,
}

impl ViewPainter {
    /// A painter; `force_cpu` skips the GPU path (e.g. `--cpu-render`).
    pub fn new(force_cpu: bool) -> Self {
        Self {
            backend: Backend::Cpu,
            gpu_failed: None,
            cpu: HashMap::new(),
            forced_cpu: force_cpu,
        }
    }

    /// The renderer used this frame.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Why the GPU renderer is not used, if it failed.
    pub fn gpu_failure(&self) -> Option<&str> {
        self.gpu_failed.as_deref()
    }

    /// Prepares the frame: installs the GPU renderer and uploads changes. Returns a
    /// message the first time the GPU path fails (the app falls back to the CPU).
    pub fn begin_frame(&mut self, frame: &eframe::Frame, doc: Option<&Document>) -> Option<String> {
        self.backend = Backend::Cpu;
        if self.forced_cpu || self.gpu_failed.is_some() {
            return None;
        }
        let render_state = frame.wgpu_render_state()?;
        let result = GpuSliceRenderer::install(render_state).and_then(|()| match doc {
            Some(d) => GpuSliceRenderer::sync(render_state, d.key, &d.volume, &d.session),
            None => Ok(()),
        });
        match result {
            Ok(()) => {
                self.backend = Backend::Gpu;
                self.cpu.clear();
                None
            }
            Err(e) => {
                let text = format!(
                    "the GPU cannot draw this volume ({}); slices are drawn on the CPU instead",
                    e.0
                );
                self.gpu_failed = Some(text.clone());
                Some(text)
            }
        }
    }

    /// Draws one view's image into `image_rect`, clipped to `clip`.
    #[allow(clippy::too_many_arguments)]
    pub fn paint(
        &mut self,
        ui: &egui::Ui,
        view_key: u64,
        clip: egui::Rect,
        image_rect: egui::Rect,
        mapping: &ViewMapping,
        look: &Look,
        doc: &Document,
        heat: Option<HeatInput<'_>>,
    ) {
        match self.backend {
            Backend::Gpu => {
                let callback = SliceCallback {
                    view_key,
                    image_rect,
                    mapping: *mapping,
                    look: *look,
                    work_axis: doc.session.axis(),
                    heat: heat.map(|h| HeatUpload::new(h.heat, h.key)),
                };
                ui.painter()
                    .with_clip_rect(clip)
                    .add(callback.into_shape(clip.intersect(ui.clip_rect())));
            }
            Backend::Cpu => {
                let key = CpuKey {
                    doc: doc.key,
                    revision: doc.session.revision(),
                    axis: mapping.axis.index(),
                    slice: mapping.slice,
                    window: [look.window.centre.to_bits(), look.window.width.to_bits()],
                    show_labels: look.show_labels,
                    heat: heat.as_ref().map(|h| h.key),
                };
                let stale = self.cpu.get(&view_key).is_none_or(|(k, _)| *k != key);
                if stale {
                    let pixels = cpu::render(
                        &doc.volume,
                        &doc.session,
                        mapping,
                        look,
                        heat.as_ref().map(|h| h.heat),
                    );
                    let bytes: Vec<u8> = pixels.iter().flatten().copied().collect();
                    let image = egui::ColorImage::from_rgba_unmultiplied(
                        [mapping.n_u, mapping.n_v],
                        &bytes,
                    );
                    match self.cpu.get_mut(&view_key) {
                        Some((k, tex)) => {
                            tex.set(image, egui::TextureOptions::NEAREST);
                            *k = key;
                        }
                        None => {
                            let tex = ui.ctx().load_texture(
                                format!("icseg-view-{view_key}"),
                                image,
                                egui::TextureOptions::NEAREST,
                            );
                            self.cpu.insert(view_key, (key, tex));
                        }
                    }
                }
                if let Some((_, tex)) = self.cpu.get(&view_key) {
                    ui.painter().with_clip_rect(clip).image(
                        tex.id(),
                        image_rect,
                        egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                        egui::Color32::WHITE,
                    );
                }
            }
        }
    }
}
