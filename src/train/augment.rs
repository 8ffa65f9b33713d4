//! Training augmentations (paper section 3.3, after UniverSeg): flips, rotations,
//! contrast change, intensity flip, blur, Gaussian noise and the mask edge as target.
//!
//! Two levels, as in UniverSeg: *task* augmentations change the task itself and are
//! applied identically to every image of an episode (support and query), so the episode
//! stays consistent — flips, 90° rotations, intensity flip, edge target; *in-task*
//! augmentations perturb the images — small rotation/scale, contrast (gamma), blur and
//! noise — so the network learns to follow the support set across appearance changes.
//! UniverSeg draws them per image; we draw them once per volume of an episode
//! ([`InTaskAugment`]): the support slices and the queries of one scan share them (a
//! scan's slices are aligned and share its contrast), and only queries from another
//! patient get their own. Independent per-image draws taught the network to distrust
//! the alignment of neighbouring slices that propagation relies on.
//!
//! Images are normalised model inputs (roughly zero mean, unit variance); masks are 0/1.

use rand::RngExt;
use rand::rngs::StdRng;

use super::synthetic::gaussian;
use crate::volume::Image2D;

/// Probabilities of each augmentation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Horizontal / vertical flip of the whole episode (each).
    pub flip: f64,
    /// Rotation of the whole episode by a multiple of 90°.
    pub rot90: f64,
    /// Negating intensities of the whole episode.
    pub intensity_flip: f64,
    /// Replacing every mask by its edge (a one-pixel-wide band inside the boundary).
    pub edge_target: f64,
    /// Small rotation (±15°) and scale (±10 %) per image.
    pub affine: f64,
    /// Gamma contrast change per image.
    pub contrast: f64,
    /// Gaussian blur per image.
    pub blur: f64,
    /// Additive Gaussian noise per image.
    pub noise: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip: 0.25,
            rot90: 0.2,
            intensity_flip: 0.1,
            edge_target: 0.05,
            affine: 0.3,
            contrast: 0.3,
            blur: 0.15,
            noise: 0.2,
        }
    }
}

/// The task-level choice for one episode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskAugment {
    /// Mirror left-right.
    pub flip_x: bool,
    /// Mirror top-bottom.
    pub flip_y: bool,
    /// Quarter turns clockwise (0..4).
    pub quarter_turns: u8,
    /// Negate intensities.
    pub intensity_flip: bool,
    /// Use mask edges as targets.
    pub edge_target: bool,
}

impl TaskAugment {
    /// Draws a task augmentation.
    pub fn sample(cfg: &AugmentConfig, rng: &mut StdRng) -> Self {
        Self {
            flip_x: rng.random_bool(cfg.flip),
            flip_y: rng.random_bool(cfg.flip),
            quarter_turns: if rng.random_bool(cfg.rot90) {
                rng.random_range(1..4)
            } else {
                0
            },
            intensity_flip: rng.random_bool(cfg.intensity_flip),
            edge_target: rng.random_bool(cfg.edge_target),
        }
    }

    /// Applies it to one (image, mask) pair of the episode.
    pub fn apply(&self, image: &mut Image2D<f32>, mask: &mut Image2D<f32>) {
        for img in [&mut *image, &mut *mask] {
            if self.flip_x {
                *img = flip(img, true);
            }
            if self.flip_y {
                *img = flip(img, false);
            }
            for _ in 0..self.quarter_turns {
                *img = rotate90(img);
            }
        }
        if self.intensity_flip {
            image.data.iter_mut().for_each(|v| *v = -*v);
        }
        if self.edge_target {
            *mask = edge(mask);
        }
    }
}

/// The per-image ("in-task") augmentation drawn for one image, or shared by every slice
/// of one volume in an episode: slices of one scan are aligned and share its contrast,
/// blur and noise level in reality, so the support slices and the queries from the same
/// volume get the same geometry and appearance change (only the noise itself is drawn
/// per image). Queries from another patient draw their own.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InTaskAugment {
    /// Rotation (radians) and scale about the image centre.
    pub affine: Option<(f32, f32)>,
    /// Gamma of the contrast change.
    pub gamma: Option<f32>,
    /// Gaussian blur σ (pixels).
    pub blur: Option<f32>,
    /// Standard deviation of the additive noise.
    pub noise: Option<f32>,
}

impl InTaskAugment {
    /// Draws one: small rotation (±15°) and scale (±10 %), gamma 0.6–1.6, blur σ 0.5–1.5,
    /// noise σ 0.02–0.2, each with its probability in `cfg`.
    pub fn sample(cfg: &AugmentConfig, rng: &mut StdRng) -> Self {
        Self {
            affine: rng.random_bool(cfg.affine).then(|| {
                (
                    rng.random_range(-15.0f32..15.0).to_radians(),
                    rng.random_range(0.9f32..1.1),
                )
            }),
            gamma: rng
                .random_bool(cfg.contrast)
                .then(|| rng.random_range(0.6f32..1.6)),
            blur: rng
                .random_bool(cfg.blur)
                .then(|| rng.random_range(0.5f32..1.5)),
            noise: rng
                .random_bool(cfg.noise)
                .then(|| rng.random_range(0.02f32..0.2)),
        }
    }

    /// Applies it to one (image, mask) pair; `rng` draws the noise.
    pub fn apply(&self, image: &mut Image2D<f32>, mask: &mut Image2D<f32>, rng: &mut StdRng) {
        if let Some((angle, scale)) = self.affine {
            let fill = image.data.iter().copied().fold(f32::INFINITY, f32::min);
            *image = affine(image, angle, scale, fill, true);
            *mask = affine(mask, angle, scale, 0.0, false);
        }
        if let Some(gamma) = self.gamma {
            let (lo, hi) = min_max(&image.data);
            if hi > lo {
                for v in &mut image.data {
                    let t = ((*v - lo) / (hi - lo)).clamp(0.0, 1.0);
                    *v = lo + (hi - lo) * t.powf(gamma);
                }
            }
        }
        if let Some(sigma) = self.blur {
            *image = image.gaussian_blur(sigma);
        }
        if let Some(std) = self.noise {
            for v in &mut image.data {
                *v += std * gaussian(rng);
            }
        }
    }
}

/// Applies independently drawn per-image augmentations to one (image, mask) pair.
pub fn augment_in_task(
    cfg: &AugmentConfig,
    image: &mut Image2D<f32>,
    mask: &mut Image2D<f32>,
    rng: &mut StdRng,
) {
    InTaskAugment::sample(cfg, rng).apply(image, mask, rng);
}

fn min_max(data: &[f32]) -> (f32, f32) {
    data.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Mirrors an image left-right (`horizontal`) or top-bottom.
pub fn flip(img: &Image2D<f32>, horizontal: bool) -> Image2D<f32> {
    let (w, h) = (img.width, img.height);
    let mut out = img.clone();
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = if horizontal {
                (w - 1 - x, y)
            } else {
                (x, h - 1 - y)
            };
            out.set(x, y, img.get(sx, sy));
        }
    }
    out
}

/// Rotates an image by 90° clockwise (width and height swap).
pub fn rotate90(img: &Image2D<f32>) -> Image2D<f32> {
    let (w, h) = (img.width, img.height);
    let mut out = Image2D::filled(h, w, 0.0);
    for y in 0..h {
        for x in 0..w {
            out.set(h - 1 - y, x, img.get(x, y));
        }
    }
    out
}

/// Rotation by `angle` (radians) and scaling about the centre; bilinear for images,
/// nearest for masks; `fill` outside.
fn affine(img: &Image2D<f32>, angle: f32, scale: f32, fill: f32, bilinear: bool) -> Image2D<f32> {
    let (w, h) = (img.width, img.height);
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let mut out = Image2D::filled(w, h, fill);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = ((x as f32 - cx) / scale, (y as f32 - cy) / scale);
            let sx = cos * dx + sin * dy + cx;
            let sy = -sin * dx + cos * dy + cy;
            if sx < 0.0 || sy < 0.0 || sx > (w - 1) as f32 || sy > (h - 1) as f32 {
                continue;
            }
            let v = if bilinear {
                let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                let top = img.get(x0, y0) * (1.0 - fx) + img.get(x1, y0) * fx;
                let bottom = img.get(x0, y1) * (1.0 - fx) + img.get(x1, y1) * fx;
                top * (1.0 - fy) + bottom * fy
            } else {
                img.get(sx.round() as usize, sy.round() as usize)
            };
            out.set(x, y, v);
        }
    }
    out
}

/// The inner edge of a 0/1 mask: foreground pixels with a 4-neighbour in the background
/// (or on the image border).
pub fn edge(mask: &Image2D<f32>) -> Image2D<f32> {
    let (w, h) = (mask.width, mask.height);
    let mut out = Image2D::filled(w, h, 0.0);
    for y in 0..h {
        for x in 0..w {
            if mask.get(x, y) < 0.5 {
                continue;
            }
            let border = x == 0 || y == 0 || x == w - 1 || y == h - 1;
            let touches = border
                || mask.get(x - 1, y) < 0.5
                || mask.get(x + 1, y) < 0.5
                || mask.get(x, y - 1) < 0.5
                || mask.get(x, y + 1) < 0.5;
            if touches {
                out.set(x, y, 1.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn square_mask(n: usize, lo: usize, hi: usize) -> Image2D<f32> {
        let mut m = Image2D::filled(n, n, 0.0);
        for y in lo..hi {
            for x in lo..hi {
                m.set(x, y, 1.0);
            }
        }
        m
    }

    #[test]
    fn four_quarter_turns_and_double_flips_are_identity() {
        let img = Image2D::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let r = rotate90(&img);
        assert_eq!((r.width, r.height), (2, 3));
        assert_eq!(r.get(1, 0), 1.0, "top-left goes to top-right");
        assert_eq!(rotate90(&rotate90(&rotate90(&r))), img);
        assert_eq!(flip(&flip(&img, true), true), img);
        assert_eq!(flip(&img, false).get(0, 0), 4.0);
    }

    #[test]
    fn edge_of_a_square_is_its_outline() {
        let e = edge(&square_mask(10, 2, 7));
        assert_eq!(e.data.iter().filter(|&&v| v > 0.5).count(), 16);
        assert_eq!(e.get(4, 4), 0.0);
        assert_eq!(e.get(2, 4), 1.0);
    }

    #[test]
    fn blur_preserves_the_mean_and_smooths() {
        let img = square_mask(16, 6, 10);
        let b = img.gaussian_blur(1.0);
        let (s0, s1): (f32, f32) = (img.data.iter().sum(), b.data.iter().sum());
        assert!((s0 - s1).abs() < 0.05 * s0);
        assert!(b.get(6, 6) < 1.0 && b.get(5, 6) > 0.0);
    }

    #[test]
    fn task_augment_transforms_image_and_mask_together() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut image = square_mask(12, 1, 4);
        let mut mask = image.clone();
        let t = TaskAugment {
            flip_x: true,
            quarter_turns: 1,
            ..Default::default()
        };
        t.apply(&mut image, &mut mask);
        assert_eq!(image, mask);
        // In-task augmentation keeps the mask binary and the sizes unchanged.
        let cfg = AugmentConfig {
            affine: 1.0,
            contrast: 1.0,
            blur: 1.0,
            noise: 1.0,
            ..Default::default()
        };
        augment_in_task(&cfg, &mut image, &mut mask, &mut rng);
        assert!(mask.data.iter().all(|&v| v == 0.0 || v == 1.0));
        assert_eq!((image.width, image.height), (12, 12));
    }
}
