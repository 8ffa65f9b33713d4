//! `icseg explain`: what the network looked at for one clicked pixel.
//!
//! Writes, for each of the three attention stages (strides 32, 16, 8), a PNG of every
//! support slice with the clicked location's attention overlaid as a heatmap, a PNG of
//! the query slice with the click and the region of interest marked, and `explain.json`
//! with the attention mass each support slice receives and the click-to-maps latency.
//!
//! The support pictures are drawn as the app's explanation panel draws them, with
//! [`crate::display`]: the window the app opens the volume with, the heatmap scaled per
//! stage and coloured with the app's colour map, the annotated structure filled and
//! outlined in its app colour, the clicked location ringed, and the slice turned the
//! way the app's view shows it (radiological convention).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::inference::{
    ModelArgs, Pixel, SliceList, axis_from_index, parse_support_size, peak_memory_bytes,
    start_engine, support_from_labels,
};
use crate::display::view::ViewMapping;
use crate::display::{self, RgbImage, WindowLevel, initial_window, overlay_rgba};
use crate::engine::{Engine, Event, Explanation, JobRequest, SupportSet};
use crate::io;
use crate::session::Session;
use crate::volume::{LabelValue, Region};

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
    // As the app shows the annotations: the structure's colour and opacity.
    let session = Session::with_labels(annotations, axis);
    let structure = match args.label {
        Some(label) => session.structure(label),
        None => session.structures().first(),
    };
    let look = Look {
        window: initial_window(&volume),
        structure: structure.map_or([0; 4], |s| {
            overlay_rgba(s.style.colour, s.style.opacity, s.style.visible)
        }),
        click: pixel,
    };
    let stages = write_pngs(&args.out_dir, &support, &explanation, &look)?;
    let query = support.volume.slice(axis, args.query_slice);
    let mut rgb = RgbImage::grey(&query, look.window);
    draw_region(&mut rgb, &explanation.region);
    draw_cross(&mut rgb, pixel);
    let mapping = ViewMapping::new(volume.geometry(), axis, args.query_slice);
    rgb.oriented(&mapping)
        .save_png(&args.out_dir.join("query.png"))?;

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

/// How the support pictures are drawn.
struct Look {
    /// The window the app opens the volume with.
    window: WindowLevel,
    /// The annotated structure's overlay colour in the app.
    structure: [u8; 4],
    /// The clicked pixel, ringed on every support slice as in the app.
    click: [usize; 2],
}

/// Writes one PNG per stage and support slice; returns the report of each stage.
fn write_pngs(
    dir: &Path,
    support: &SupportSet,
    explanation: &Explanation,
    look: &Look,
) -> anyhow::Result<Vec<StageReport>> {
    let (w, h) = support.volume.geometry().slice_dims(support.axis);
    let mut reports = Vec::new();
    for (n_stage, stage) in explanation.stages.iter().enumerate() {
        // One scale per stage, shared by its support slices so that they can be
        // compared: the strongest location over all of them is 1 (as in the app).
        let peak = stage
            .maps
            .iter()
            .flat_map(|m| m.data.iter().copied())
            .fold(0.0f32, f32::max);
        let mut support_report = Vec::new();
        // The explained slices: all of the support set, or the ones chosen for the query.
        let explained = explanation
            .support_slices
            .iter()
            .filter_map(|&index| support.slices.iter().find(|s| s.index == index));
        for (n, slice) in explained.enumerate() {
            let heat = display::heat_scaled(&explanation.native_heatmap(n_stage, n, w, h), peak);
            let image = support.volume.slice(support.axis, slice.index);
            let mut rgb = RgbImage::grey(&image, look.window);
            rgb.overlay_heat(&heat);
            rgb.overlay_structure(&slice.mask, look.structure);
            rgb.draw_ring(look.click);
            let name = format!(
                "stride{:02}_support{:02}_slice{:04}.png",
                stage.stride, n, slice.index
            );
            let mapping = ViewMapping::new(support.volume.geometry(), support.axis, slice.index);
            rgb.oriented(&mapping).save_png(&dir.join(&name))?;
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

fn draw_region(rgb: &mut RgbImage, region: &Region) {
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

fn draw_cross(rgb: &mut RgbImage, [px, py]: [usize; 2]) {
    for d in -6i64..=6 {
        for (x, y) in [(px as i64 + d, py as i64), (px as i64, py as i64 + d)] {
            if x >= 0 && y >= 0 && (x as usize) < rgb.width && (y as usize) < rgb.height {
                rgb.blend(x as usize, y as usize, [255, 40, 40], 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Image2D;

    #[test]
    fn the_click_is_ringed_and_the_region_framed() {
        let mut rgb = RgbImage::grey(&Image2D::filled(12, 12, 0.0), WindowLevel::new(0.5, 1.0));
        rgb.draw_ring([6, 6]);
        assert_eq!(rgb.get(10, 6), [0, 255, 160]);
        assert_eq!(rgb.get(6, 2), [0, 255, 160]);
        assert_eq!(rgb.get(6, 6), [0, 0, 0]);
        draw_region(
            &mut rgb,
            &Region {
                x0: 0.0,
                y0: 0.0,
                width: 12.0,
                height: 12.0,
            },
        );
        // The frame runs through the centres of the region's edge pixels.
        assert_eq!(rgb.get(1, 5), display::blend([0; 3], [60, 140, 255], 0.8));
        assert_eq!(rgb.get(0, 5), [0; 3]);
    }
}
