//! The second pass: offline re-clustering of every window embedding of a session once it has ended.
//!
//! The online clusterer decides each window with the centroids as they were at the time (plus the
//! final re-classification `final_delay` later). Once the stream has ended, every window can be
//! judged against centroids that have seen the whole session. [`refine`] does that with spherical
//! k-means initialised by the online centroids: each pass assigns every window to its nearest
//! centroid and recomputes each centroid as the mean of its trusted windows, until no label changes.
//! Two refined centroids closer than `merge_threshold` are one voice split online: they are merged
//! (the older speaker keeps the windows). Speaker indices are those of the online clusterer, so
//! labels stay comparable (speaker `k` is still `S{k+1}`); no speaker is ever created.

use crate::cluster::{dot, normalize};

/// Settings of the second pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ReclusterConfig {
    /// Upper bound on k-means passes (it usually converges in 2-4).
    pub max_iterations: usize,
    /// Refined centroids at least this similar (cosine) are merged into the older speaker.
    pub merge_threshold: f32,
}

impl Default for ReclusterConfig {
    fn default() -> Self {
        Self {
            max_iterations: 10,
            merge_threshold: 0.7,
        }
    }
}

/// One window of the session as the second pass keeps it (about 800 bytes with a 192-dim embedding).
#[derive(Debug, Clone)]
pub struct KeptWindow {
    /// Samples [start, end) of the 16 kHz stream.
    pub start: u64,
    pub end: u64,
    /// Unit-normalised embedding.
    pub unit: Vec<f32>,
    /// Long enough to shape a centroid.
    pub trusted: bool,
}

/// Refined speaker index for each window; `init` are the online (unit) centroids, indexed by speaker.
/// Windows with a degenerate embedding keep speaker 0. Returns an empty vector when there is no
/// centroid.
pub fn refine(windows: &[KeptWindow], init: &[Vec<f32>], cfg: &ReclusterConfig) -> Vec<usize> {
    if init.is_empty() {
        return Vec::new();
    }
    let mut centroids: Vec<Option<Vec<f32>>> = init.iter().cloned().map(Some).collect();
    let mut labels = nearest_all(windows, &centroids);
    for _ in 0..cfg.max_iterations {
        recompute(windows, &labels, &mut centroids);
        merge_close(&mut centroids, cfg.merge_threshold);
        let next = nearest_all(windows, &centroids);
        let changed = next != labels;
        labels = next;
        if !changed {
            break;
        }
    }
    if let Some((i, j, s)) = closest_pair(&centroids) {
        tracing::debug!(
            "second pass: closest speakers S{} and S{}: cosine {s:.3}",
            i + 1,
            j + 1
        );
    }
    labels
}

/// The most similar pair of live centroids.
fn closest_pair(centroids: &[Option<Vec<f32>>]) -> Option<(usize, usize, f32)> {
    let mut best: Option<(usize, usize, f32)> = None;
    for i in 0..centroids.len() {
        for j in i + 1..centroids.len() {
            if let (Some(a), Some(b)) = (&centroids[i], &centroids[j]) {
                let s = dot(a, b);
                if best.is_none_or(|(_, _, bs)| s > bs) {
                    best = Some((i, j, s));
                }
            }
        }
    }
    best
}

fn nearest_all(windows: &[KeptWindow], centroids: &[Option<Vec<f32>>]) -> Vec<usize> {
    windows
        .iter()
        .map(|w| {
            let mut best = (0usize, f32::NEG_INFINITY);
            for (k, c) in centroids.iter().enumerate() {
                if let Some(c) = c {
                    let s = dot(&w.unit, c);
                    if s > best.1 {
                        best = (k, s);
                    }
                }
            }
            best.0
        })
        .collect()
}

/// Each centroid becomes the normalised mean of its trusted windows (unchanged when it has none).
fn recompute(windows: &[KeptWindow], labels: &[usize], centroids: &mut [Option<Vec<f32>>]) {
    let dim = windows.first().map_or(0, |w| w.unit.len());
    let mut sums = vec![vec![0.0f32; dim]; centroids.len()];
    let mut counts = vec![0usize; centroids.len()];
    for (w, &l) in windows.iter().zip(labels) {
        if !w.trusted || w.unit.len() != dim {
            continue;
        }
        for (s, x) in sums[l].iter_mut().zip(&w.unit) {
            *s += x;
        }
        counts[l] += 1;
    }
    for (k, c) in centroids.iter_mut().enumerate() {
        if c.is_some() && counts[k] > 0 {
            let mut m = std::mem::take(&mut sums[k]);
            if normalize(&mut m) {
                *c = Some(m);
            }
        }
    }
}

/// Merges the most similar pair while it is at least `threshold` alike; the younger one disappears.
fn merge_close(centroids: &mut [Option<Vec<f32>>], threshold: f32) {
    while let Some((i, j, s)) = closest_pair(centroids).filter(|p| p.2 >= threshold) {
        tracing::info!(
            "second pass: S{} merged into S{} (cosine {s:.3})",
            j + 1,
            i + 1
        );
        centroids[j] = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        normalize(&mut v);
        v
    }

    fn win(k: u64, v: &[f32]) -> KeptWindow {
        KeptWindow {
            start: k * 8000,
            end: k * 8000 + 24000,
            unit: unit(v),
            trusted: true,
        }
    }

    #[test]
    fn early_window_labelled_against_an_immature_centroid_moves() {
        // The online centroid of speaker 0 leaned towards speaker 1 ([1, 1, 0]) when window 2 was
        // decided; once both centroids have seen the whole session, window 2 belongs to speaker 1.
        let init = vec![unit(&[1.0, 1.0, 0.0]), unit(&[0.0, 1.0, 0.0])];
        let ws = vec![
            win(0, &[1.0, 0.0, 0.0]),
            win(1, &[1.0, 0.1, 0.0]),
            win(2, &[0.5, 0.85, 0.0]),
            win(3, &[0.0, 1.0, 0.0]),
            win(4, &[0.1, 1.0, 0.0]),
        ];
        let online = nearest_all(&ws, &init.iter().cloned().map(Some).collect::<Vec<_>>());
        assert_eq!(online[2], 0);
        let refined = refine(&ws, &init, &ReclusterConfig::default());
        assert_eq!(refined, vec![0, 0, 1, 1, 1]);
    }

    #[test]
    fn a_voice_split_online_is_merged_into_the_older_speaker() {
        let init = vec![
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.1, 1.0, 0.2]),
        ];
        let ws: Vec<KeptWindow> = (0..9)
            .map(|k| match k % 3 {
                0 => win(k, &[1.0, 0.05, 0.0]),
                1 => win(k, &[0.0, 1.0, 0.1]),
                _ => win(k, &[0.05, 1.0, 0.15]),
            })
            .collect();
        let refined = refine(&ws, &init, &ReclusterConfig::default());
        assert!(refined.iter().all(|&l| l < 2), "{refined:?}");
        assert_eq!(refined[0], 0);
        assert_eq!(refined[1], 1);
        assert_eq!(refined[2], 1);
    }

    #[test]
    fn no_centroid_no_labels() {
        assert!(refine(&[win(0, &[1.0, 0.0])], &[], &ReclusterConfig::default()).is_empty());
    }
}
