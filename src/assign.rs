//! Constrained one-to-one mapping of a window's local speakers to global speakers (Hungarian assignment).
//!
//! The segmentation model finds up to 3 local speakers per window; two of them are, by construction, different
//! people. [`assign_local_to_global`] maps them to the global speakers (centroids) so that two local speakers never
//! land on the same global speaker, only active local speakers are mapped, a local speaker too far from every
//! available global speaker becomes a new speaker, and no more than `max_new` new speakers are opened (the caller
//! passes `max_speakers - existing` to enforce a cap; at the cap the locals are still mapped one-to-one onto the
//! existing speakers whenever there are enough of them).
//!
//! It is solved as one rectangular assignment problem (Kuhn-Munkres from `pathfinding`, on integer costs):
//! rows = active local speakers; columns = the existing global speakers (cost = distance), `min(active, max_new)`
//! "new speaker" slots (cost = `new_threshold`, so in isolation a local prefers an existing speaker exactly when
//! it is closer than the threshold), and, when even those are too few, "unassigned" slots at a cost above
//! everything else. The total cost is minimised.

use ndarray::ArrayView2;
use pathfinding::prelude::{kuhn_munkres_min, Matrix};

/// What happened to one local speaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// Not active in the window: not mapped.
    Inactive,
    /// Mapped to this existing global speaker (column of the cost matrix). At the cap this can be a far match
    /// (distance above `new_threshold`); check the cost before updating a centroid with it.
    Global(usize),
    /// Far from every available global speaker: the caller should open a new global speaker for it. Each `New`
    /// is a distinct new speaker.
    New,
    /// Active, but no global speaker nor new slot was left for it (more active locals than existing speakers
    /// plus allowed new ones).
    Unassigned,
}

impl Assignment {
    /// The existing global speaker, if mapped to one.
    pub fn global(self) -> Option<usize> {
        match self {
            Assignment::Global(g) => Some(g),
            _ => None,
        }
    }
}

/// Costs are clamped to +-COST_LIMIT (NaN = +COST_LIMIT) and scaled by COST_SCALE to integers.
const COST_LIMIT: f64 = 1.0e3;
const COST_SCALE: f64 = 1.0e6;
/// Cost of leaving an active local unassigned: above any clamped cost.
const UNASSIGNED_COST: i64 = (4.0 * COST_LIMIT * COST_SCALE) as i64;

fn scaled(c: f32) -> i64 {
    let c = f64::from(c);
    let c = if c.is_nan() {
        COST_LIMIT
    } else {
        c.clamp(-COST_LIMIT, COST_LIMIT)
    };
    (c * COST_SCALE).round() as i64
}

/// Maps local speakers (rows of `cost`) to global speakers (columns of `cost`, e.g. cosine distance between a
/// local speaker's embedding and each global centroid; lower = closer; `cost` may have 0 columns).
///
/// - `active[l]`: local speaker `l` is active (long enough) in the window; inactive ones get
///   [`Assignment::Inactive`]. `active.len()` must equal `cost.nrows()`.
/// - `max_new`: how many new global speakers may be opened (e.g. `max_speakers - existing`, 0 at the cap).
/// - `new_threshold`: distance above which a local speaker would rather be a new speaker than join a global one.
///
/// Guarantees: no two locals get the same [`Assignment::Global`]; a local whose distance to every existing
/// speaker exceeds `new_threshold` is [`Assignment::New`] while new slots remain; with no new slots, active
/// locals are mapped one-to-one to existing speakers (minimum total distance) and only the surplus beyond the
/// number of existing speakers is [`Assignment::Unassigned`]; at most `max_new` are `New`.
pub fn assign_local_to_global(
    cost: ArrayView2<f32>,
    active: &[bool],
    max_new: usize,
    new_threshold: f32,
) -> Vec<Assignment> {
    let (nl, ng) = cost.dim();
    assert_eq!(
        active.len(),
        nl,
        "assign_local_to_global: {} activity flags for {nl} local speakers",
        active.len()
    );
    let mut out = vec![Assignment::Inactive; nl];
    let rows: Vec<usize> = (0..nl).filter(|&l| active[l]).collect();
    let na = rows.len();
    if na == 0 {
        return out;
    }
    let n_new = na.min(max_new);
    let n_dummy = na.saturating_sub(ng + n_new);
    let cols = ng + n_new + n_dummy;
    let new_cost = scaled(new_threshold);
    let weights = Matrix::from_fn(na, cols, |(r, c)| {
        if c < ng {
            scaled(cost[[rows[r], c]])
        } else if c < ng + n_new {
            new_cost
        } else {
            UNASSIGNED_COST
        }
    });
    let (_, cols_of) = kuhn_munkres_min(&weights);
    for (r, &c) in cols_of.iter().enumerate() {
        out[rows[r]] = if c < ng {
            Assignment::Global(c)
        } else if c < ng + n_new {
            Assignment::New
        } else {
            Assignment::Unassigned
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    fn globals(a: &[Assignment]) -> Vec<usize> {
        a.iter().filter_map(|x| x.global()).collect()
    }

    #[test]
    fn two_locals_nearest_to_the_same_global_get_different_globals() {
        // Both locals are closest to global 0; local 0 more so. One-to-one forces local 1 to global 1.
        let cost = array![[0.10, 0.40, 0.90], [0.20, 0.35, 0.80]];
        let a = assign_local_to_global(cost.view(), &[true, true], 0, 0.5);
        assert_eq!(a, vec![Assignment::Global(0), Assignment::Global(1)]);
        // Same with new slots allowed: 0.35 is under the threshold, so no new speaker.
        let a = assign_local_to_global(cost.view(), &[true, true], 2, 0.5);
        assert_eq!(a, vec![Assignment::Global(0), Assignment::Global(1)]);
        // Minimum total cost, not greedy: greedy would give l0 -> g0 (0.1) and l1 -> g1 (0.9) = 1.0;
        // optimal is l0 -> g1 (0.2) + l1 -> g0 (0.15) = 0.35.
        let cost = array![[0.10, 0.20], [0.15, 0.90]];
        let a = assign_local_to_global(cost.view(), &[true, true], 0, 0.5);
        assert_eq!(a, vec![Assignment::Global(1), Assignment::Global(0)]);
        // Three locals, three globals, all nearest to global 2: all distinct.
        let cost = array![[0.3, 0.4, 0.1], [0.5, 0.6, 0.1], [0.2, 0.7, 0.1]];
        let a = assign_local_to_global(cost.view(), &[true, true, true], 0, 0.5);
        let mut g = globals(&a);
        g.sort_unstable();
        assert_eq!(g, vec![0, 1, 2]);
    }

    #[test]
    fn inactive_locals_are_skipped() {
        let cost = array![[0.1, 0.9], [0.05, 0.9], [0.9, 0.1]];
        let a = assign_local_to_global(cost.view(), &[false, true, true], 3, 0.5);
        assert_eq!(
            a,
            vec![
                Assignment::Inactive,
                Assignment::Global(0),
                Assignment::Global(1)
            ]
        );
        let a = assign_local_to_global(cost.view(), &[false, false, false], 3, 0.5);
        assert!(a.iter().all(|&x| x == Assignment::Inactive));
        // The inactive local does not block its favourite global.
        let a = assign_local_to_global(cost.view(), &[true, false, false], 3, 0.5);
        assert_eq!(a[0], Assignment::Global(0));
    }

    #[test]
    fn new_speaker_detection() {
        // No global speakers yet: every active local is new.
        let empty = Array2::<f32>::zeros((3, 0));
        let a = assign_local_to_global(empty.view(), &[true, false, true], 5, 0.5);
        assert_eq!(
            a,
            vec![Assignment::New, Assignment::Inactive, Assignment::New]
        );
        // Local 1 is far from everybody: new; local 0 joins global 1.
        let cost = array![[0.8, 0.2], [0.7, 0.9]];
        let a = assign_local_to_global(cost.view(), &[true, true], 1, 0.5);
        assert_eq!(a, vec![Assignment::Global(1), Assignment::New]);
        // Both want global 0 but the runner-up's alternative is above the threshold: it becomes new rather than
        // being forced onto global 1.
        let cost = array![[0.1, 0.9], [0.3, 0.95]];
        let a = assign_local_to_global(cost.view(), &[true, true], 1, 0.5);
        assert_eq!(a, vec![Assignment::Global(0), Assignment::New]);
        // Threshold edge: just below -> existing, just above -> new.
        let cost = array![[0.49]];
        assert_eq!(
            assign_local_to_global(cost.view(), &[true], 1, 0.5),
            vec![Assignment::Global(0)]
        );
        let cost = array![[0.51]];
        assert_eq!(
            assign_local_to_global(cost.view(), &[true], 1, 0.5),
            vec![Assignment::New]
        );
        // NaN distances count as far.
        let cost = array![[f32::NAN, 0.2]];
        assert_eq!(
            assign_local_to_global(cost.view(), &[true], 1, 0.5),
            vec![Assignment::Global(1)]
        );
    }

    #[test]
    fn cap_is_respected() {
        // Two far locals but only one new slot: the closer-to-threshold trade-off gives one New, and the other
        // is mapped one-to-one to an existing speaker (cap reached) rather than opened.
        let cost = array![[0.9, 0.8], [0.95, 0.99]];
        let a = assign_local_to_global(cost.view(), &[true, true], 1, 0.5);
        assert_eq!(a.iter().filter(|&&x| x == Assignment::New).count(), 1);
        assert_eq!(globals(&a).len(), 1);
        // At the cap (no new slots): far locals still map one-to-one to the existing speakers.
        let a = assign_local_to_global(cost.view(), &[true, true], 0, 0.5);
        assert_eq!(a, vec![Assignment::Global(1), Assignment::Global(0)]);
        // At the cap with more active locals than existing speakers: one-to-one for as many as possible, the
        // surplus is unassigned (never two on one global).
        let cost = array![[0.1], [0.2], [0.9]];
        let a = assign_local_to_global(cost.view(), &[true, true, true], 0, 0.5);
        assert_eq!(
            a,
            vec![
                Assignment::Global(0),
                Assignment::Unassigned,
                Assignment::Unassigned
            ]
        );
        // No speakers and no slots at all.
        let empty = Array2::<f32>::zeros((2, 0));
        let a = assign_local_to_global(empty.view(), &[true, true], 0, 0.5);
        assert_eq!(a, vec![Assignment::Unassigned, Assignment::Unassigned]);
        // max_new larger than needed never opens more than the active locals.
        let a = assign_local_to_global(empty.view(), &[true, true], 10, 0.5);
        assert_eq!(a, vec![Assignment::New, Assignment::New]);
    }
}
