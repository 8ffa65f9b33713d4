//! Procedural 3-D training volumes (UniverSeg-style synthetic tasks).
//!
//! Each volume holds several deformed ellipsoid "organs" with their own mean intensity
//! and texture over a textured background with a smooth bias field. Segmenting one of
//! them from a few examples requires exactly what propagation requires — following an
//! appearance and a shape across slices — without any anatomy, which widens the task
//! distribution beyond the few real datasets we have.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::volume::{Geometry, LabelMap, Modality, Volume};

/// A smooth random field: Gaussian-distributed values on a coarse lattice, trilinearly
/// interpolated onto the grid. `cells` lattice cells span each axis.
pub fn smooth_noise(dims: [usize; 3], cells: [usize; 3], rng: &mut StdRng) -> Vec<f32> {
    let cells = cells.map(|c| c.max(1));
    let lattice: Vec<f32> = (0..(cells[0] + 1) * (cells[1] + 1) * (cells[2] + 1))
        .map(|_| gaussian(rng))
        .collect();
    let at = |i: usize, j: usize, k: usize| lattice[i + (cells[0] + 1) * (j + (cells[1] + 1) * k)];
    let mut out = Vec::with_capacity(dims.iter().product());
    for z in 0..dims[2] {
        let fz = z as f32 / dims[2].max(2).saturating_sub(1) as f32 * cells[2] as f32;
        let (k0, tz) = split(fz, cells[2]);
        for y in 0..dims[1] {
            let fy = y as f32 / dims[1].max(2).saturating_sub(1) as f32 * cells[1] as f32;
            let (j0, ty) = split(fy, cells[1]);
            for x in 0..dims[0] {
                let fx = x as f32 / dims[0].max(2).saturating_sub(1) as f32 * cells[0] as f32;
                let (i0, tx) = split(fx, cells[0]);
                let c = |di: usize, dj: usize, dk: usize| at(i0 + di, j0 + dj, k0 + dk);
                let x00 = c(0, 0, 0) * (1.0 - tx) + c(1, 0, 0) * tx;
                let x10 = c(0, 1, 0) * (1.0 - tx) + c(1, 1, 0) * tx;
                let x01 = c(0, 0, 1) * (1.0 - tx) + c(1, 0, 1) * tx;
                let x11 = c(0, 1, 1) * (1.0 - tx) + c(1, 1, 1) * tx;
                let y0 = x00 * (1.0 - ty) + x10 * ty;
                let y1 = x01 * (1.0 - ty) + x11 * ty;
                out.push(y0 * (1.0 - tz) + y1 * tz);
            }
        }
    }
    out
}

fn split(f: f32, cells: usize) -> (usize, f32) {
    let i = (f.floor() as usize).min(cells.saturating_sub(1));
    (i, f - i as f32)
}

/// A standard normal sample (Box–Muller).
pub fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Generates a synthetic volume of `dims` with `organs` labelled structures (labels
/// 1..=organs; later organs may occlude earlier ones). Deterministic for a seed.
pub fn synthetic_volume(dims: [usize; 3], organs: usize, seed: u64) -> (Volume, LabelMap) {
    let mut rng = StdRng::seed_from_u64(seed);
    let geometry = Geometry::axis_aligned(dims, [1.0, 1.0, 2.0]);
    let n = geometry.voxel_count();
    let mut labels = vec![0u16; n];
    let deform = smooth_noise(dims, [4, 4, 3], &mut rng);
    for organ in 1..=organs as u16 {
        let centre = [
            rng.random_range(0.25..0.75) * dims[0] as f32,
            rng.random_range(0.25..0.75) * dims[1] as f32,
            rng.random_range(0.3..0.7) * dims[2] as f32,
        ];
        let radii = [
            rng.random_range(0.06..0.22) * dims[0] as f32,
            rng.random_range(0.06..0.22) * dims[1] as f32,
            rng.random_range(0.15..0.4) * dims[2] as f32,
        ];
        let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
        let (sin, cos) = angle.sin_cos();
        let power: f32 = rng.random_range(1.6..3.0);
        let wobble: f32 = rng.random_range(0.1..0.45);
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    let (dx, dy) = (x as f32 - centre[0], y as f32 - centre[1]);
                    let u = (cos * dx + sin * dy) / radii[0];
                    let v = (-sin * dx + cos * dy) / radii[1];
                    let w = (z as f32 - centre[2]) / radii[2];
                    let idx = x + dims[0] * (y + dims[1] * z);
                    let r = u.abs().powf(power) + v.abs().powf(power) + w.abs().powf(power);
                    if r <= 1.0 + wobble * deform[idx] {
                        labels[idx] = organ;
                    }
                }
            }
        }
    }
    // Appearance: one mean and texture strength per class, a shared texture field, a
    // smooth bias field, and a little white noise.
    let means: Vec<f32> = (0..=organs)
        .map(|_| rng.random_range(-300.0..300.0))
        .collect();
    let texture_gain: Vec<f32> = (0..=organs).map(|_| rng.random_range(5.0..60.0)).collect();
    let texture = smooth_noise(dims, [dims[0] / 4, dims[1] / 4, dims[2] / 2], &mut rng);
    let bias = smooth_noise(dims, [2, 2, 2], &mut rng);
    let bias_gain: f32 = rng.random_range(0.0..60.0);
    let noise_gain: f32 = rng.random_range(0.0..25.0);
    let voxels = (0..n)
        .map(|i| {
            let c = labels[i] as usize;
            means[c]
                + texture_gain[c] * texture[i]
                + bias_gain * bias[i]
                + noise_gain * gaussian(&mut rng)
        })
        .collect();
    let volume = Volume::new(geometry.clone(), voxels, Modality::Other).expect("sizes match");
    let labels = LabelMap::new(geometry, labels).expect("sizes match");
    (volume, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_volumes_are_deterministic_and_hold_distinct_organs() {
        let (v1, l1) = synthetic_volume([48, 40, 16], 3, 7);
        let (v2, l2) = synthetic_volume([48, 40, 16], 3, 7);
        assert_eq!(v1.voxels(), v2.voxels());
        assert_eq!(l1, l2);
        let counts = l1.label_counts();
        assert!(!counts.is_empty() && counts.len() <= 3, "{counts:?}");
        // Each organ spans several slices and differs in appearance from background.
        for (label, count) in counts {
            assert!(count > 20, "label {label} has {count} voxels");
            let (lo, hi) = l1.slice_extent(crate::volume::Axis::K, label).unwrap();
            assert!(hi > lo);
        }
        let (v3, _) = synthetic_volume([48, 40, 16], 3, 8);
        assert_ne!(v1.voxels(), v3.voxels());
    }

    #[test]
    fn smooth_noise_is_smooth() {
        let mut rng = StdRng::seed_from_u64(1);
        let f = smooth_noise([32, 1, 1], [4, 1, 1], &mut rng);
        let max_step = f
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max);
        let range =
            f.iter().cloned().fold(f32::MIN, f32::max) - f.iter().cloned().fold(f32::MAX, f32::min);
        assert!(max_step < range / 3.0, "step {max_step} range {range}");
    }
}
