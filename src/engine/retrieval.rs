//! Choosing each query slice's support slices when there are more annotated slices than
//! the support size (paper §4.3, "Using image retrieval to improve performance").
//!
//! The scores come from the network ([`crate::model::Model::support_similarity`]: the
//! mean over the query's coarse locations of the best cross-correlation with the
//! candidate's locations, the value inside equation 2's softmax). This module turns
//! scores into choices and groups queries that chose the same slices, so that they
//! share support features and batches.

/// How a job's query slices shared out the support slices.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SupportGroup {
    /// The support slices (indices along the axis, in the support set's order).
    pub support: Vec<usize>,
    /// The query slices predicted with them, in the order they were asked for.
    pub queries: Vec<usize>,
}

/// Positions (into the candidate list) of the `k` candidates most similar to a query,
/// in ascending position order (the support set's order).
///
/// Ranking: higher score first; equal scores go to the candidate nearer the query
/// along the axis, then to the lower slice index. A NaN score ranks last. So the
/// choice is a pure function of the scores and the slice indices: deterministic.
/// With `k ≥` the number of candidates every candidate is chosen.
pub fn most_similar(scores: &[f32], candidates: &[usize], query: usize, k: usize) -> Vec<usize> {
    debug_assert_eq!(scores.len(), candidates.len());
    let score = |p: usize| {
        let s = scores[p];
        if s.is_nan() { f32::NEG_INFINITY } else { s }
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        score(b)
            .total_cmp(&score(a))
            .then_with(|| {
                candidates[a]
                    .abs_diff(query)
                    .cmp(&candidates[b].abs_diff(query))
            })
            .then_with(|| candidates[a].cmp(&candidates[b]))
    });
    order.truncate(k);
    order.sort_unstable();
    order
}

/// Groups queries by the candidate positions they chose. Groups come in the order of
/// their first query; queries keep their order within a group.
pub fn group_queries(choices: &[(usize, Vec<usize>)]) -> Vec<(Vec<usize>, Vec<usize>)> {
    let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for (query, chosen) in choices {
        match groups.iter_mut().find(|(c, _)| c == chosen) {
            Some((_, queries)) => queries.push(*query),
            None => groups.push((chosen.clone(), vec![*query])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_scores_win_and_come_back_in_support_order() {
        let candidates = [2, 5, 9, 14, 20];
        let scores = [0.1, 0.9, -0.3, 0.7, 0.8];
        assert_eq!(most_similar(&scores, &candidates, 11, 3), vec![1, 3, 4]);
        assert_eq!(most_similar(&scores, &candidates, 11, 1), vec![1]);
    }

    #[test]
    fn ties_go_to_the_nearer_slice_then_the_lower_index() {
        let candidates = [2, 8, 12, 30];
        // All equal: nearest to slice 10 are 8 and 12 (distance 2), then 2 (8), 30 (20).
        let scores = [0.5; 4];
        assert_eq!(most_similar(&scores, &candidates, 10, 2), vec![1, 2]);
        assert_eq!(
            most_similar(&scores, &candidates, 10, 1),
            vec![1],
            "8 before 12"
        );
        assert_eq!(most_similar(&scores, &candidates, 10, 3), vec![0, 1, 2]);
        // The same inputs give the same answer every time, whatever the input order.
        let shuffled = [30, 12, 2, 8];
        assert_eq!(most_similar(&scores, &shuffled, 10, 1), vec![3]);
    }

    #[test]
    fn nan_scores_rank_last_and_the_limit_is_respected() {
        let candidates = [0, 1, 2, 3, 4, 5];
        let scores = [f32::NAN, 0.2, 0.3, f32::NAN, -1.0, 0.0];
        for k in 0..=8 {
            let chosen = most_similar(&scores, &candidates, 0, k);
            assert_eq!(chosen.len(), k.min(6));
            assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(most_similar(&scores, &candidates, 0, 4), vec![1, 2, 4, 5]);
    }

    #[test]
    fn queries_that_chose_the_same_slices_share_a_group() {
        let choices = vec![
            (4, vec![0, 2]),
            (5, vec![1, 2]),
            (6, vec![0, 2]),
            (7, vec![1, 2]),
            (8, vec![3, 4]),
        ];
        assert_eq!(
            group_queries(&choices),
            vec![
                (vec![0, 2], vec![4, 6]),
                (vec![1, 2], vec![5, 7]),
                (vec![3, 4], vec![8]),
            ]
        );
    }
}
