//! `whospoke tune`: fits the labelling thresholds to a folder of labelled recordings.
//!
//! The expensive stages (VAD, CAM++ embeddings, segmentation) do not depend on the thresholds
//! searched here, so each file is analysed once ([`record`]: the [`Analysis`] messages the turn stage
//! receives, in order) and only the turn stage is replayed for each candidate setting ([`replay`]).
//! Replaying the exact message sequence gives the same labels as a full run with those settings.
//! Each candidate is scored with the Rust scorer ([`crate::eval`]); the search reports the corpus
//! DER of the defaults next to the best, a leave-one-out estimate (each file scored with the setting
//! that is best on the other files), and recommends the setting closest to the defaults among those
//! within [`NEAR_BEST`] of the best, so a setting is not changed for a gain the data cannot show.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cluster::ClusterConfig;
use crate::eval::{EvalOptions, Report, Rttm, Segment};
use crate::events::{Event, Status};
use crate::pipeline::{Config, Source};
use crate::runtime::ModelPaths;
use crate::turns::{Analysis, Recorder, TurnConfig, TurnTracker};
use crate::{Error, Result};

/// Points of corpus DER within which a setting counts as "as good as the best".
pub const NEAR_BEST: f64 = 0.2;

/// One labelled recording of the folder.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub audio: PathBuf,
    pub reference: PathBuf,
}

/// Audio files of `dir` (wav, flac, mp3, ogg) that have a same-named `.rttm` beside them, by name.
pub fn labelled_files(dir: &Path) -> Result<Vec<Labelled>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let audio = p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
            ["wav", "flac", "mp3", "ogg"].contains(&x.to_ascii_lowercase().as_str())
        });
        let rttm = p.with_extension("rttm");
        if audio && rttm.is_file() {
            out.push(Labelled {
                audio: p,
                reference: rttm,
            });
        }
    }
    out.sort_by(|a, b| a.audio.cmp(&b.audio));
    Ok(out)
}

/// The settings searched (all of them are turn-stage settings, so a replay can change them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// `--threshold`
    pub assign: f32,
    /// `--new-speaker-threshold`
    pub new_speaker: f32,
    /// `--update-threshold`
    pub update: f32,
    /// `--speech-threshold`
    pub speech: f32,
    /// `--overlap-threshold`
    pub overlap: f32,
    /// `--speech-extend-max` (seconds; 0 = no extension)
    pub extend_max: f64,
    /// `--min-pause` (seconds; 0 = every pause splits a turn)
    pub min_pause: f64,
}

impl Setting {
    /// The defaults.
    pub fn default_setting() -> Self {
        let c = ClusterConfig::default();
        let t = TurnConfig::default();
        Self {
            assign: c.assign_threshold,
            new_speaker: c.new_speaker_threshold,
            update: c.update_threshold,
            speech: t.speech_threshold,
            overlap: t.overlap_threshold,
            extend_max: t.extend_max,
            min_pause: t.min_pause,
        }
    }

    /// The command-line flags that select this setting.
    pub fn flags(&self) -> String {
        format!(
            "--threshold {} --new-speaker-threshold {} --update-threshold {} --speech-threshold {} --overlap-threshold {} --speech-extend-max {} --min-pause {}",
            self.assign, self.new_speaker, self.update, self.speech, self.overlap, self.extend_max, self.min_pause
        )
    }

    /// Applies the setting to a base configuration, as the flags would.
    pub fn apply(&self, base: &Config) -> (TurnConfig, ClusterConfig) {
        let cluster = ClusterConfig {
            assign_threshold: self.assign,
            // As main.rs: the new-speaker threshold never exceeds the assign threshold.
            new_speaker_threshold: self.new_speaker.min(self.assign),
            update_threshold: self.update,
            ..base.cluster.clone()
        };
        let turns = TurnConfig {
            speech_threshold: self.speech,
            overlap_threshold: self.overlap,
            extend_max: self.extend_max,
            min_pause: self.min_pause,
            ..base.turns.clone()
        };
        (turns, cluster)
    }

    /// Distance from the defaults (sum of absolute differences), to prefer settings close to them.
    fn distance(&self, d: &Setting) -> f32 {
        (self.assign - d.assign).abs()
            + (self.new_speaker - d.new_speaker).abs()
            + (self.update - d.update).abs()
            + (self.speech - d.speech).abs()
            + (self.overlap - d.overlap).abs()
            + (self.extend_max - d.extend_max).abs() as f32
            + (self.min_pause - d.min_pause).abs() as f32
    }
}

/// The candidate grid: every combination with `new_speaker <= assign`, defaults included (1728).
pub fn grid() -> Vec<Setting> {
    let assign = [0.35f32, 0.40, 0.45, 0.50];
    let new_speaker = [0.20f32, 0.25, 0.30, 0.35];
    let update = [0.45f32, 0.55, 0.65];
    let speech = [0.4f32, 0.5, 0.6];
    let overlap = [0.3f32, 0.4, 0.5];
    // Off, or extension by hysteresis (at `--speech-extend-threshold`) of at most 0.1 s.
    let extend_max = [0.0f64, 0.1];
    // Every pause splits a turn, or one speaker's pauses under 0.3 s do not (the default).
    let min_pause = [0.0f64, 0.3];
    let mut out = Vec::new();
    for &a in &assign {
        for &n in &new_speaker {
            if n > a {
                continue;
            }
            for &u in &update {
                for &s in &speech {
                    for &o in &overlap {
                        for &e in &extend_max {
                            for &m in &min_pause {
                                out.push(Setting {
                                    assign: a,
                                    new_speaker: n,
                                    update: u,
                                    speech: s,
                                    overlap: o,
                                    extend_max: e,
                                    min_pause: m,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Runs the whole pipeline once over `audio` (as fast as possible) and returns the messages the turn
/// stage received, in order.
pub fn record(audio: &Path, base: &Config, models: &ModelPaths) -> Result<Vec<Analysis>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut cfg = base.clone();
    cfg.turns.record = Some(Recorder(tx));
    let source = Source::Stream {
        source: crate::decode::open_file(audio)?,
        realtime: false,
    };
    let running = crate::pipeline::start(source, cfg, models)?;
    for _ in running.events.iter() {}
    running.join()?;
    Ok(rx.try_iter().collect())
}

/// Replays recorded messages through a fresh turn stage; returns the final turns as segments (with
/// the second pass's relabels applied when `turns.second_pass` is set, and then joined as the `--rttm`
/// file's rewrite joins them).
pub fn replay(
    msgs: &[Analysis],
    turns: &TurnConfig,
    cluster: &ClusterConfig,
) -> Result<Vec<Segment>> {
    let mut cfg = turns.clone();
    cfg.record = None;
    cfg.status_interval = 0.0;
    let mut tr = TurnTracker::new(cfg, cluster.clone())?;
    let mut out = Vec::new();
    let mut finals: Vec<(u64, Segment)> = Vec::new();
    for m in msgs {
        tr.process(m.clone(), &mut out);
        for ev in out.drain(..) {
            match ev {
                Event::Turn { turn, .. } if turn.status == Status::Final => {
                    finals.push((turn.id, Segment::new(turn.start, turn.end, turn.speaker)));
                }
                Event::Relabel { id, to, .. } => {
                    for (_, s) in finals.iter_mut().filter(|(i, _)| *i == id) {
                        s.speaker = to.clone();
                    }
                }
                _ => {}
            }
        }
    }
    let segs: Vec<Segment> = finals.into_iter().map(|(_, s)| s).collect();
    if turns.second_pass.is_some() {
        // The second pass's labels are what the `--rttm` file holds, and its rewrite joins one
        // speaker's turns less than `--min-pause` apart (turns the second pass gave one speaker).
        return Ok(crate::output::join_pieces(
            segs,
            turns.min_pause,
            |s| (s.start, s.end, s.speaker.as_str()),
            |s, end| s.end = end,
        ));
    }
    Ok(segs)
}

/// A recorded file ready for replays.
pub struct Recorded {
    pub uri: String,
    pub reference: Vec<Segment>,
    pub duration: Option<f64>,
    pub msgs: Vec<Analysis>,
}

/// Reads the reference of one labelled file (its uri is the reference's first file id).
pub fn load_reference(f: &Labelled) -> Result<(String, Vec<Segment>)> {
    let r = crate::eval::read_rttm(&f.reference)?;
    let stem = f
        .audio
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let key = if r.contains_key(&stem) {
        Some(stem)
    } else {
        r.keys().next().cloned()
    };
    match key {
        Some(k) => {
            let segs = r.get(&k).cloned().unwrap_or_default();
            Ok((k, segs))
        }
        None => Err(Error::Config(format!(
            "{}: no SPEAKER line",
            f.reference.display()
        ))),
    }
}

/// Analyses one labelled file ([`record`]) and loads its reference and duration (from `<uri>.wav`
/// beside the reference, as `whospoke eval` does).
pub fn prepare(f: &Labelled, base: &Config, models: &ModelPaths) -> Result<Recorded> {
    let (uri, reference) = load_reference(f)?;
    let duration = crate::eval::wav_duration(f.reference.with_file_name(format!("{uri}.wav")));
    let msgs = record(&f.audio, base, models)?;
    Ok(Recorded {
        uri,
        reference,
        duration,
        msgs,
    })
}

/// Scores one setting over all recorded files.
pub fn score(files: &[Recorded], base: &Config, s: &Setting, collar: f64) -> Result<Report> {
    let (turns, cluster) = s.apply(base);
    let mut reference = Rttm::new();
    let mut hypothesis = Rttm::new();
    let mut durations = HashMap::new();
    for f in files {
        reference.insert(f.uri.clone(), f.reference.clone());
        hypothesis.insert(f.uri.clone(), replay(&f.msgs, &turns, &cluster)?);
        if let Some(d) = f.duration {
            durations.insert(f.uri.clone(), d);
        }
    }
    let opts = EvalOptions {
        collar,
        skip_overlap: false,
        audio_dir: None,
        durations: Some(durations),
    };
    Ok(crate::eval::evaluate_segments(
        &reference,
        &hypothesis,
        &opts,
    ))
}

/// Result of a search.
pub struct Outcome {
    /// Every candidate with its report, best corpus DER first.
    pub ranked: Vec<(Setting, Report)>,
    /// The defaults' report.
    pub default: Report,
    /// The setting recommended: closest to the defaults within [`NEAR_BEST`] of the best.
    pub recommended: (Setting, Report),
    /// Leave-one-out corpus DER: each file scored with the setting best on the others.
    pub leave_one_out: Option<f64>,
}

/// Corpus DER of a report restricted to (or without) some files.
fn der_of(r: &Report, keep: impl Fn(usize) -> bool) -> f64 {
    let (mut err, mut tot) = (0.0, 0.0);
    for (i, f) in r.files.iter().enumerate() {
        if keep(i) {
            err += f.miss + f.false_alarm + f.confusion;
            tot += f.total;
        }
    }
    if tot > 0.0 {
        err / tot
    } else {
        0.0
    }
}

/// Scores every candidate; `progress` is told each step.
pub fn search(
    files: &[Recorded],
    base: &Config,
    candidates: &[Setting],
    collar: f64,
    mut progress: impl FnMut(usize, usize, &Setting, &Report),
) -> Result<Outcome> {
    let d = Setting::default_setting();
    let mut ranked = Vec::with_capacity(candidates.len());
    for (k, s) in candidates.iter().enumerate() {
        let r = score(files, base, s, collar)?;
        progress(k + 1, candidates.len(), s, &r);
        ranked.push((*s, r));
    }
    let default = match ranked.iter().find(|(s, _)| *s == d) {
        Some((_, r)) => r.clone(),
        None => score(files, base, &d, collar)?,
    };
    ranked.sort_by(|a, b| a.1.der.total_cmp(&b.1.der));
    let Some(best) = ranked.first().map(|(_, r)| r.der) else {
        return Err(Error::Config("no candidate settings".into()));
    };
    let recommended = ranked
        .iter()
        .filter(|(_, r)| r.der <= best + NEAR_BEST / 100.0 + 1e-12)
        .min_by(|a, b| a.0.distance(&d).total_cmp(&b.0.distance(&d)))
        .cloned()
        .unwrap_or_else(|| ranked[0].clone());
    // Leave one out: the setting best on the other files (same rule: closest to the defaults within
    // NEAR_BEST of their best), scored on the held-out file.
    let n = files.len();
    let leave_one_out = (n >= 2).then(|| {
        let (mut err, mut tot) = (0.0, 0.0);
        for held in 0..n {
            let others: Vec<f64> = ranked
                .iter()
                .map(|(_, r)| der_of(r, |i| i != held))
                .collect();
            let b = others.iter().copied().fold(f64::INFINITY, f64::min);
            let pick = (0..ranked.len())
                .filter(|&k| others[k] <= b + NEAR_BEST / 100.0 + 1e-12)
                .min_by(|&x, &y| {
                    ranked[x]
                        .0
                        .distance(&d)
                        .total_cmp(&ranked[y].0.distance(&d))
                })
                .unwrap_or(0);
            let f = &ranked[pick].1.files[held];
            err += f.miss + f.false_alarm + f.confusion;
            tot += f.total;
        }
        if tot > 0.0 {
            err / tot
        } else {
            0.0
        }
    });
    Ok(Outcome {
        ranked,
        default,
        recommended,
        leave_one_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_holds_the_defaults_and_only_valid_pairs() {
        let g = grid();
        assert!(g.contains(&Setting::default_setting()));
        assert!(g.iter().all(|s| s.new_speaker <= s.assign));
    }

    #[test]
    fn flags_parse_back_to_the_same_values() {
        let s = Setting {
            assign: 0.35,
            new_speaker: 0.25,
            update: 0.55,
            speech: 0.4,
            overlap: 0.3,
            extend_max: 0.2,
            min_pause: 0.25,
        };
        let f = s.flags();
        let v: Vec<f64> = f
            .split_whitespace()
            .skip(1)
            .step_by(2)
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(v.len(), 7, "{f}");
        let want = [0.35f32, 0.25, 0.55, 0.4, 0.3];
        assert!(
            want.iter()
                .zip(&v)
                .all(|(w, x)| (*w as f64 - x).abs() < 1e-6),
            "{f}"
        );
        assert_eq!(v[5], 0.2);
        assert_eq!(v[6], 0.25);
    }
}
