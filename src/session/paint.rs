//! Painting on one slice: brush/eraser capsules, polygon fill, intensity limits.
//!
//! Coordinates are slice pixels as in [`Image2D`]: `x` to the right, `y` down, the centre
//! of pixel `(x, y)` at `(x, y)` exactly. Radii are given per axis so that a brush that is
//! round in millimetres stays round on slices with anisotropic pixels.

use crate::volume::{Image2D, LabelValue};

/// What a paint operation does to the pixels it covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PaintMode {
    /// Set pixels to the structure's label. With `overwrite_others` false, pixels that
    /// belong to another structure are left alone.
    Paint {
        /// Whether other structures' pixels may be painted over.
        overwrite_others: bool,
    },
    /// Clear the structure's label (other structures are never touched).
    Erase,
}

/// Restricts painting to pixels whose image value lies in `[min, max]` (e.g. a HU range).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntensityRange {
    /// Lowest value painted (inclusive).
    pub min: f32,
    /// Highest value painted (inclusive).
    pub max: f32,
}

impl IntensityRange {
    /// Whether `v` lies in the range (NaN never does).
    pub fn contains(&self, v: f32) -> bool {
        v >= self.min && v <= self.max
    }
}

/// A shape to paint on one slice.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A brush dab dragged from `from` to `to`: every pixel within the ellipse of radii
    /// `radius_px` around some point of the segment (a capsule; `from == to` is a dab).
    Capsule {
        /// Segment start (pixels).
        from: [f32; 2],
        /// Segment end (pixels).
        to: [f32; 2],
        /// Brush radii along x and y in pixels.
        radius_px: [f32; 2],
    },
    /// A closed polygon, filled by the even-odd rule at pixel centres.
    Polygon {
        /// Vertices in pixels; the last connects back to the first.
        points: Vec<[f32; 2]>,
    },
}

/// One paint operation: a shape, what to do, and an optional intensity limit.
#[derive(Clone, Debug, PartialEq)]
pub struct PaintOp {
    /// Where.
    pub shape: Shape,
    /// Paint or erase.
    pub mode: PaintMode,
    /// Only pixels whose image value falls in this range are changed.
    pub range: Option<IntensityRange>,
}

/// Applies `op` for structure `label` to a slice's label pixels; `image` is the same
/// slice of the volume (needed for the intensity limit; without it the limit is ignored).
/// Returns the number of pixels that changed.
pub fn apply(
    op: &PaintOp,
    label: LabelValue,
    labels: &mut Image2D<LabelValue>,
    image: Option<&Image2D<f32>>,
) -> usize {
    let mut changed = 0;
    let mut visit = |x: usize, y: usize| {
        let n = x + labels.width * y;
        if let (Some(range), Some(img)) = (op.range, image)
            && !range.contains(img.data[n])
        {
            return;
        }
        let old = labels.data[n];
        let new = match op.mode {
            PaintMode::Paint { overwrite_others } => {
                if old != 0 && old != label && !overwrite_others {
                    old
                } else {
                    label
                }
            }
            PaintMode::Erase => {
                if old == label {
                    0
                } else {
                    old
                }
            }
        };
        if new != old {
            labels.data[n] = new;
            changed += 1;
        }
    };
    let (w, h) = (labels.width, labels.height);
    match &op.shape {
        Shape::Capsule {
            from,
            to,
            radius_px,
        } => for_each_in_capsule(w, h, *from, *to, *radius_px, &mut visit),
        Shape::Polygon { points } => for_each_in_polygon(w, h, points, &mut visit),
    }
    changed
}

/// Calls `f(x, y)` for every pixel centre of a `w × h` grid inside the capsule.
fn for_each_in_capsule(
    w: usize,
    h: usize,
    from: [f32; 2],
    to: [f32; 2],
    radius_px: [f32; 2],
    f: &mut impl FnMut(usize, usize),
) {
    let rx = radius_px[0].max(0.5);
    let ry = radius_px[1].max(0.5);
    let x0 = (from[0].min(to[0]) - rx).floor().max(0.0);
    let x1 = (from[0].max(to[0]) + rx).ceil().min(w as f32 - 1.0);
    let y0 = (from[1].min(to[1]) - ry).floor().max(0.0);
    let y1 = (from[1].max(to[1]) + ry).ceil().min(h as f32 - 1.0);
    if !(x0 <= x1 && y0 <= y1) {
        return;
    }
    // Work in a space where the brush is a unit circle.
    let (ax, ay) = (from[0] / rx, from[1] / ry);
    let (dx, dy) = ((to[0] - from[0]) / rx, (to[1] - from[1]) / ry);
    let len2 = dx * dx + dy * dy;
    for y in y0 as usize..=y1 as usize {
        for x in x0 as usize..=x1 as usize {
            let (px, py) = (x as f32 / rx - ax, y as f32 / ry - ay);
            let t = if len2 > 0.0 {
                ((px * dx + py * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ey) = (px - t * dx, py - t * dy);
            if ex * ex + ey * ey <= 1.0 {
                f(x, y);
            }
        }
    }
}

/// Calls `f(x, y)` for every pixel centre inside the polygon (even-odd rule).
fn for_each_in_polygon(w: usize, h: usize, points: &[[f32; 2]], f: &mut impl FnMut(usize, usize)) {
    if points.len() < 3 {
        return;
    }
    let mut crossings: Vec<f32> = Vec::new();
    for y in 0..h {
        let yc = y as f32;
        crossings.clear();
        for (n, a) in points.iter().enumerate() {
            let b = points[(n + 1) % points.len()];
            // Half-open rule so a vertex exactly on the scanline counts once.
            if (a[1] <= yc) != (b[1] <= yc) {
                let t = (yc - a[1]) / (b[1] - a[1]);
                crossings.push(a[0] + t * (b[0] - a[0]));
            }
        }
        crossings.sort_by(f32::total_cmp);
        for pair in crossings.chunks_exact(2) {
            let x0 = pair[0].ceil().max(0.0);
            let x1 = pair[1].floor().min(w as f32 - 1.0);
            if x0 <= x1 {
                for x in x0 as usize..=x1 as usize {
                    f(x, y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(w: usize, h: usize) -> Image2D<LabelValue> {
        Image2D::filled(w, h, 0)
    }

    fn count(img: &Image2D<LabelValue>, v: LabelValue) -> usize {
        img.data.iter().filter(|&&p| p == v).count()
    }

    fn dab(x: f32, y: f32, r: [f32; 2], mode: PaintMode) -> PaintOp {
        PaintOp {
            shape: Shape::Capsule {
                from: [x, y],
                to: [x, y],
                radius_px: r,
            },
            mode,
            range: None,
        }
    }

    const PAINT: PaintMode = PaintMode::Paint {
        overwrite_others: false,
    };

    #[test]
    fn a_round_dab_covers_the_pixels_within_its_radius() {
        let mut img = blank(20, 20);
        let n = apply(&dab(10.0, 10.0, [2.0, 2.0], PAINT), 3, &mut img, None);
        // Integer points with x² + y² ≤ 4: 13 of them.
        assert_eq!(n, 13);
        assert_eq!(count(&img, 3), 13);
        assert_eq!(img.get(12, 10), 3);
        assert_eq!(img.get(12, 11), 0);
    }

    #[test]
    fn anisotropic_radii_make_an_ellipse_in_pixels() {
        let mut img = blank(20, 20);
        apply(&dab(10.0, 10.0, [4.0, 1.0], PAINT), 1, &mut img, None);
        assert_eq!(img.get(14, 10), 1);
        assert_eq!(img.get(10, 11), 1);
        assert_eq!(img.get(10, 12), 0);
        assert_eq!(img.get(13, 11), 0);
    }

    #[test]
    fn a_dragged_brush_leaves_no_gaps() {
        let mut img = blank(40, 10);
        let op = PaintOp {
            shape: Shape::Capsule {
                from: [2.0, 5.0],
                to: [37.0, 5.0],
                radius_px: [1.0, 1.0],
            },
            mode: PAINT,
            range: None,
        };
        apply(&op, 1, &mut img, None);
        assert!((2..=37).all(|x| img.get(x, 5) == 1 && img.get(x, 4) == 1));
        assert_eq!(img.get(1, 4), 0);
    }

    #[test]
    fn a_dab_at_the_border_is_clipped_not_a_panic() {
        let mut img = blank(5, 5);
        let n = apply(&dab(-1.0, 0.0, [2.0, 2.0], PAINT), 1, &mut img, None);
        assert!(n > 0);
        let n = apply(&dab(100.0, 100.0, [2.0, 2.0], PAINT), 1, &mut img, None);
        assert_eq!(n, 0);
    }

    #[test]
    fn paint_protects_other_structures_unless_told_to_overwrite() {
        let mut img = blank(5, 1);
        img.set(2, 0, 7);
        let op = PaintOp {
            shape: Shape::Capsule {
                from: [0.0, 0.0],
                to: [4.0, 0.0],
                radius_px: [0.5, 0.5],
            },
            mode: PAINT,
            range: None,
        };
        apply(&op, 1, &mut img, None);
        assert_eq!(img.data, vec![1, 1, 7, 1, 1]);
        let over = PaintOp {
            mode: PaintMode::Paint {
                overwrite_others: true,
            },
            ..op
        };
        apply(&over, 1, &mut img, None);
        assert_eq!(img.data, vec![1; 5]);
    }

    #[test]
    fn the_eraser_clears_only_the_active_structure() {
        let mut img = Image2D::new(4, 1, vec![1, 2, 1, 0]);
        let op = PaintOp {
            shape: Shape::Capsule {
                from: [0.0, 0.0],
                to: [3.0, 0.0],
                radius_px: [0.5, 0.5],
            },
            mode: PaintMode::Erase,
            range: None,
        };
        assert_eq!(apply(&op, 1, &mut img, None), 2);
        assert_eq!(img.data, vec![0, 2, 0, 0]);
    }

    #[test]
    fn the_intensity_limit_paints_only_pixels_in_range() {
        let mut img = blank(5, 1);
        let ct = Image2D::new(5, 1, vec![-1000.0, 40.0, 60.0, 300.0, f32::NAN]);
        let op = PaintOp {
            shape: Shape::Capsule {
                from: [0.0, 0.0],
                to: [4.0, 0.0],
                radius_px: [0.5, 0.5],
            },
            mode: PAINT,
            range: Some(IntensityRange {
                min: 0.0,
                max: 100.0,
            }),
        };
        assert_eq!(apply(&op, 4, &mut img, Some(&ct)), 2);
        assert_eq!(img.data, vec![0, 4, 4, 0, 0]);
    }

    #[test]
    fn a_polygon_fills_its_inside_by_the_even_odd_rule() {
        let mut img = blank(10, 10);
        // Square with corners at pixel centres (2,2)–(6,6): boundary on a half-open rule.
        let square = vec![[1.5, 1.5], [6.5, 1.5], [6.5, 6.5], [1.5, 6.5]];
        let op = PaintOp {
            shape: Shape::Polygon { points: square },
            mode: PAINT,
            range: None,
        };
        assert_eq!(apply(&op, 2, &mut img, None), 25);
        assert_eq!(img.get(2, 2), 2);
        assert_eq!(img.get(6, 6), 2);
        assert_eq!(img.get(7, 6), 0);
    }

    #[test]
    fn a_self_intersecting_polygon_leaves_the_doubly_covered_part_empty() {
        let mut img = blank(12, 12);
        // Two overlapping squares traced as one loop: a bow-tie-like figure eight.
        let pts = vec![
            [0.5, 0.5],
            [6.5, 0.5],
            [6.5, 6.5],
            [3.5, 6.5],
            [3.5, 3.5],
            [9.5, 3.5],
            [9.5, 9.5],
            [0.5, 9.5],
        ];
        let op = PaintOp {
            shape: Shape::Polygon { points: pts },
            mode: PAINT,
            range: None,
        };
        apply(&op, 1, &mut img, None);
        assert_eq!(img.get(1, 1), 1);
        assert_eq!(img.get(8, 8), 1);
        assert_eq!(img.get(1, 8), 1);
        assert_eq!(img.get(4, 5), 0, "x 4..6, y 4..6 is covered by both loops");
        assert_eq!(img.get(5, 2), 1);
    }

    #[test]
    fn degenerate_polygons_paint_nothing() {
        let mut img = blank(5, 5);
        let op = PaintOp {
            shape: Shape::Polygon {
                points: vec![[1.0, 1.0], [3.0, 3.0]],
            },
            mode: PAINT,
            range: None,
        };
        assert_eq!(apply(&op, 1, &mut img, None), 0);
    }
}
