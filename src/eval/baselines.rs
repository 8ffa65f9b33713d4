//! Classical slice-propagation baselines the network is measured against.
//!
//! Both take a binary annotation volume (1 = structure) of which only the listed slices
//! (perpendicular to one axis) are trusted, and fill the other slices:
//!
//! - [`nearest_slice`]: each slice copies the nearest annotated slice, but only within
//!   the annotated range widened on both ends by half the mean gap between annotations
//!   (with a single annotation there is no gap, so nothing outside it is filled).
//! - [`shape_based_interpolation`]: Raya & Udupa (1990) shape-based interpolation, the
//!   idea behind 3D Slicer's "Fill between slices": signed distance maps of consecutive
//!   annotated slices are blended linearly and thresholded at zero. Pure "fill between"
//!   leaves the two ends of the structure empty, so — to make the baseline as strong as
//!   the nearest one there — beyond the first and last annotation it copies the end
//!   slice over the same half-gap margin as [`nearest_slice`]. With one annotation it
//!   fills nothing but that slice.

use crate::volume::{Axis, Image2D, LabelMap};

/// Slices of `annotations` to keep, sorted and de-duplicated.
fn sorted_unique(slices: &[usize]) -> Vec<usize> {
    let mut s = slices.to_vec();
    s.sort_unstable();
    s.dedup();
    s
}

/// Nearest-annotated-slice copy. `annotations` holds 0/1 values; only `slices` along
/// `axis` are read. Annotated slices are copied unchanged.
pub fn nearest_slice(annotations: &LabelMap, axis: Axis, slices: &[usize]) -> LabelMap {
    let slices = sorted_unique(slices);
    let mut out = LabelMap::empty(annotations.geometry().clone());
    let (Some(&first), Some(&last)) = (slices.first(), slices.last()) else {
        return out;
    };
    let n = annotations.geometry().slice_count(axis);
    let half_gap = if slices.len() > 1 {
        ((last - first) as f64 / (slices.len() - 1) as f64 / 2.0).floor() as usize
    } else {
        0
    };
    let lo = first.saturating_sub(half_gap);
    let hi = (last + half_gap).min(n - 1);
    let sources: Vec<_> = slices.iter().map(|&s| annotations.slice(axis, s)).collect();
    for z in lo..=hi {
        // Nearest annotated slice; ties go to the lower one.
        let (idx, _) = slices
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.abs_diff(z), **s))
            .expect("slices is not empty");
        out.set_slice(axis, z, &sources[idx]);
    }
    out
}

/// Shape-based interpolation between consecutive annotated slices (Raya & Udupa 1990),
/// with the ends extended like [`nearest_slice`] (see the module docs). Distances use
/// the grid's in-plane spacing, so they are physical on anisotropic grids.
pub fn shape_based_interpolation(annotations: &LabelMap, axis: Axis, slices: &[usize]) -> LabelMap {
    let slices = sorted_unique(slices);
    let geometry = annotations.geometry().clone();
    let spacing = geometry.slice_spacing_mm(axis);
    // Start from the nearest-slice fill, which handles the margins beyond the ends;
    // everything between the first and last annotation is overwritten below.
    let mut out = nearest_slice(annotations, axis, &slices);
    let sdfs: Vec<Image2D<f32>> = slices
        .iter()
        .map(|&s| signed_distance(&annotations.slice(axis, s), spacing))
        .collect();
    for (n, &s) in slices.iter().enumerate() {
        out.set_slice(
            axis,
            s,
            &annotations.slice(axis, s).map(|v| u16::from(v != 0)),
        );
        let Some(&next) = slices.get(n + 1) else {
            break;
        };
        for z in s + 1..next {
            let t = (z - s) as f32 / (next - s) as f32;
            let (a, b) = (&sdfs[n], &sdfs[n + 1]);
            let data = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(da, db)| u16::from((1.0 - t) * da + t * db < 0.0))
                .collect();
            out.set_slice(axis, z, &Image2D::new(a.width, a.height, data));
        }
    }
    out
}

/// Signed Euclidean distance (mm) to the mask boundary: negative inside, positive
/// outside. Pixel centres are the samples; a pixel's value is the distance from its
/// centre to the nearest pixel centre of the other class, minus/plus half a pixel so
/// the zero level lies on the boundary between the classes. An empty mask is
/// "far outside" everywhere and a full one "far inside".
pub fn signed_distance(mask: &Image2D<u16>, spacing_mm: (f64, f64)) -> Image2D<f32> {
    let inside: Vec<bool> = mask.data.iter().map(|&v| v != 0).collect();
    let far =
        ((mask.width as f64 * spacing_mm.0).hypot(mask.height as f64 * spacing_mm.1) + 1.0) as f32;
    let any_in = inside.iter().any(|&b| b);
    let any_out = inside.iter().any(|&b| !b);
    if !any_in || !any_out {
        let v = if any_in { -far } else { far };
        return Image2D::filled(mask.width, mask.height, v);
    }
    // Distance from each outside pixel to the nearest inside pixel, and vice versa.
    let to_inside = euclidean_distance(mask.width, mask.height, &inside, spacing_mm);
    let outside: Vec<bool> = inside.iter().map(|b| !b).collect();
    let to_outside = euclidean_distance(mask.width, mask.height, &outside, spacing_mm);
    let half = (0.5 * spacing_mm.0.min(spacing_mm.1)) as f32;
    let data = inside
        .iter()
        .zip(to_inside.iter().zip(&to_outside))
        .map(|(&is_in, (&di, &dout))| if is_in { -(dout - half) } else { di - half })
        .collect();
    Image2D::new(mask.width, mask.height, data)
}

/// Exact Euclidean distance (mm) from every pixel to the nearest `target` pixel
/// (Felzenszwalb & Huttenlocher's separable lower-envelope algorithm).
pub fn euclidean_distance(
    width: usize,
    height: usize,
    target: &[bool],
    spacing_mm: (f64, f64),
) -> Vec<f32> {
    const INF: f64 = 1e20;
    let mut f: Vec<f64> = target.iter().map(|&t| if t { 0.0 } else { INF }).collect();
    let (sx2, sy2) = (spacing_mm.0 * spacing_mm.0, spacing_mm.1 * spacing_mm.1);
    // Columns (along y), then rows (along x), squared distances in mm².
    let mut column = vec![0.0; height];
    for x in 0..width {
        for y in 0..height {
            column[y] = f[x + width * y];
        }
        let d = distance_1d(&column, sy2);
        for y in 0..height {
            f[x + width * y] = d[y];
        }
    }
    for y in 0..height {
        let row = &mut f[width * y..width * (y + 1)];
        let d = distance_1d(row, sx2);
        row.copy_from_slice(&d);
    }
    f.into_iter().map(|d| d.sqrt() as f32).collect()
}

/// 1-D squared distance transform of sampled function `f` with sample spacing² `s2`.
fn distance_1d(f: &[f64], s2: f64) -> Vec<f64> {
    let n = f.len();
    let mut d = vec![0.0; n];
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f64; n + 1];
    let mut k = 0usize;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let inter = |q: usize, p: usize| -> f64 {
        let (qf, pf) = (q as f64, p as f64);
        ((f[q] + s2 * qf * qf) - (f[p] + s2 * pf * pf)) / (2.0 * s2 * (qf - pf))
    };
    for q in 1..n {
        let mut s = inter(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, dq) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let diff = q as f64 - v[k] as f64;
        *dq = s2 * diff * diff + f[v[k]];
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    /// A cylinder of radius r(z) along the slice axis, centred in a 32×32×20 grid.
    fn cone(radius: impl Fn(usize) -> f64) -> LabelMap {
        let g = Geometry::axis_aligned([32, 32, 20], [1.0, 1.0, 2.0]);
        let mut m = LabelMap::empty(g);
        for z in 0..20 {
            let r = radius(z);
            for y in 0..32 {
                for x in 0..32 {
                    let (dx, dy) = (x as f64 - 15.5, y as f64 - 15.5);
                    if dx.hypot(dy) <= r {
                        m.set([x, y, z], 1);
                    }
                }
            }
        }
        m
    }

    fn slice_area(m: &LabelMap, z: usize) -> usize {
        m.slice(Axis::K, z).data.iter().filter(|&&v| v != 0).count()
    }

    #[test]
    fn distance_transform_matches_brute_force() {
        let (w, h) = (13, 9);
        let target: Vec<bool> = (0..w * h).map(|n| n % 17 == 3 || n == 50).collect();
        let d = euclidean_distance(w, h, &target, (0.7, 1.3));
        for y in 0..h {
            for x in 0..w {
                let brute = (0..w * h)
                    .filter(|&n| target[n])
                    .map(|n| {
                        let (tx, ty) = (n % w, n / w);
                        ((x as f64 - tx as f64) * 0.7).hypot((y as f64 - ty as f64) * 1.3)
                    })
                    .fold(f64::INFINITY, f64::min);
                assert!((d[x + w * y] as f64 - brute).abs() < 1e-4, "({x},{y})");
            }
        }
    }

    #[test]
    fn interpolation_grows_the_shape_linearly_between_annotations() {
        let truth = cone(|z| 2.0 + z as f64 * 0.6);
        let pred = shape_based_interpolation(&truth, Axis::K, &[2, 14]);
        // Midway the radius is about (3.2 + 10.4) / 2 = 6.8: area ≈ π·6.8² ≈ 145.
        let mid = slice_area(&pred, 8);
        assert!((120..=175).contains(&mid), "area {mid}");
        assert_eq!(slice_area(&pred, 2), slice_area(&truth, 2));
        // Gap 12 → half gap 6: the end slices are copied up to 6 slices beyond them.
        assert_eq!(slice_area(&pred, 19), slice_area(&truth, 14));
        assert_eq!(slice_area(&pred, 0), slice_area(&truth, 2));
    }

    #[test]
    fn nearest_copies_within_half_a_gap_of_the_annotated_range() {
        let truth = cone(|z| 2.0 + z as f64 * 0.5);
        let pred = nearest_slice(&truth, Axis::K, &[4, 8, 12]);
        // Gap 4 → half gap 2: slices 2..=14 filled, 1 and 15 empty.
        assert_eq!(slice_area(&pred, 2), slice_area(&truth, 4));
        assert_eq!(slice_area(&pred, 14), slice_area(&truth, 12));
        assert_eq!(slice_area(&pred, 1), 0);
        assert_eq!(slice_area(&pred, 15), 0);
        assert_eq!(slice_area(&pred, 9), slice_area(&truth, 8));
        assert_eq!(slice_area(&pred, 11), slice_area(&truth, 12));
    }

    #[test]
    fn a_single_annotation_fills_only_itself() {
        let truth = cone(|_| 5.0);
        for pred in [
            nearest_slice(&truth, Axis::K, &[7]),
            shape_based_interpolation(&truth, Axis::K, &[7]),
        ] {
            assert!(slice_area(&pred, 7) > 0);
            assert_eq!(pred.count(1), slice_area(&pred, 7));
        }
    }

    #[test]
    fn interpolating_towards_an_empty_slice_shrinks_the_shape() {
        let truth = cone(|z| if z <= 6 { 6.0 } else { 0.0 });
        let pred = shape_based_interpolation(&truth, Axis::K, &[4, 12]);
        let areas: Vec<_> = (4..=12).map(|z| slice_area(&pred, z)).collect();
        assert!(areas.windows(2).all(|w| w[1] <= w[0]), "{areas:?}");
        assert_eq!(*areas.last().unwrap(), 0);
    }
}
