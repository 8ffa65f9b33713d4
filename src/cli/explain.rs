//! `icseg explain`: what the network looked at for one clicked pixel.
//!
//! Writes, for each of the three attention stages (strides 32, 16, 8), a PNG of every
//! support slice with the clicked location's attention overlaid as a heatmap, a PNG of
//! the query slice with the click marked, and `explain.json` with the attention mass
//! each support slice receives and the click-to-maps latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::inference::{
    ModelArgs, Pixel, SliceList, axis_from_index, parse_support_size, peak_memory_bytes,
    start_engine, support_from_labels,
};
use crate::engine::{Engine, Event, Explanation, JobRequest, SupportSet};
use crate::io;
use crate::volume::{Image2D, LabelValue, Modality, Region};

/// Arguments of `icseg explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The image: a NIfTI file or a DICOM folder.
    #[arg(long, value_name = "PATH")]
    pub image: PathBuf,
    /// A label map on the image's grid holding the annotations.
    #[arg(long, value_name = "ANN")]
    pub annotations: PathBuf,
    /// The annotated slices (the support set), e.g. 12,30,48.
    #[arg(long, value_name = "LIST")]
    pub slices: SliceList,
    /// Only voxels equal to this label count (default: any nonzero).
    #[arg(long)]
    pub label: Option<LabelValue>,
    /// The axis the slices are taken across: 0, 1 or 2.
    #[arg(long, default_value_t = 2)]
    pub axis: usize,
    /// The slice that was clicked.
    #[arg(long)]
    pub query_slice: usize,
    /// The clicked pixel X,Y (column, row) of the query slice.
    #[arg(long, value_name = "X,Y")]
    pub pixel: Pixel,
    /// Folder for the PNGs and explain.json (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Clicks to time (the latency reported is their median, support features cached).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Explain with the N support slices most similar to the query slice, as
    /// `icseg propagate --support-size N` predicts it (default: all listed slices).
    #[arg(long, value_name = "N", value_parser = parse_support_size)]
    pub support_size: Option<usize>,
    /// Model, device and batching.
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, serde::Serialize)]
struct SupportMass {
    slice: usize,
    mass: f32,
    png: String,
}

#[derive(Debug, serde::Serialize)]
struct StageReport {
    stride: usize,
    grid: [usize; 2],
    query_cell: [usize; 2],
    query_mass: f32,
    support: Vec<SupportMass>,
}

#[derive(Debug, serde::Serialize)]
struct Latency {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    repeats: usize,
    first_click_ms: f64,
    note: &'static str,
}

#[derive(Debug, serde::Serialize)]
struct ExplainReport {
    device: String,
    model: String,
    weights_trained: bool,
    query_slice: usize,
    pixel: [usize; 2],
    /// Support slices the explained ones were chosen from.
    candidates: usize,
    region: Region,
    stages: Vec<StageReport>,
    latency: Latency,
    peak_memory_mb: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One explanation through the engine.
fn explain_once(
    engine: &Engine,
    support: &Arc<SupportSet>,
    query_slice: usize,
    pixel: [usize; 2],
    support_size: Option<usize>,
) -> anyhow::Result<Box<Explanation>> {
    let id = engine.submit(JobRequest::Explain {
        support: support.clone(),
        query_slice,
        pixel,
        support_size,
    });
    loop {
        match engine
            .events()
            .recv()
            .context("the inference engine stopped")?
        {
            Event::Explained {
                id: got,
                explanation,
            } if got == id => return Ok(explanation),
            Event::Failed { id: got, error } if got == id => return Err(error.into()),
            _ => {}
        }
    }
}

/// Runs `icseg explain`.
pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let pixel = args.pixel.0;
    let axis = axis_from_index(args.axis)?;
    let loaded = io::open_volume(&args.image)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let volume = Arc::new(loaded.volume);
    let annotations = io::read_label_map(&args.annotations, volume.geometry())?;
    let count = volume.geometry().slice_count(axis);
    if args.query_slice >= count {
        bail!(
            "query slice {} does not exist: the image has {count} slices on this axis",
            args.query_slice
        );
    }
    let (w, h) = volume.geometry().slice_dims(axis);
    if pixel[0] >= w || pixel[1] >= h {
        bail!(
            "pixel {},{} lies outside the {w}×{h} slice",
            pixel[0],
            pixel[1]
        );
    }
    let support = Arc::new(support_from_labels(
        volume.clone(),
        &annotations,
        axis,
        &args.slices.0,
        args.label,
    )?);
    let (engine, info) = start_engine(args.model.engine_config())?;
    let support_size = args.support_size;

    // The first click encodes the support set; the timed ones find it cached.
    let first = explain_once(&engine, &support, args.query_slice, pixel, support_size)?;
    let mut latencies = Vec::new();
    let mut explanation = first.clone();
    for _ in 0..args.repeat.max(1) {
        explanation = explain_once(&engine, &support, args.query_slice, pixel, support_size)?;
        latencies.push(explanation.latency);
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];

    std::fs::create_dir_all(&args.out_dir).with_context(|| {
        format!(
            "could not create the output folder: {}",
            args.out_dir.display()
        )
    })?;
    let stages = write_pngs(&args.out_dir, &support, &explanation, volume.modality)?;
    let query_png = args.out_dir.join("query.png");
    let query = support.volume.slice(axis, args.query_slice);
    let mut rgb = grey(&query, volume.modality);
    draw_region(&mut rgb, &explanation.region);
    draw_cross(&mut rgb, pixel);
    save_png(&rgb, &query_png)?;

    let report = ExplainReport {
        device: info.device.clone(),
        model: info.model.clone(),
        weights_trained: matches!(info.weights, crate::engine::WeightsStatus::Loaded(_)),
        query_slice: args.query_slice,
        pixel,
        candidates: explanation.candidates,
        region: explanation.region,
        stages,
        latency: Latency {
            median_ms: ms(median),
            min_ms: ms(latencies[0]),
            max_ms: ms(*latencies.last().expect("at least one repeat")),
            repeats: latencies.len(),
            first_click_ms: ms(first.latency),
            note: "from the request to the maps on the host: query preprocessing, Attention Mapper Encoder, Cross Attention Mapper and both upsamplers; support features cached (the first click encodes them)",
        },
        peak_memory_mb: peak_memory_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    };
    let json_path = args.out_dir.join("explain.json");
    io::write_atomic(&json_path, &serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("could not write {}", json_path.display()))?;
    eprintln!(
        "wrote {} and {} PNGs to {}; click-to-maps latency {:.1} ms (median of {})",
        json_path.display(),
        3 * explanation.support_slices.len() + 1,
        args.out_dir.display(),
        ms(median),
        latencies.len()
    );
    Ok(())
}

/// Writes one PNG per stage and support slice; returns the report of each stage.
fn write_pngs(
    dir: &Path,
    support: &SupportSet,
    explanation: &Explanation,
    modality: Modality,
) -> anyhow::Result<Vec<StageReport>> {
    let (w, h) = support.volume.geometry().slice_dims(support.axis);
    let mut reports = Vec::new();
    for (n_stage, stage) in explanation.stages.iter().enumerate() {
        // One colour scale per stage, shared by its support slices, so that the
        // slices can be compared.
        let heatmaps: Vec<Image2D<f32>> = (0..explanation.support_slices.len())
            .map(|n| explanation.native_heatmap(n_stage, n, w, h))
            .collect();
        let peak = heatmaps
            .iter()
            .flat_map(|m| m.data.iter().copied())
            .fold(0.0f32, f32::max)
            .max(1e-12);
        let mut support_report = Vec::new();
        // The explained slices: all of the support set, or the ones chosen for the query.
        let explained = explanation
            .support_slices
            .iter()
            .filter_map(|&index| support.slices.iter().find(|s| s.index == index));
        for (n, (slice, heat)) in explained.zip(&heatmaps).enumerate() {
            let image = support.volume.slice(support.axis, slice.index);
            let mut rgb = grey(&image, modality);
            overlay_heat(&mut rgb, heat, peak);
            draw_contour(&mut rgb, &slice.mask);
            draw_region(&mut rgb, &explanation.region);
            let name = format!(
                "stride{:02}_support{:02}_slice{:04}.png",
                stage.stride, n, slice.index
            );
            save_png(&rgb, &dir.join(&name))?;
            support_report.push(SupportMass {
                slice: slice.index,
                mass: stage.support_mass[n],
                png: name,
            });
        }
        reports.push(StageReport {
            stride: stage.stride,
            grid: stage.grid,
            query_cell: stage.query_cell,
            query_mass: stage.query_mass,
            support: support_report,
        });
    }
    Ok(reports)
}

/// An RGB image, 3 bytes per pixel, `x` fastest.
struct Rgb {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl Rgb {
    fn blend(&mut self, x: usize, y: usize, colour: [u8; 3], alpha: f32) {
        let i = 3 * (x + self.width * y);
        for (value, &c) in self.data[i..i + 3].iter_mut().zip(&colour) {
            *value = (*value as f32 * (1.0 - alpha) + c as f32 * alpha).round() as u8;
        }
    }
}

/// Greyscale rendering: a soft-tissue window (W 400, L 40) for CT, the 1st–99th
/// percentiles otherwise.
fn grey(image: &Image2D<f32>, modality: Modality) -> Rgb {
    let (lo, hi) = match modality {
        Modality::Ct => (-160.0, 240.0),
        _ => {
            let mut v: Vec<f32> = image
                .data
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f32::total_cmp);
            if v.is_empty() {
                (0.0, 1.0)
            } else {
                (v[v.len() / 100], v[(v.len() * 99) / 100])
            }
        }
    };
    let scale = 255.0 / (hi - lo).max(1e-6);
    let data = image
        .data
        .iter()
        .flat_map(|&v| {
            let g = ((v - lo) * scale).clamp(0.0, 255.0) as u8;
            [g, g, g]
        })
        .collect();
    Rgb {
        width: image.width,
        height: image.height,
        data,
    }
}

/// A perceptually ordered colour ramp (black-red-yellow-white, "hot").
fn hot(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * 3.0;
    let r = t.min(1.0);
    let g = (t - 1.0).clamp(0.0, 1.0);
    let b = (t - 2.0).clamp(0.0, 1.0);
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

fn overlay_heat(rgb: &mut Rgb, heat: &Image2D<f32>, peak: f32) {
    for y in 0..heat.height {
        for x in 0..heat.width {
            let t = heat.get(x, y) / peak;
            if t > 0.02 {
                rgb.blend(x, y, hot(t), 0.25 + 0.5 * t.min(1.0));
            }
        }
    }
}

fn draw_contour(rgb: &mut Rgb, mask: &Image2D<u8>) {
    for y in 0..mask.height {
        for x in 0..mask.width {
            if mask.get(x, y) == 0 {
                continue;
            }
            let edge = x == 0
                || y == 0
                || x + 1 == mask.width
                || y + 1 == mask.height
                || mask.get(x - 1, y) == 0
                || mask.get(x + 1, y) == 0
                || mask.get(x, y - 1) == 0
                || mask.get(x, y + 1) == 0;
            if edge {
                rgb.blend(x, y, [0, 220, 90], 1.0);
            }
        }
    }
}

fn draw_region(rgb: &mut Rgb, region: &Region) {
    let clamp_x = |v: f64| (v.round().max(0.0) as usize).min(rgb.width - 1);
    let clamp_y = |v: f64| (v.round().max(0.0) as usize).min(rgb.height - 1);
    let (x0, x1) = (
        clamp_x(region.x0 + 0.5),
        clamp_x(region.x0 + region.width - 0.5),
    );
    let (y0, y1) = (
        clamp_y(region.y0 + 0.5),
        clamp_y(region.y0 + region.height - 0.5),
    );
    for x in x0..=x1 {
        rgb.blend(x, y0, [60, 140, 255], 0.8);
        rgb.blend(x, y1, [60, 140, 255], 0.8);
    }
    for y in y0..=y1 {
        rgb.blend(x0, y, [60, 140, 255], 0.8);
        rgb.blend(x1, y, [60, 140, 255], 0.8);
    }
}

fn draw_cross(rgb: &mut Rgb, [px, py]: [usize; 2]) {
    for d in -6i64..=6 {
        for (x, y) in [(px as i64 + d, py as i64), (px as i64, py as i64 + d)] {
            if x >= 0 && y >= 0 && (x as usize) < rgb.width && (y as usize) < rgb.height {
                rgb.blend(x as usize, y as usize, [255, 40, 40], 1.0);
            }
        }
    }
}

fn save_png(rgb: &Rgb, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            &rgb.data,
            rgb.width as u32,
            rgb.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("could not encode {}", path.display()))?;
    io::write_atomic(path, &bytes).with_context(|| format!("could not write {}", path.display()))
}

use image::ImageEncoder as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_ramp_runs_from_black_to_white() {
        assert_eq!(hot(0.0), [0, 0, 0]);
        assert_eq!(hot(1.0), [255, 255, 255]);
        let mid = hot(0.5);
        assert!(mid[0] == 255 && mid[2] == 0);
    }

    #[test]
    fn ct_greyscale_uses_a_soft_tissue_window() {
        let img = Image2D::new(3, 1, vec![-1000.0, 40.0, 1000.0]);
        let rgb = grey(&img, Modality::Ct);
        assert_eq!(rgb.data[0], 0);
        assert_eq!(rgb.data[3], 127);
        assert_eq!(rgb.data[6], 255);
    }
}
