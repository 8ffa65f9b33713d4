//! CPU fallback renderer: one RGBA image per view at voxel resolution.

use crate::display::view::ViewMapping;
use crate::session::Session;
use crate::volume::{LabelValue, Volume};

use super::{Heatmap, Look, is_predicted, label_lut};
use crate::display::{blend, heat_over, structure_alpha};

/// Stripe period of the hatching of predicted slices, in display pixels.
const HATCH_PERIOD: usize = 4;

/// Renders the view described by `mapping` into `n_u × n_v` RGBA pixels (sRGB,
/// unmultiplied alpha 255), as the GPU path would at one screen pixel per voxel.
pub fn render(
    volume: &Volume,
    session: &Session,
    mapping: &ViewMapping,
    look: &Look,
    heat: Option<&Heatmap>,
) -> Vec<[u8; 4]> {
    let (nu, nv) = (mapping.n_u, mapping.n_v);
    let lut = label_lut(session);
    let labels = session.labels().labels();
    let voxels = volume.voxels();
    let g = volume.geometry();
    let work = session.axis().index();
    let (ha, hb) = session.axis().in_plane();
    let label_at = |u: usize, v: usize| -> LabelValue {
        let ijk = mapping.voxel_of_pixel(u, v);
        g.linear_index(ijk).map_or(0, |n| labels[n])
    };
    let mut out = vec![[0u8; 4]; nu * nv];
    for v in 0..nv {
        for u in 0..nu {
            let ijk = mapping.voxel_of_pixel(u, v);
            let Some(n) = g.linear_index(ijk) else {
                continue;
            };
            let mut rgb = [look.window.grey(voxels[n]); 3];
            if let Some(h) = heat
                && ijk[work] == h.slice
            {
                rgb = heat_over(rgb, h.values.get(ijk[ha], ijk[hb]));
            }
            if look.show_labels {
                let l = labels[n];
                if l != 0
                    && let Some(&[r, gc, b, a]) = lut.get(l as usize)
                    && a > 0
                {
                    let edge = (u > 0 && label_at(u - 1, v) != l)
                        || (u + 1 < nu && label_at(u + 1, v) != l)
                        || (v > 0 && label_at(u, v - 1) != l)
                        || (v + 1 < nv && label_at(u, v + 1) != l);
                    let mut alpha = structure_alpha(a, edge);
                    // Hatching: stripes of full and quarter opacity inside predictions.
                    if !edge
                        && is_predicted(session, l, ijk[work])
                        && (u + v) % HATCH_PERIOD >= HATCH_PERIOD / 2
                    {
                        alpha *= 0.25;
                    }
                    rgb = blend(rgb, [r, gc, b], alpha);
                }
            }
            out[u + nu * v] = [rgb[0], rgb[1], rgb[2], 255];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::{HEAT_OPACITY, WindowLevel, heat_colour};
    use crate::session::{PaintMode, PaintOp, Shape};
    use crate::volume::{Axis, Geometry, Image2D, Modality};

    fn setup() -> (Volume, Session, LabelValue) {
        let g = Geometry::axis_aligned([12, 10, 4], [1.0; 3]);
        let vox = (0..g.voxel_count())
            .map(|n| (n % 12) as f32 * 10.0)
            .collect();
        let volume = Volume::new(g.clone(), vox, Modality::Ct).unwrap();
        let mut s = Session::new(g, Axis::K);
        let l = s.add_structure("x").unwrap();
        s.style_mut(l).unwrap().colour = [255, 0, 0];
        s.style_mut(l).unwrap().opacity = 0.5;
        (volume, s, l)
    }

    fn look() -> Look {
        Look {
            window: WindowLevel::from_range(0.0, 110.0),
            show_labels: true,
        }
    }

    fn square(s: &mut Session, l: LabelValue, slice: usize) {
        let op = PaintOp {
            shape: Shape::Polygon {
                points: vec![[1.5, 1.5], [7.5, 1.5], [7.5, 7.5], [1.5, 7.5]],
            },
            mode: PaintMode::Paint {
                overwrite_others: false,
            },
            range: None,
        };
        s.paint(l, slice, &op, None).unwrap();
    }

    #[test]
    fn grey_follows_the_window_and_orientation() {
        let (v, s, _) = setup();
        let m = ViewMapping::new(v.geometry(), Axis::K, 0);
        let img = render(&v, &s, &m, &look(), None);
        // Identity direction: no flips; value = i * 10, window 0..110.
        assert_eq!(img[0], [0, 0, 0, 255]);
        assert_eq!(img[11], [255, 255, 255, 255]);
        assert_eq!(img[5][0], (50.0f32 / 110.0 * 255.0).round() as u8);
    }

    #[test]
    fn manual_structures_are_filled_and_outlined() {
        let (v, mut s, l) = setup();
        square(&mut s, l, 1);
        let m = ViewMapping::new(v.geometry(), Axis::K, 1);
        let img = render(&v, &s, &m, &look(), None);
        let grey = |u: usize| (u as f32 * 10.0 / 110.0 * 255.0).round() as u8;
        // Interior pixel (4, 4): half red over grey.
        let px = img[4 + 12 * 4];
        assert_eq!(px[0], blend([grey(4); 3], [255, 0, 0], 128.0 / 255.0)[0]);
        // Edge pixel (2, 4): 90 % red.
        assert_eq!(img[2 + 12 * 4][0], blend([grey(2); 3], [255, 0, 0], 0.9)[0]);
        // Outside: plain grey.
        assert_eq!(img[10 + 12 * 4], [grey(10), grey(10), grey(10), 255]);
        // Hidden structures vanish.
        s.style_mut(l).unwrap().visible = false;
        let img = render(&v, &s, &m, &look(), None);
        assert_eq!(img[4 + 12 * 4], [grey(4), grey(4), grey(4), 255]);
    }

    #[test]
    fn predicted_slices_are_hatched() {
        let (v, mut s, l) = setup();
        let mut probs = Image2D::filled(12, 10, 0.0f32);
        for y in 2..8 {
            for x in 2..8 {
                probs.set(x, y, 0.9);
            }
        }
        s.apply_prediction(l, 2, &probs, 1).unwrap();
        let m = ViewMapping::new(v.geometry(), Axis::K, 2);
        let img = render(&v, &s, &m, &look(), None);
        // Interior pixels alternate between full and quarter opacity along diagonals.
        let a = img[4 + 12 * 4][1]; // u+v = 8 → strong
        let b = img[5 + 12 * 5][1]; // u+v = 10 → weak
        let grey = |u: usize| (u as f32 * 10.0 / 110.0 * 255.0).round() as u8;
        // Opacity 0.5 is stored as 128/255.
        let alpha = 128.0 / 255.0;
        assert_eq!(a, blend([grey(4); 3], [255, 0, 0], alpha)[1]);
        assert_eq!(b, blend([grey(5); 3], [255, 0, 0], alpha * 0.25)[1]);
    }

    #[test]
    fn heatmaps_colour_their_slice_only() {
        let (v, s, _) = setup();
        let mut values = Image2D::filled(12, 10, 0.0f32);
        values.set(3, 3, 1.0);
        let heat = Heatmap { slice: 1, values };
        let m1 = ViewMapping::new(v.geometry(), Axis::K, 1);
        let img = render(&v, &s, &m1, &look(), Some(&heat));
        let grey = (30.0f32 / 110.0 * 255.0).round() as u8;
        assert_eq!(
            &img[3 + 12 * 3][..3],
            &blend([grey; 3], heat_colour(1.0), HEAT_OPACITY)
        );
        assert_eq!(
            img[4 + 12 * 3][..3],
            [(40.0f32 / 110.0 * 255.0).round() as u8; 3]
        );
        let m0 = ViewMapping::new(v.geometry(), Axis::K, 0);
        let img0 = render(&v, &s, &m0, &look(), Some(&heat));
        assert_eq!(img0[3 + 12 * 3][..3], [grey; 3]);
    }
}
