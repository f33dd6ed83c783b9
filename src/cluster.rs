//! Online speaker clustering: each embedding window is assigned to a speaker centroid, or starts a
//! new speaker when it is far from all of them.
//!
//! Guards against phantom speakers: a window far from every centroid is only *pending*; a new
//! speaker is created when `new_speaker_windows` pending windows agree with each other (mutual cosine
//! above `assign_threshold`) within `pending_span` seconds. Short (untrusted, under 1 s of speech)
//! far windows count as pending evidence too, since first turns are often short, but a group needs
//! one trusted window. Until then, a pending window is labelled with its nearest speaker
//! (tentatively). Centroids are running sums of unit embeddings, updated only by confident windows.
//! Speaker indices are 0, 1, 2... in order of creation and never change.
//!
//! Known names (voice profiles, src/profiles.rs): the turn stage marks the speakers that carry a
//! profile's name ([`OnlineClusterer::set_named`]). A far window whose nearest speaker is named is
//! stronger evidence of a new voice, since an unknown voice must never borrow a known name: one
//! fewer agreeing window (`new_speaker_windows` - 1, at least 1) starts a speaker. Without profiles
//! nothing changes.

use crate::{Error, Result};

/// Clustering settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Cosine similarity to a centroid at or above which a window belongs to that speaker.
    pub assign_threshold: f32,
    /// A window below this similarity to every centroid may start a new speaker.
    pub new_speaker_threshold: f32,
    /// Mutually similar far windows needed to create a speaker.
    pub new_speaker_windows: usize,
    /// Pending windows older than this (seconds of stream time) are forgotten.
    pub pending_span: f64,
    /// A window updates its centroid only at or above this similarity.
    pub update_threshold: f32,
    /// Maximum number of speakers (0 = no limit).
    pub max_speakers: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            assign_threshold: 0.40,
            new_speaker_threshold: 0.30,
            new_speaker_windows: 3,
            pending_span: 6.0,
            update_threshold: 0.45,
            max_speakers: 0,
        }
    }
}

impl ClusterConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("assign threshold", self.assign_threshold),
            ("new-speaker threshold", self.new_speaker_threshold),
            ("update threshold", self.update_threshold),
        ] {
            if !(-1.0..=1.0).contains(&v) {
                return Err(Error::Config(format!("{name} must be in [-1, 1], not {v}")));
            }
        }
        if self.new_speaker_windows == 0 {
            return Err(Error::Config(
                "new-speaker windows must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Result of assigning one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// Speaker index (0-based, creation order).
    pub speaker: usize,
    /// Cosine similarity to that speaker's centroid.
    pub similarity: f32,
    /// Similarity to the second-best speaker (-1 if none).
    pub runner_up: f32,
    /// Speakers created by this step (the window's own speaker may be one of them).
    pub created: Option<usize>,
}

impl Assignment {
    /// Confidence in [0, 1]: how clearly the window belongs to its speaker rather than the runner-up.
    pub fn confidence(&self) -> f32 {
        let margin = if self.runner_up <= -1.0 {
            self.similarity
        } else {
            self.similarity - self.runner_up
        };
        (0.5 + margin).clamp(0.0, 1.0)
    }
}

#[derive(Debug, Clone)]
struct Pending {
    time: f64,
    emb: Vec<f32>,
    /// Long enough to be trusted (`may_update`); a speaker starts only from a group holding one.
    trusted: bool,
}

/// The online clusterer.
#[derive(Debug, Clone)]
pub struct OnlineClusterer {
    cfg: ClusterConfig,
    /// Running sums of unit embeddings.
    sums: Vec<Vec<f32>>,
    /// Unit-normalised centroids.
    centroids: Vec<Vec<f32>>,
    counts: Vec<usize>,
    pending: Vec<Pending>,
    /// Per speaker: carries a known name (a voice profile's, set by the turn stage). A far window
    /// whose nearest speaker is named is stronger evidence of a new voice (see the module doc).
    named: Vec<bool>,
}

/// L2-normalises in place; returns false for a zero or non-finite vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !n.is_finite() || n <= 1e-12 {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= n);
    true
}

/// Dot product (cosine for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl OnlineClusterer {
    /// New clusterer with no speakers.
    pub fn new(cfg: ClusterConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            sums: Vec::new(),
            centroids: Vec::new(),
            counts: Vec::new(),
            pending: Vec::new(),
            named: Vec::new(),
        })
    }

    /// Number of speakers so far.
    pub fn num_speakers(&self) -> usize {
        self.centroids.len()
    }

    /// The unit centroids.
    pub fn centroids(&self) -> &[Vec<f32>] {
        &self.centroids
    }

    /// Windows that updated each centroid.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// Marks speaker `speaker` as carrying a known name (or not).
    pub fn set_named(&mut self, speaker: usize, named: bool) {
        if self.named.len() <= speaker {
            self.named.resize(speaker + 1, false);
        }
        self.named[speaker] = named;
    }

    fn is_named(&self, speaker: usize) -> bool {
        self.named.get(speaker).copied().unwrap_or(false)
    }

    /// Agreeing far windows needed to start a speaker when the nearest one is `nearest`:
    /// `new_speaker_windows`, one fewer (at least 1) when it carries a known name, so that an
    /// unknown voice stops borrowing a known name sooner.
    fn windows_needed(&self, nearest: usize) -> usize {
        if self.is_named(nearest) {
            self.cfg.new_speaker_windows.saturating_sub(1).max(1)
        } else {
            self.cfg.new_speaker_windows
        }
    }

    fn at_cap(&self) -> bool {
        self.cfg.max_speakers > 0 && self.centroids.len() >= self.cfg.max_speakers
    }

    /// Best and second-best speaker for a unit embedding, without changing anything.
    pub fn nearest(&self, unit: &[f32]) -> Option<(usize, f32, f32)> {
        let mut best: Option<(usize, f32)> = None;
        let mut second = -1.0f32;
        for (i, c) in self.centroids.iter().enumerate() {
            let s = dot(unit, c);
            match best {
                Some((_, bs)) if s <= bs => second = second.max(s),
                Some((_, bs)) => {
                    second = second.max(bs);
                    best = Some((i, s));
                }
                None => best = Some((i, s)),
            }
        }
        best.map(|(i, s)| (i, s, second))
    }

    fn create(&mut self, unit: &[f32]) -> usize {
        self.sums.push(unit.to_vec());
        self.centroids.push(unit.to_vec());
        self.counts.push(1);
        self.centroids.len() - 1
    }

    fn update(&mut self, speaker: usize, unit: &[f32]) {
        let sum = &mut self.sums[speaker];
        for (s, x) in sum.iter_mut().zip(unit) {
            *s += x;
        }
        let mut c = sum.clone();
        if normalize(&mut c) {
            self.centroids[speaker] = c;
        }
        self.counts[speaker] += 1;
    }

    /// Assigns one embedding observed at stream time `time` (seconds). `may_update` = false for windows
    /// too short to be trusted for centroid updates or speaker creation. Returns `None` only for a
    /// degenerate (zero/NaN) embedding when no speaker exists yet.
    pub fn assign(&mut self, embedding: &[f32], time: f64, may_update: bool) -> Option<Assignment> {
        let mut unit = embedding.to_vec();
        if !normalize(&mut unit) {
            return self.nearest_fallback();
        }
        let Some((best, sim, second)) = self.nearest(&unit) else {
            if !may_update {
                return None;
            }
            let s = self.create(&unit);
            return Some(Assignment {
                speaker: s,
                similarity: 1.0,
                runner_up: -1.0,
                created: Some(s),
            });
        };
        tracing::debug!(
            "window at {time:.2} s: nearest S{} (named {}) at {sim:.3}, runner-up {second:.3}, trusted {may_update}, pending {}",
            best + 1,
            self.is_named(best),
            self.pending.len()
        );
        // A short window far from every speaker is evidence of a new voice too: first turns are
        // often short ("yes", "right, and..."), and a voice whose first turns are all under a
        // second would otherwise lend its speech to the nearest speaker until it talks at length.
        let evidence = may_update || sim < self.cfg.new_speaker_threshold;
        if sim >= self.cfg.assign_threshold || self.at_cap() || !evidence {
            if may_update && sim >= self.cfg.update_threshold {
                self.update(best, &unit);
            }
            return Some(Assignment {
                speaker: best,
                similarity: sim,
                runner_up: second,
                created: None,
            });
        }
        if sim < self.cfg.new_speaker_threshold {
            // Far from everyone: pending evidence for a new speaker.
            self.pending
                .retain(|p| time - p.time <= self.cfg.pending_span);
            self.pending.push(Pending {
                time,
                emb: unit.clone(),
                trusted: may_update,
            });
            if let Some(group) = self.agreeing_group(&unit, self.windows_needed(best)) {
                // Create from the mean of the agreeing pending windows.
                let mut mean = vec![0.0f32; unit.len()];
                for &i in &group {
                    for (m, x) in mean.iter_mut().zip(&self.pending[i].emb) {
                        *m += x;
                    }
                }
                normalize(&mut mean);
                let far_from_all = self
                    .centroids
                    .iter()
                    .all(|c| dot(&mean, c) < self.cfg.new_speaker_threshold);
                if far_from_all {
                    let s = self.create(&mean);
                    self.sums[s] = mean.iter().map(|x| x * group.len() as f32).collect();
                    self.counts[s] = group.len();
                    let mut k = 0;
                    self.pending.retain(|_| {
                        let keep = !group.contains(&k);
                        k += 1;
                        keep
                    });
                    let sim_new = dot(&unit, &self.centroids[s]);
                    return Some(Assignment {
                        speaker: s,
                        similarity: sim_new,
                        runner_up: sim,
                        created: Some(s),
                    });
                }
            }
        }
        // Doubtful: nearest speaker, no update.
        Some(Assignment {
            speaker: best,
            similarity: sim,
            runner_up: second,
            created: None,
        })
    }

    /// Starts a speaker from one window at once (used when the window matches a known voice profile,
    /// src/profiles.rs); pending windows agreeing with it join it. None at the speaker cap or for a
    /// degenerate embedding.
    pub fn start_speaker(&mut self, embedding: &[f32]) -> Option<Assignment> {
        let mut unit = embedding.to_vec();
        if !normalize(&mut unit) || self.at_cap() {
            return None;
        }
        let runner_up = self.nearest(&unit).map_or(-1.0, |(_, s, _)| s);
        let s = self.create(&unit);
        let th = self.cfg.assign_threshold;
        let (agree, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| dot(&p.emb, &unit) >= th);
        self.pending = rest;
        for p in agree {
            self.update(s, &p.emb);
        }
        Some(Assignment {
            speaker: s,
            similarity: dot(&unit, &self.centroids[s]),
            runner_up,
            created: Some(s),
        })
    }

    fn nearest_fallback(&self) -> Option<Assignment> {
        if self.centroids.is_empty() {
            None
        } else {
            Some(Assignment {
                speaker: 0,
                similarity: 0.0,
                runner_up: -1.0,
                created: None,
            })
        }
    }

    /// Indices of pending windows agreeing with `unit` (the newest), if there are enough.
    fn agreeing_group(&self, unit: &[f32], needed: usize) -> Option<Vec<usize>> {
        let group: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| dot(&p.emb, unit) >= self.cfg.assign_threshold)
            .map(|(i, _)| i)
            .collect();
        (group.len() >= needed && group.iter().any(|&i| self.pending[i].trusted)).then_some(group)
    }

    /// Re-assigns an embedding against the current centroids without changing anything (used when a
    /// window's label becomes final, so that speakers created after it can claim it).
    pub fn classify(&self, embedding: &[f32]) -> Option<Assignment> {
        let mut unit = embedding.to_vec();
        if !normalize(&mut unit) {
            return self.nearest_fallback();
        }
        self.nearest(&unit).map(|(s, sim, second)| Assignment {
            speaker: s,
            similarity: sim,
            runner_up: second,
            created: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors around a few well-separated "voices".
    fn voice(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        normalize(&mut v);
        v
    }

    fn noisy(base: &[f32], seed: u64, amount: f32) -> Vec<f32> {
        let n = voice(seed, base.len());
        let mut v: Vec<f32> = base.iter().zip(&n).map(|(b, e)| b + amount * e).collect();
        normalize(&mut v);
        v
    }

    #[test]
    fn labels_in_arrival_order_and_stable() {
        let voices: Vec<Vec<f32>> = (0..3).map(|s| voice(100 + s, 192)).collect();
        let mut c = OnlineClusterer::new(ClusterConfig::default()).unwrap();
        let order = [0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 0, 2, 1, 0];
        let mut labels = Vec::new();
        for (k, &v) in order.iter().enumerate() {
            let e = noisy(&voices[v], 1000 + k as u64, 0.3);
            labels.push(c.assign(&e, k as f64 * 0.5, true).unwrap().speaker);
        }
        // Voice 0 first -> speaker 0, voice 2 second -> speaker 1, voice 1 third -> speaker 2.
        let map = |v: usize| [0, 2, 1][v];
        for (k, &v) in order.iter().enumerate() {
            if k >= 3 && (order[k - 1] != v || order[k.saturating_sub(2)] != v) && k < 13 {
                continue; // windows while a new speaker is still pending may carry the old label
            }
            assert_eq!(labels[k], map(v), "window {k}");
        }
        assert_eq!(c.num_speakers(), 3);
    }

    #[test]
    fn one_odd_window_makes_no_phantom() {
        let a = voice(1, 192);
        let odd = voice(99, 192);
        let mut c = OnlineClusterer::new(ClusterConfig::default()).unwrap();
        for k in 0..10 {
            c.assign(&noisy(&a, k, 0.3), k as f64, true);
        }
        let r = c.assign(&odd, 10.0, true).unwrap();
        assert_eq!(r.speaker, 0);
        for k in 11..20 {
            c.assign(&noisy(&a, k, 0.3), k as f64, true);
        }
        assert_eq!(c.num_speakers(), 1);
    }

    #[test]
    fn cap_is_respected() {
        let cfg = ClusterConfig {
            max_speakers: 2,
            ..ClusterConfig::default()
        };
        let mut c = OnlineClusterer::new(cfg).unwrap();
        for s in 0..5u64 {
            let v = voice(500 + s, 192);
            for k in 0..5 {
                c.assign(&noisy(&v, s * 100 + k, 0.2), (s * 5 + k) as f64, true);
            }
        }
        assert_eq!(c.num_speakers(), 2);
    }

    #[test]
    fn a_new_voice_next_to_named_speakers_starts_sooner() {
        let (a, b) = (voice(1, 192), voice(2, 192));
        // (nearest speaker named, which of b's windows are trusted) -> speakers after each window.
        // Next to a named speaker two agreeing far windows start a speaker (three otherwise); short
        // ones count as evidence, but a speaker never starts from short windows alone.
        for (named, trusted, expect) in [
            (false, [true, true, true], [1, 1, 2]),
            (true, [true, true, true], [1, 2, 2]),
            (true, [false, true, true], [1, 2, 2]),
            (false, [false, true, true], [1, 1, 2]),
            (false, [false, false, false], [1, 1, 1]),
            (true, [false, false, false], [1, 1, 1]),
        ] {
            let mut c = OnlineClusterer::new(ClusterConfig::default()).unwrap();
            for k in 0..5 {
                c.assign(&noisy(&a, k, 0.3), k as f64, true);
            }
            c.set_named(0, named);
            let got: Vec<usize> = (0..3)
                .map(|k| {
                    c.assign(&noisy(&b, 50 + k as u64, 0.3), 10.0 + k as f64, trusted[k]);
                    c.num_speakers()
                })
                .collect();
            assert_eq!(got, expect, "named {named}, trusted {trusted:?}");
        }
    }

    #[test]
    fn zero_embedding_does_not_panic() {
        let mut c = OnlineClusterer::new(ClusterConfig::default()).unwrap();
        assert!(c.assign(&[0.0; 192], 0.0, true).is_none());
        c.assign(&voice(3, 192), 1.0, true);
        assert_eq!(c.assign(&[f32::NAN; 192], 2.0, true).unwrap().speaker, 0);
    }
}
