//! How unsure the network is about a predicted slice, and which slice to review next.
//!
//! The score is the mean binary entropy (in bits) of the predicted probabilities over the
//! slice's *candidate region*: pixels where the network gives the structure at least
//! [`CANDIDATE_PROBABILITY`]. Averaging over the whole slice would make every small
//! structure look certain (most pixels are confidently background); averaging over the
//! candidate region measures how crisp the predicted outline is, independent of the
//! structure's size. A slice with no candidate pixels scores 0 (confidently empty).

/// Pixels with at least this probability count as the candidate region.
pub const CANDIDATE_PROBABILITY: f32 = 0.05;

/// Binary entropy of probability `p` in bits (0 at 0 and 1, 1 at 0.5).
pub fn binary_entropy_bits(p: f32) -> f32 {
    let p = p.clamp(0.0, 1.0);
    let h = |q: f32| if q > 0.0 { -q * q.log2() } else { 0.0 };
    h(p) + h(1.0 - p)
}

/// The uncertainty score of one predicted slice (see the module docs), in `[0, 1]`.
pub fn slice_uncertainty(probabilities: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for &p in probabilities {
        if p >= CANDIDATE_PROBABILITY {
            sum += f64::from(binary_entropy_bits(p));
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

/// Picks the slice to review next from `(slice, uncertainty)` candidates: the highest
/// uncertainty, ties broken by closeness to `current` (then the lower index).
pub fn most_uncertain(
    candidates: impl IntoIterator<Item = (usize, f32)>,
    current: usize,
) -> Option<usize> {
    candidates
        .into_iter()
        .filter(|(_, u)| u.is_finite())
        .max_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then_with(|| b.0.abs_diff(current).cmp(&a.0.abs_diff(current)))
                .then_with(|| b.0.cmp(&a.0))
        })
        .map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_is_one_bit_at_one_half_and_zero_at_the_ends() {
        assert!((binary_entropy_bits(0.5) - 1.0).abs() < 1e-6);
        assert_eq!(binary_entropy_bits(0.0), 0.0);
        assert_eq!(binary_entropy_bits(1.0), 0.0);
        assert!((binary_entropy_bits(0.1) - 0.469).abs() < 1e-3);
    }

    #[test]
    fn a_crisp_prediction_scores_lower_than_a_blurry_one_of_the_same_size() {
        let mut crisp = vec![0.0f32; 100];
        let mut blurry = vec![0.0f32; 100];
        for n in 0..20 {
            crisp[n] = 0.98;
            blurry[n] = 0.6;
        }
        assert!(slice_uncertainty(&crisp) < 0.2);
        assert!(slice_uncertainty(&blurry) > 0.9);
    }

    #[test]
    fn the_score_does_not_shrink_with_more_background() {
        let small: Vec<f32> = [0.7; 10].into_iter().chain([0.0; 10]).collect();
        let large: Vec<f32> = [0.7; 10].into_iter().chain([0.0; 10_000]).collect();
        assert_eq!(slice_uncertainty(&small), slice_uncertainty(&large));
    }

    #[test]
    fn an_empty_prediction_is_certain() {
        assert_eq!(slice_uncertainty(&[0.0, 0.01, 0.02]), 0.0);
    }

    #[test]
    fn next_to_review_is_the_most_uncertain_then_the_nearest() {
        assert_eq!(most_uncertain([(3, 0.2), (9, 0.8), (5, 0.4)], 0), Some(9));
        assert_eq!(most_uncertain([(2, 0.5), (9, 0.5), (12, 0.5)], 10), Some(9));
        assert_eq!(most_uncertain([(8, 0.5), (12, 0.5)], 10), Some(8));
        assert_eq!(most_uncertain([(4, f32::NAN)], 0), None);
        assert_eq!(most_uncertain(std::iter::empty(), 0), None);
    }
}
