//! GPU slice renderer: `shaders/slice.wgsl` through egui-wgpu's paint callback.
//!
//! The volume (quantised to 16 bits) and the label map live in 3-D textures uploaded
//! once; label edits upload only the working-axis slices whose revision changed. Each
//! view owns a small uniform buffer and an optional heatmap texture; drawing a view is
//! one triangle. Everything is created inside wgpu error scopes: if the device cannot
//! hold the volume (texture limits, memory) the renderer reports it and the app falls
//! back to the CPU path.

use std::collections::HashMap;
use std::sync::Arc;

use eframe::egui;
use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, RenderState, wgpu};

use crate::display::view::ViewMapping;
use crate::session::{Session, SliceState};
use crate::volume::{Axis, Volume};

use super::{Heatmap, Look, label_lut};
use crate::display::HEAT_OPACITY;

const SHADER: &str = include_str!("../../../shaders/slice.wgsl");
/// Stripe period of predicted-slice hatching, in points.
const HATCH_POINTS: f32 = 6.0;
/// Uniform buffer size: 7 × vec4 of 4-byte values.
const UNIFORM_BYTES: usize = 7 * 16;
/// Views not drawn for this many frames free their GPU resources.
const VIEW_TTL_FRAMES: u64 = 600;
/// Bytes per upload call when sending the volume.
const UPLOAD_CHUNK_BYTES: usize = 32 << 20;

/// Why the GPU renderer cannot draw a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuUnavailable(pub String);

/// How volume values are stored in the 16-bit texture: `value = q / scale + offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantisation {
    /// Value of code 0.
    pub offset: f32,
    /// Codes per value unit.
    pub scale: f32,
}

impl Quantisation {
    /// Exact for integer-valued volumes whose range fits 16 bits (CT in HU); otherwise
    /// the range is spread over all 65 536 codes.
    pub fn for_volume(volume: &Volume) -> Self {
        let (lo, hi) = volume.value_range();
        let integral = volume
            .voxels()
            .iter()
            .step_by((volume.voxels().len() / 100_000).max(1))
            .all(|v| !v.is_finite() || v.fract() == 0.0);
        if integral && hi - lo <= 65_535.0 {
            Self {
                offset: lo,
                scale: 1.0,
            }
        } else {
            Self {
                offset: lo,
                scale: 65_535.0 / (hi - lo).max(1e-12),
            }
        }
    }

    /// The code of a value (NaN → 0).
    pub fn encode(&self, v: f32) -> u16 {
        let q = ((v - self.offset) * self.scale).round();
        if q.is_nan() {
            0
        } else {
            q.clamp(0.0, 65_535.0) as u16
        }
    }

    /// The value of a code.
    pub fn decode(&self, q: u16) -> f32 {
        f32::from(q) / self.scale + self.offset
    }
}

/// Heatmap pixels for one view, 8-bit, with a key that changes with the contents.
#[derive(Debug)]
pub struct HeatUpload {
    key: u64,
    slice: u32,
    width: u32,
    height: u32,
    bytes: Vec<u8>,
}

impl HeatUpload {
    /// Quantises a heatmap for upload; `key` must change whenever the values do.
    pub fn new(heat: &Heatmap, key: u64) -> Arc<Self> {
        Arc::new(Self {
            key,
            slice: heat.slice as u32,
            width: heat.values.width as u32,
            height: heat.values.height as u32,
            bytes: heat
                .values
                .data
                .iter()
                .map(|&t| (t.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect(),
        })
    }
}

struct VolumeTextures {
    key: u64,
    dims: [u32; 3],
    quant: Quantisation,
    label: wgpu::Texture,
    lut: wgpu::Texture,
    states: wgpu::Texture,
    states_size: [u32; 2],
    bind_group: wgpu::BindGroup,
    /// Uploaded revision per working-axis slice of the label map.
    label_revisions: Vec<u64>,
    label_axis: Axis,
    lut_bytes: Vec<u8>,
    state_bytes: Vec<u8>,
}

struct ViewSlot {
    uniform: wgpu::Buffer,
    heat: wgpu::Texture,
    heat_key: Option<u64>,
    bind_group: wgpu::BindGroup,
    last_frame: u64,
}

/// The renderer's GPU objects, kept in egui-wgpu's callback resources.
pub struct GpuSliceRenderer {
    pipeline: wgpu::RenderPipeline,
    volume_layout: wgpu::BindGroupLayout,
    view_layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    srgb_target: bool,
    volume: Option<VolumeTextures>,
    views: HashMap<u64, ViewSlot>,
    frame: u64,
    max_dim_3d: u32,
}

fn check_errors<T>(
    device: &wgpu::Device,
    what: &str,
    f: impl FnOnce() -> T,
) -> Result<T, GpuUnavailable> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let value = f();
    let oom_error = block_on_ready(oom.pop());
    let validation_error = block_on_ready(scope.pop());
    match oom_error.or(validation_error) {
        None => Ok(value),
        Some(e) => Err(GpuUnavailable(format!("{what}: {e}"))),
    }
}

/// Native wgpu resolves error-scope futures immediately; poll once.
fn block_on_ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn texture_entry(
    binding: u32,
    sample_type: wgpu::TextureSampleType,
    dim: wgpu::TextureViewDimension,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Texture {
            multisampled: false,
            sample_type,
            view_dimension: dim,
        },
        count: None,
    }
}

impl GpuSliceRenderer {
    /// Makes sure the renderer exists in `render_state`'s callback resources.
    pub fn install(render_state: &RenderState) -> Result<(), GpuUnavailable> {
        let mut renderer = render_state.renderer.write();
        if renderer.callback_resources.contains::<Self>() {
            return Ok(());
        }
        let r = Self::new(&render_state.device, render_state.target_format)?;
        renderer.callback_resources.insert(r);
        Ok(())
    }

    fn new(device: &wgpu::Device, target: wgpu::TextureFormat) -> Result<Self, GpuUnavailable> {
        check_errors(device, "creating the slice shader", || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("icseg slice shader"),
                source: wgpu::ShaderSource::Wgsl(SHADER.into()),
            });
            use wgpu::TextureSampleType as S;
            use wgpu::TextureViewDimension as D;
            let volume_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("icseg volume"),
                entries: &[
                    texture_entry(0, S::Uint, D::D3),
                    texture_entry(1, S::Uint, D::D3),
                    texture_entry(2, S::Float { filterable: false }, D::D2),
                    texture_entry(3, S::Uint, D::D2),
                ],
            });
            let view_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("icseg view"),
                entries: &[
                    wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::FRAGMENT,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: std::num::NonZeroU64::new(UNIFORM_BYTES as u64),
                        },
                        count: None,
                    },
                    texture_entry(1, S::Float { filterable: true }, D::D2),
                    wgpu::BindGroupLayoutEntry {
                        binding: 2,
                        visibility: wgpu::ShaderStages::FRAGMENT,
                        ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                        count: None,
                    },
                ],
            });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("icseg slice"),
                bind_group_layouts: &[Some(&volume_layout), Some(&view_layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some("icseg slice"),
                layout: Some(&layout),
                vertex: wgpu::VertexState {
                    module: &module,
                    entry_point: Some("vs_main"),
                    buffers: &[],
                    compilation_options: wgpu::PipelineCompilationOptions::default(),
                },
                primitive: wgpu::PrimitiveState::default(),
                depth_stencil: None,
                multisample: wgpu::MultisampleState::default(),
                fragment: Some(wgpu::FragmentState {
                    module: &module,
                    entry_point: Some("fs_main"),
                    targets: &[Some(wgpu::ColorTargetState {
                        format: target,
                        blend: None,
                        write_mask: wgpu::ColorWrites::ALL,
                    })],
                    compilation_options: wgpu::PipelineCompilationOptions::default(),
                }),
                multiview_mask: None,
                cache: None,
            });
            let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
                label: Some("icseg heat"),
                mag_filter: wgpu::FilterMode::Linear,
                min_filter: wgpu::FilterMode::Linear,
                address_mode_u: wgpu::AddressMode::ClampToEdge,
                address_mode_v: wgpu::AddressMode::ClampToEdge,
                ..Default::default()
            });
            Self {
                pipeline,
                volume_layout,
                view_layout,
                sampler,
                srgb_target: target.is_srgb(),
                volume: None,
                views: HashMap::new(),
                frame: 0,
                max_dim_3d: device.limits().max_texture_dimension_3d,
            }
        })
    }

    /// Uploads `volume` (identified by `key`) unless it is already resident, then the label
    /// map, colour table and slice states of `session` where they changed. Call once per
    /// frame before drawing views.
    pub fn sync(
        render_state: &RenderState,
        key: u64,
        volume: &Volume,
        session: &Session,
    ) -> Result<(), GpuUnavailable> {
        let mut renderer = render_state.renderer.write();
        let Some(this) = renderer.callback_resources.get_mut::<Self>() else {
            return Err(GpuUnavailable("the renderer is not installed".into()));
        };
        this.frame += 1;
        let frame = this.frame;
        this.views
            .retain(|_, v| frame.saturating_sub(v.last_frame) < VIEW_TTL_FRAMES);
        let (device, queue) = (&render_state.device, &render_state.queue);
        if this.volume.as_ref().is_none_or(|v| v.key != key) {
            this.volume = None;
            let textures = this.upload_volume(device, queue, key, volume, session)?;
            this.volume = Some(textures);
        }
        let Some(tex) = this.volume.as_mut() else {
            return Ok(());
        };
        upload_changed_labels(queue, tex, session);
        upload_lut_and_states(queue, tex, session);
        Ok(())
    }

    fn upload_volume(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        key: u64,
        volume: &Volume,
        session: &Session,
    ) -> Result<VolumeTextures, GpuUnavailable> {
        let [nx, ny, nz] = volume.dims().map(|d| d as u32);
        if [nx, ny, nz].iter().any(|&d| d == 0 || d > self.max_dim_3d) {
            return Err(GpuUnavailable(format!(
                "the volume ({nx}×{ny}×{nz}) exceeds this GPU's 3-D texture size ({})",
                self.max_dim_3d
            )));
        }
        let quant = Quantisation::for_volume(volume);
        // Wide enough for the states along any axis (the working axis may change).
        let n_slices = nx.max(ny).max(nz);
        check_errors(device, "uploading the volume", || {
            let tex3 = |label: &str| {
                device.create_texture(&wgpu::TextureDescriptor {
                    label: Some(label),
                    size: wgpu::Extent3d {
                        width: nx,
                        height: ny,
                        depth_or_array_layers: nz,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D3,
                    format: wgpu::TextureFormat::R16Uint,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                })
            };
            let image = tex3("icseg volume");
            let label = tex3("icseg labels");
            // Volume and labels in slabs of whole k-slices.
            let slice_len = (nx * ny) as usize;
            let per_chunk = (UPLOAD_CHUNK_BYTES / (slice_len * 2)).max(1);
            let mut buf: Vec<u8> = Vec::new();
            for k0 in (0..nz as usize).step_by(per_chunk) {
                let k1 = (k0 + per_chunk).min(nz as usize);
                let range = k0 * slice_len..k1 * slice_len;
                buf.clear();
                buf.extend(
                    volume.voxels()[range.clone()]
                        .iter()
                        .flat_map(|&v| quant.encode(v).to_le_bytes()),
                );
                write_box(
                    queue,
                    &image,
                    [0, 0, k0 as u32],
                    [nx, ny, (k1 - k0) as u32],
                    &buf,
                );
                buf.clear();
                buf.extend(
                    session.labels().labels()[range]
                        .iter()
                        .flat_map(|v| v.to_le_bytes()),
                );
                write_box(
                    queue,
                    &label,
                    [0, 0, k0 as u32],
                    [nx, ny, (k1 - k0) as u32],
                    &buf,
                );
            }
            let tex2 = |label: &str, w: u32, h: u32, format: wgpu::TextureFormat| {
                device.create_texture(&wgpu::TextureDescriptor {
                    label: Some(label),
                    size: wgpu::Extent3d {
                        width: w,
                        height: h,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                })
            };
            let lut = tex2("icseg lut", 256, 256, wgpu::TextureFormat::Rgba8Unorm);
            let states = tex2("icseg states", n_slices, 256, wgpu::TextureFormat::R8Uint);
            let view = |t: &wgpu::Texture| t.create_view(&wgpu::TextureViewDescriptor::default());
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("icseg volume"),
                layout: &self.volume_layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::TextureView(&view(&image)),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&view(&label)),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&view(&lut)),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::TextureView(&view(&states)),
                    },
                ],
            });
            VolumeTextures {
                key,
                dims: [nx, ny, nz],
                quant,
                label,
                lut,
                states,
                states_size: [n_slices, 256],
                bind_group,
                label_revisions: (0..session.slice_count())
                    .map(|s| session.slice_revision(s))
                    .collect(),
                label_axis: session.axis(),
                lut_bytes: Vec::new(),
                state_bytes: Vec::new(),
            }
        })
    }
}

fn write_box(
    queue: &wgpu::Queue,
    tex: &wgpu::Texture,
    origin: [u32; 3],
    size: [u32; 3],
    data: &[u8],
) {
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: tex,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: origin[0],
                y: origin[1],
                z: origin[2],
            },
            aspect: wgpu::TextureAspect::All,
        },
        data,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(size[0] * (data.len() as u32 / (size[0] * size[1] * size[2]))),
            rows_per_image: Some(size[1]),
        },
        wgpu::Extent3d {
            width: size[0],
            height: size[1],
            depth_or_array_layers: size[2],
        },
    );
}

/// Sends the working-axis slices whose revision changed since the last upload.
fn upload_changed_labels(queue: &wgpu::Queue, tex: &mut VolumeTextures, session: &Session) {
    let axis = session.axis();
    let n = session.slice_count();
    if tex.label_axis != axis || tex.label_revisions.len() != n {
        // The working axis changed: resend everything along the new axis.
        tex.label_axis = axis;
        tex.label_revisions = vec![u64::MAX; n];
    }
    let [nx, ny, nz] = tex.dims;
    for s in 0..n {
        let rev = session.slice_revision(s);
        if tex.label_revisions[s] == rev {
            continue;
        }
        tex.label_revisions[s] = rev;
        let img = session.label_slice(s);
        let bytes: Vec<u8> = img.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = s as u32;
        // Slice pixels are (x, y) over the in-plane axes; lay them out as a box.
        let (origin, size) = match axis {
            Axis::K => ([0, 0, s], [nx, ny, 1]),
            Axis::J => ([0, s, 0], [nx, 1, nz]),
            Axis::I => ([s, 0, 0], [1, ny, nz]),
        };
        write_box(queue, &tex.label, origin, size, &bytes);
    }
}

fn upload_lut_and_states(queue: &wgpu::Queue, tex: &mut VolumeTextures, session: &Session) {
    let lut = label_lut(session);
    let mut lut_bytes = vec![0u8; 256 * 256 * 4];
    for (value, rgba) in lut.iter().enumerate() {
        lut_bytes[value * 4..value * 4 + 4].copy_from_slice(rgba);
    }
    if lut_bytes != tex.lut_bytes {
        write_box(queue, &tex.lut, [0, 0, 0], [256, 256, 1], &lut_bytes);
        tex.lut_bytes = lut_bytes;
    }
    let [w, h] = tex.states_size;
    let mut states = vec![0u8; (w * h) as usize];
    if session.slice_count() as u32 <= w {
        for st in session.structures() {
            let row = (st.value % 256) as usize;
            for (s, state) in st.states().iter().enumerate() {
                if *state == SliceState::Predicted {
                    states[row * w as usize + s] = 1;
                }
            }
        }
    }
    if states != tex.state_bytes {
        write_box(queue, &tex.states, [0, 0, 0], [w, h, 1], &states);
        tex.state_bytes = states;
    }
}

/// One view to draw: a paint callback carrying its uniforms.
pub struct SliceCallback {
    /// Which view slot (stable per on-screen view).
    pub view_key: u64,
    /// Where the image lies, in points.
    pub image_rect: egui::Rect,
    /// The view's mapping.
    pub mapping: ViewMapping,
    /// Window and overlays.
    pub look: Look,
    /// Working axis of the session.
    pub work_axis: Axis,
    /// Heatmap, if any.
    pub heat: Option<Arc<HeatUpload>>,
}

impl SliceCallback {
    /// Wraps the callback for `ui.painter().add(...)`, painting inside `clip`.
    pub fn into_shape(self, clip: egui::Rect) -> egui::PaintCallback {
        egui_wgpu::Callback::new_paint_callback(clip, self)
    }

    fn uniform_bytes(
        &self,
        ppp: f32,
        quant: Quantisation,
        srgb: bool,
        heat: Option<&HeatUpload>,
    ) -> Vec<u8> {
        let r = self.image_rect;
        let f = |v: f32| v.to_bits();
        let m = &self.mapping;
        let (ha, hb) = self.work_axis.in_plane();
        let flags = u32::from(self.look.show_labels)
            | if heat.is_some() { 2 } else { 0 }
            | if srgb { 4 } else { 0 };
        let words: [u32; UNIFORM_BYTES / 4] = [
            f(r.min.x * ppp),
            f(r.min.y * ppp),
            f(r.width() * ppp),
            f(r.height() * ppp),
            f(m.n_u as f32),
            f(m.n_v as f32),
            f(HATCH_POINTS * ppp),
            f(HEAT_OPACITY),
            m.u_axis as u32,
            m.v_axis as u32,
            u32::from(m.u_flip),
            u32::from(m.v_flip),
            m.axis.index() as u32,
            m.slice as u32,
            self.work_axis.index() as u32,
            flags,
            f(self.look.window.low()),
            f(self.look.window.width),
            f(quant.offset),
            f(quant.scale),
            0,
            0,
            0,
            heat.map_or(u32::MAX, |h| h.slice),
            f(heat.map_or(1.0, |h| h.width as f32)),
            f(heat.map_or(1.0, |h| h.height as f32)),
            f(ha as f32),
            f(hb as f32),
        ];
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

impl CallbackTrait for SliceCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(r) = resources.get_mut::<GpuSliceRenderer>() else {
            return Vec::new();
        };
        let Some(quant) = r.volume.as_ref().map(|v| v.quant) else {
            return Vec::new();
        };
        let frame = r.frame;
        let needs_new = match (r.views.get(&self.view_key), &self.heat) {
            (None, _) => true,
            (Some(slot), Some(h)) => {
                let size = slot.heat.size();
                slot.heat_key != Some(h.key) && (size.width != h.width || size.height != h.height)
            }
            _ => false,
        };
        if needs_new {
            let (w, h) = self.heat.as_ref().map_or((1, 1), |h| (h.width, h.height));
            let heat = device.create_texture(&wgpu::TextureDescriptor {
                label: Some("icseg heat"),
                size: wgpu::Extent3d {
                    width: w.max(1),
                    height: h.max(1),
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::R8Unorm,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("icseg view"),
                size: UNIFORM_BYTES as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let heat_view = heat.create_view(&wgpu::TextureViewDescriptor::default());
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("icseg view"),
                layout: &r.view_layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&heat_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::Sampler(&r.sampler),
                    },
                ],
            });
            r.views.insert(
                self.view_key,
                ViewSlot {
                    uniform,
                    heat,
                    heat_key: None,
                    bind_group,
                    last_frame: frame,
                },
            );
        }
        let srgb = r.srgb_target;
        let Some(slot) = r.views.get_mut(&self.view_key) else {
            return Vec::new();
        };
        slot.last_frame = frame;
        if let Some(h) = &self.heat
            && slot.heat_key != Some(h.key)
        {
            write_box(
                queue,
                &slot.heat,
                [0, 0, 0],
                [h.width, h.height, 1],
                &h.bytes,
            );
            slot.heat_key = Some(h.key);
        }
        let bytes = self.uniform_bytes(screen.pixels_per_point, quant, srgb, self.heat.as_deref());
        queue.write_buffer(&slot.uniform, 0, &bytes);
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(r) = resources.get::<GpuSliceRenderer>() else {
            return;
        };
        let (Some(vol), Some(slot)) = (r.volume.as_ref(), r.views.get(&self.view_key)) else {
            return;
        };
        render_pass.set_pipeline(&r.pipeline);
        render_pass.set_bind_group(0, &vol.bind_group, &[]);
        render_pass.set_bind_group(1, &slot.bind_group, &[]);
        render_pass.draw(0..3, 0..1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Modality};

    #[test]
    fn integer_volumes_are_stored_exactly() {
        let g = Geometry::axis_aligned([4, 1, 1], [1.0; 3]);
        let v = Volume::new(g, vec![-1024.0, 0.0, 40.0, 3071.0], Modality::Ct).unwrap();
        let q = Quantisation::for_volume(&v);
        assert_eq!(q.scale, 1.0);
        for &x in v.voxels() {
            assert_eq!(q.decode(q.encode(x)), x);
        }
    }

    #[test]
    fn float_volumes_use_the_full_code_range() {
        let g = Geometry::axis_aligned([3, 1, 1], [1.0; 3]);
        let v = Volume::new(g, vec![0.0, 0.37, 1.0], Modality::Mr).unwrap();
        let q = Quantisation::for_volume(&v);
        assert_eq!(q.encode(0.0), 0);
        assert_eq!(q.encode(1.0), 65_535);
        assert!((q.decode(q.encode(0.37)) - 0.37).abs() < 1e-4);
        assert_eq!(q.encode(f32::NAN), 0);
    }
}
