//! The clustering stage: turns VAD decisions and window embeddings into speaker turns.
//!
//! Time is kept on a grid of 10 ms ticks. Every speech tick takes the speaker of the embedding
//! window covering it whose centre is nearest (or of the nearest window when none covers it).
//! Labels are *tentative* as soon as a window covers the tick (speech not yet covered inherits the
//! current speaker, so "who speaks now" shows at once) and become *final* `final_delay` seconds
//! later, when each window is re-classified against the centroids as they are then (speakers created
//! in the meantime can claim it). A final decision that differs from what was emitted is announced
//! by a `relabel` event.

use std::collections::VecDeque;

use crate::cluster::{ClusterConfig, OnlineClusterer};
use crate::events::{Event, Health, Status, Turn};
use crate::{Result, SAMPLE_RATE};

/// Samples per tick (10 ms).
pub const TICK: u64 = 160;

/// A turn still going on at the final horizon is finalised up to it once that part is this long
/// (ticks): a long monologue becomes consecutive final turns of one speaker, each final about
/// `final_delay` after it was spoken, instead of staying tentative until it ends.
const LONG_TURN_PIECE: u64 = 100;

/// Messages from the analysis thread to this stage.
#[derive(Debug, Clone)]
pub enum Analysis {
    /// A VAD frame: samples [start, end) of the 16 kHz stream.
    Frame {
        start: u64,
        end: u64,
        speech: bool,
        power: f32,
    },
    /// One embedding window over samples [start, end). `trusted` = long enough to update centroids.
    Window {
        start: u64,
        end: u64,
        embedding: Vec<f32>,
        trusted: bool,
    },
    /// Audio was lost at stream sample `at` (input-rate samples, running total).
    Dropped {
        at: u64,
        samples: u64,
        total: u64,
        reason: String,
    },
    /// Segmentation-based speech and overlap probabilities for ticks `first_tick..` (10 ms each);
    /// they decide the final speech boundaries and overlapped speech of those ticks.
    Activity {
        first_tick: u64,
        values: Vec<(f32, f32)>,
    },
    /// Processing time spent on `audio` seconds of audio.
    Load { audio: f64, busy: f64 },
    /// End of stream at sample `at`.
    End { at: u64 },
}

/// Which detector decides the final speech boundaries when segmentation is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpeechSource {
    /// webrtc-vad alone.
    Vad,
    /// segmentation-3.0 alone.
    Seg,
    /// Speech where both agree (fewest false alarms; robust to noise).
    Both,
    /// Speech where either hears it (fewest misses).
    Either,
}

/// Labelling and emission settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// Seconds after which labels become final.
    pub final_delay: f64,
    /// Re-emit a growing tentative turn at most this often (seconds of stream time).
    pub tentative_interval: f64,
    /// Status events every this many seconds of stream time (0 = never).
    pub status_interval: f64,
    /// With segmentation: which detector decides final speech.
    pub speech_source: SpeechSource,
    /// With segmentation: speech when the mean speech probability reaches this.
    pub speech_threshold: f32,
    /// With segmentation: overlapped speech (a second speaker) when the mean probability reaches this.
    pub overlap_threshold: f32,
    /// Seconds around an overlap within which the other turn's speaker is taken as the second speaker.
    pub overlap_reach: f64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            final_delay: 2.0,
            tentative_interval: 0.25,
            status_interval: 1.0,
            speech_source: SpeechSource::Both,
            speech_threshold: 0.5,
            overlap_threshold: 0.3,
            overlap_reach: 1.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Win {
    start: u64,
    end: u64,
    embedding: Vec<f32>,
    tentative: usize,
    confidence: f32,
    final_label: Option<(usize, f32)>,
}

impl Win {
    fn center(&self) -> f64 {
        (self.start + self.end) as f64 / 2.0
    }
}

#[derive(Debug, Clone)]
struct OpenTurn {
    id: u64,
    speaker: usize,
    start: u64,
    end: u64,
    last_emit_end: u64,
}

/// One labelled run of ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    speaker: usize,
    start: u64, // tick
    end: u64,   // tick, exclusive
    confidence: f32,
}

/// The clustering/labelling stage. Feed it [`Analysis`] messages; it returns [`Event`]s.
pub struct TurnTracker {
    cfg: TurnConfig,
    clusterer: OnlineClusterer,
    names: Vec<String>,
    announced: Vec<bool>,
    /// Speech flag per tick from `first_tick` (VAD), and the segmentation's (speech, overlap)
    /// probabilities when they have arrived.
    speech: VecDeque<bool>,
    seg: VecDeque<Option<(f32, f32)>>,
    /// Windows too short to start the first speaker (used at the end if no speaker ever started).
    untrusted: Vec<(u64, u64, Vec<f32>)>,
    /// The last final run (its speaker can be the second voice of an overlap that follows).
    last_final: Option<Run>,
    first_tick: u64,
    /// Ticks before this are final and emitted.
    final_upto: u64,
    /// Windows that may still matter for unfinalised ticks.
    windows: VecDeque<Win>,
    /// The newest window ever seen (for labels of uncovered speech).
    last_window_end: u64,
    open: Vec<OpenTurn>,
    next_id: u64,
    /// Stream position in samples.
    now: u64,
    // status
    power_sum: f64,
    power_n: u64,
    last_speech: bool,
    next_status: f64,
    dropped_total: u64,
    load: f32,
    /// Every final turn so far (for the RTTM and the second pass).
    finals: Vec<Turn>,
    /// Voice profiles that may name speakers (`set_profiles`).
    identity: Option<crate::profiles::Identifier>,
}

fn secs(samples: u64) -> f64 {
    samples as f64 / SAMPLE_RATE as f64
}

impl TurnTracker {
    /// New tracker.
    pub fn new(cfg: TurnConfig, cluster: ClusterConfig) -> Result<Self> {
        Ok(Self {
            next_status: cfg.status_interval,
            cfg,
            clusterer: OnlineClusterer::new(cluster)?,
            names: Vec::new(),
            announced: Vec::new(),
            speech: VecDeque::new(),
            seg: VecDeque::new(),
            untrusted: Vec::new(),
            last_final: None,
            first_tick: 0,
            final_upto: 0,
            windows: VecDeque::new(),
            last_window_end: 0,
            open: Vec::new(),
            next_id: 1,
            now: 0,
            power_sum: 0.0,
            power_n: 0,
            last_speech: false,
            dropped_total: 0,
            load: 0.0,
            finals: Vec::new(),
            identity: None,
        })
    }

    // --- Known speakers (voice profiles, src/profiles.rs) ---------------------------------------

    /// Lets these profiles name speakers whose voice matches them confidently (see
    /// `profiles::Identifier`); each naming is announced by an `Event::Identified`.
    pub fn set_profiles(
        &mut self,
        known: Vec<crate::profiles::KnownSpeaker>,
        cfg: crate::profiles::MatchConfig,
    ) {
        self.identity = (!known.is_empty()).then(|| crate::profiles::Identifier::new(known, cfg));
    }

    /// Compares the speakers' centroids with the profiles; renames the matches.
    fn identify(&mut self, out: &mut Vec<Event>) {
        let Some(id) = self.identity.as_mut() else {
            return;
        };
        // Names given by the user (not by a profile) block that profile.
        let taken: Vec<String> = self
            .names
            .iter()
            .enumerate()
            .filter(|&(k, n)| id.held(k).is_none() && *n != format!("S{}", k + 1))
            .map(|(_, n)| n.clone())
            .collect();
        let changes = id.check(self.clusterer.centroids(), self.clusterer.counts(), |n| {
            taken.iter().any(|t| t == n)
        });
        for c in changes {
            let new = match c.profile {
                Some(p) => self.identity.as_ref().expect("set").known[p].name.clone(),
                None => format!("S{}", c.speaker + 1),
            };
            let old = self.name(c.speaker);
            self.names[c.speaker] = new.clone();
            tracing::info!("{old} recognised as {new} (similarity {:.3})", c.similarity);
            // Not yet announced: its `speaker` event will carry the name.
            if self.announced[c.speaker] && old != new {
                out.push(Event::Identified {
                    time: secs(self.now),
                    speaker: old,
                    name: new,
                    similarity: c.similarity,
                });
            }
        }
    }
    // ---------------------------------------------------------------------------------------------

    /// Final turns so far.
    pub fn final_turns(&self) -> &[Turn] {
        &self.finals
    }

    /// Current display names, by speaker index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Renames a speaker (by its current label). Returns the event to emit, or None if unknown.
    pub fn rename(&mut self, speaker: &str, name: &str) -> Option<Event> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        if self.names.iter().any(|n| n == name) {
            tracing::warn!("rename refused: {name} is already a speaker's name");
            return None;
        }
        let i = self.names.iter().position(|n| n == speaker)?;
        if let Some(id) = self.identity.as_mut() {
            id.pin(i); // the user's name wins over profiles
        }
        let from = std::mem::replace(&mut self.names[i], name.to_string());
        Some(Event::Rename {
            time: secs(self.now),
            from,
            to: name.to_string(),
        })
    }

    fn name(&mut self, speaker: usize) -> String {
        while self.names.len() <= speaker {
            let n = self.names.len() + 1;
            self.names.push(format!("S{n}"));
            self.announced.push(false);
        }
        self.names[speaker].clone()
    }

    fn announce(&mut self, speaker: usize, out: &mut Vec<Event>) {
        let label = self.name(speaker);
        if !self.announced[speaker] {
            self.announced[speaker] = true;
            out.push(Event::Speaker {
                time: secs(self.now),
                speaker: label,
            });
        }
    }

    /// Processes one message, appending resulting events to `out`.
    pub fn process(&mut self, msg: Analysis, out: &mut Vec<Event>) {
        match msg {
            Analysis::Frame {
                start,
                end,
                speech,
                power,
            } => {
                self.power_sum += power as f64 * (end - start) as f64;
                self.power_n += end - start;
                self.last_speech = speech;
                self.add_frame(start, end, speech);
                self.now = self.now.max(end);
                self.maybe_status(out);
            }
            Analysis::Window {
                start,
                end,
                embedding,
                trusted,
            } => {
                let t = secs(end);
                match self.clusterer.assign(&embedding, t, trusted) {
                    Some(a) => self.push_window(start, end, embedding, a),
                    // Too short to start the first speaker; kept in case nothing better comes.
                    None if self.clusterer.num_speakers() == 0 => {
                        self.untrusted.push((start, end, embedding));
                    }
                    None => {}
                }
                self.identify(out);
                self.update(false, out);
            }
            Analysis::Dropped {
                at,
                samples,
                total,
                reason,
            } => {
                self.dropped_total = total;
                out.push(Event::Dropped {
                    time: secs(at),
                    samples,
                    total,
                    reason,
                });
            }
            Analysis::Activity { first_tick, values } => {
                for (k, v) in values.into_iter().enumerate() {
                    let t = first_tick + k as u64;
                    if t < self.first_tick {
                        continue;
                    }
                    let idx = (t - self.first_tick) as usize;
                    self.ensure_len(idx + 1);
                    self.seg[idx] = Some(v);
                }
            }
            Analysis::Load { audio, busy } => {
                if audio > 0.0 {
                    self.load = (busy / audio) as f32;
                }
            }
            Analysis::End { at } => {
                self.now = self.now.max(at);
                if self.clusterer.num_speakers() == 0 {
                    // A recording with only short speech: its short windows still name one speaker
                    // rather than none.
                    for (start, end, embedding) in std::mem::take(&mut self.untrusted) {
                        if let Some(a) = self.clusterer.assign(&embedding, secs(end), true) {
                            self.push_window(start, end, embedding, a);
                        }
                    }
                }
                self.update(true, out);
                let speakers = self.names.clone();
                out.push(Event::End {
                    time: secs(self.now),
                    speakers,
                    dropped_samples: self.dropped_total,
                });
            }
        }
    }

    /// Keeps an assigned window for labelling its ticks.
    fn push_window(
        &mut self,
        start: u64,
        end: u64,
        embedding: Vec<f32>,
        a: crate::cluster::Assignment,
    ) {
        self.windows.push_back(Win {
            start,
            end,
            embedding,
            tentative: a.speaker,
            confidence: a.confidence(),
            final_label: None,
        });
        self.last_window_end = self.last_window_end.max(end);
    }

    fn add_frame(&mut self, start: u64, end: u64, speech: bool) {
        // Ticks whose start lies in [start, end).
        let t0 = start.div_ceil(TICK);
        let t1 = end.div_ceil(TICK);
        for t in t0..t1 {
            let idx = t.saturating_sub(self.first_tick) as usize;
            if t < self.first_tick {
                continue;
            }
            self.ensure_len(idx + 1);
            self.speech[idx] = speech;
        }
    }

    fn ensure_len(&mut self, n: usize) {
        while self.speech.len() < n {
            self.speech.push_back(false);
        }
        while self.seg.len() < n {
            self.seg.push_back(None);
        }
    }

    fn maybe_status(&mut self, out: &mut Vec<Event>) {
        if self.cfg.status_interval <= 0.0 {
            return;
        }
        let t = secs(self.now);
        if t < self.next_status {
            return;
        }
        self.next_status = t + self.cfg.status_interval;
        let mean = if self.power_n > 0 {
            self.power_sum / self.power_n as f64
        } else {
            0.0
        };
        self.power_sum = 0.0;
        self.power_n = 0;
        let level_db = if mean > 1e-12 {
            (10.0 * mean.log10()) as f32
        } else {
            -120.0
        };
        let labelled = self.last_window_end.max(self.final_upto * TICK);
        let label_lag = if self.last_speech || labelled > 0 {
            (t - secs(labelled)).max(0.0)
        } else {
            0.0
        };
        out.push(Event::Status {
            time: t,
            health: Health {
                level_db,
                speech: self.last_speech,
                dropped_samples: self.dropped_total,
                label_lag,
                load: self.load,
            },
        });
    }

    /// Whether tick `tick` is speech: the VAD decides tentative labels; final ones follow the
    /// segmentation when its probabilities have arrived.
    fn is_speech(&self, tick: u64, final_mode: bool) -> bool {
        if tick < self.first_tick {
            return false;
        }
        let idx = (tick - self.first_tick) as usize;
        let vad = self.speech.get(idx).copied().unwrap_or(false);
        if final_mode {
            if let Some(Some((p, _))) = self.seg.get(idx) {
                let seg = *p >= self.cfg.speech_threshold;
                return match self.cfg.speech_source {
                    SpeechSource::Vad => vad,
                    SpeechSource::Seg => seg,
                    SpeechSource::Both => vad && seg,
                    SpeechSource::Either => vad || seg,
                };
            }
        }
        vad
    }

    fn is_overlap(&self, tick: u64) -> bool {
        tick >= self.first_tick
            && matches!(
                self.seg.get((tick - self.first_tick) as usize),
                Some(Some((p, o))) if *p >= self.cfg.speech_threshold && *o >= self.cfg.overlap_threshold
            )
    }

    fn window_label(&mut self, i: usize, final_mode: bool) -> (usize, f32) {
        if !final_mode {
            let w = &self.windows[i];
            return (w.tentative, w.confidence);
        }
        if let Some(l) = self.windows[i].final_label {
            return l;
        }
        let w = &self.windows[i];
        let l = match self.clusterer.classify(&w.embedding) {
            Some(a) => (a.speaker, a.confidence()),
            None => (w.tentative, w.confidence),
        };
        self.windows[i].final_label = Some(l);
        l
    }

    /// The window deciding tick `t`: nearest centre among covering windows, else nearest window.
    fn window_for(&self, t: u64) -> Option<usize> {
        let c = (t * TICK + TICK / 2) as f64;
        let mut best: Option<(usize, bool, f64)> = None;
        for (i, w) in self.windows.iter().enumerate() {
            let covers = (w.start as f64) <= c && c < w.end as f64;
            let d = (w.center() - c).abs();
            let better = match best {
                None => true,
                Some((_, bc, bd)) => (covers && !bc) || (covers == bc && d <= bd),
            };
            if better {
                best = Some((i, covers, d));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// Labelled runs over ticks [from, to).
    fn runs(&mut self, from: u64, to: u64, final_mode: bool) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        let mut conf_sum = 0.0f32;
        for t in from..to {
            if !self.is_speech(t, final_mode) {
                continue;
            }
            let Some(wi) = self.window_for(t) else {
                continue;
            };
            let (spk, conf) = self.window_label(wi, final_mode);
            match runs.last_mut() {
                Some(r) if r.end == t && r.speaker == spk => {
                    r.end = t + 1;
                    conf_sum += conf;
                    r.confidence = conf_sum / (r.end - r.start) as f32;
                }
                _ => {
                    conf_sum = conf;
                    runs.push(Run {
                        speaker: spk,
                        start: t,
                        end: t + 1,
                        confidence: conf,
                    });
                }
            }
        }
        runs
    }

    fn turn(&mut self, id: u64, r: &Run, status: Status) -> Turn {
        Turn {
            id,
            speaker: self.name(r.speaker),
            start: secs(r.start * TICK),
            end: secs(r.end * TICK),
            status,
            confidence: r.confidence,
        }
    }

    fn update(&mut self, at_end: bool, out: &mut Vec<Event>) {
        let now_tick = self.now / TICK;
        let horizon = if at_end {
            now_tick + 1
        } else {
            let d = (self.cfg.final_delay * SAMPLE_RATE as f64) as u64 / TICK;
            now_tick.saturating_sub(d)
        };
        // 1. Final runs over [final_upto, horizon): emit those that have ended before the horizon.
        if horizon > self.final_upto && !self.windows.is_empty() {
            let runs = self.runs(self.final_upto, horizon, true);
            let mut new_upto = self.final_upto;
            for (k, r) in runs.iter().enumerate() {
                let is_last = k + 1 == runs.len();
                // A run touching the horizon may still grow, unless the stream ended. A long one is
                // finalised up to the horizon in pieces, so no label stays tentative for long.
                if is_last && r.end >= horizon && !at_end {
                    if horizon.saturating_sub(r.start) >= LONG_TURN_PIECE {
                        let piece = Run { end: horizon, ..*r };
                        self.finalise(&piece, out);
                        let prev = if k > 0 {
                            Some(runs[k - 1])
                        } else {
                            self.last_final
                        };
                        self.second_voices(&piece, prev, None, out);
                        self.last_final = Some(piece);
                        new_upto = horizon;
                    }
                    break;
                }
                self.finalise(r, out);
                let prev = if k > 0 {
                    Some(runs[k - 1])
                } else {
                    self.last_final
                };
                self.second_voices(r, prev, runs.get(k + 1).copied(), out);
                self.last_final = Some(*r);
                new_upto = r.end;
            }
            if runs.is_empty() || (at_end && new_upto < horizon) {
                new_upto = horizon;
            } else if let Some(last) = runs.last() {
                if last.end < horizon && new_upto == last.end {
                    // Everything up to the horizon is settled (trailing silence).
                    new_upto = horizon;
                }
            }
            self.advance_final(new_upto, out);
        } else if at_end {
            self.advance_final(horizon, out);
        }
        if at_end {
            return;
        }
        // 2. Tentative runs from final_upto to now; speech not yet covered inherits the last label.
        let mut runs = self.runs(self.final_upto, now_tick, false);
        self.extend_uncovered(&mut runs, now_tick);
        self.emit_tentative(&runs, out);
    }

    fn extend_uncovered(&self, runs: &mut [Run], now_tick: u64) {
        let covered = self.last_window_end.div_ceil(TICK);
        if let Some(last) = runs.last_mut() {
            let mut t = last.end.max(covered.min(last.end));
            while t < now_tick && self.is_speech(t, false) && t == last.end {
                last.end = t + 1;
                t += 1;
            }
        }
    }

    /// The event saying that open turn `o`, emitted as its speaker, now belongs to speaker `to`.
    fn relabel(&mut self, o: &OpenTurn, to: usize) -> Event {
        let from = self.name(o.speaker);
        let to = self.name(to);
        Event::Relabel {
            time: secs(self.now),
            id: o.id,
            from,
            to,
            start: secs(o.start * TICK),
            end: secs(o.end * TICK),
        }
    }

    fn finalise(&mut self, r: &Run, out: &mut Vec<Event>) {
        // Adopt the id of the open tentative turn overlapping most.
        let mut best: Option<(usize, u64)> = None;
        for (i, o) in self.open.iter().enumerate() {
            let ov = r.end.min(o.end).saturating_sub(r.start.max(o.start));
            if ov > 0 && best.is_none_or(|(_, b)| ov > b) {
                best = Some((i, ov));
            }
        }
        let id = match best {
            Some((i, _)) => {
                let o = self.open.remove(i);
                if o.speaker != r.speaker {
                    let ev = self.relabel(&o, r.speaker);
                    out.push(ev);
                }
                o.id
            }
            None => {
                self.next_id += 1;
                self.next_id - 1
            }
        };
        self.announce(r.speaker, out);
        let turn = self.turn(id, r, Status::Final);
        self.finals.push(turn.clone());
        out.push(Event::Turn {
            time: secs(self.now),
            turn,
        });
    }

    /// Overlapped stretches inside the final run `r` get a second, final turn for the speaker of the
    /// neighbouring turn (the one ending or starting nearest to the stretch, within `overlap_reach`).
    fn second_voices(
        &mut self,
        r: &Run,
        prev: Option<Run>,
        next: Option<Run>,
        out: &mut Vec<Event>,
    ) {
        let reach = (self.cfg.overlap_reach * SAMPLE_RATE as f64) as u64 / TICK;
        let mut t = r.start;
        while t < r.end {
            if !self.is_overlap(t) {
                t += 1;
                continue;
            }
            let a = t;
            while t < r.end && self.is_overlap(t) {
                t += 1;
            }
            let b = t;
            let before = prev
                .filter(|p| p.speaker != r.speaker && a.saturating_sub(p.end) <= reach)
                .map(|p| (a.saturating_sub(p.end), p.speaker));
            let after = next
                .filter(|n| n.speaker != r.speaker && n.start.saturating_sub(b) <= reach)
                .map(|n| (n.start.saturating_sub(b), n.speaker));
            let other = match (before, after) {
                (Some(x), Some(y)) => Some(if x.0 <= y.0 { x.1 } else { y.1 }),
                (x, y) => x.or(y).map(|v| v.1),
            };
            if let Some(spk) = other {
                let id = self.next_id;
                self.next_id += 1;
                let run = Run {
                    speaker: spk,
                    start: a,
                    end: b,
                    confidence: 0.5,
                };
                let turn = self.turn(id, &run, Status::Final);
                self.finals.push(turn.clone());
                out.push(Event::Turn {
                    time: secs(self.now),
                    turn,
                });
            }
        }
    }

    /// Moves the final horizon, retiring tentative turns that lie wholly before it, and forgets state
    /// no longer needed.
    fn advance_final(&mut self, upto: u64, out: &mut Vec<Event>) {
        self.final_upto = self.final_upto.max(upto);
        let fu = self.final_upto;
        // Tentative turns wholly before the horizon that matched no final run: superseded.
        let finals_tail: Vec<Turn> = self.finals.iter().rev().take(8).cloned().collect();
        let mut retired = Vec::new();
        self.open.retain(|o| {
            if o.end <= fu {
                retired.push(o.clone());
                false
            } else {
                true
            }
        });
        for o in retired {
            let (s, e) = (secs(o.start * TICK), secs(o.end * TICK));
            let cover = finals_tail
                .iter()
                .filter(|f| f.end > s && f.start < e)
                .max_by(|a, b| {
                    let oa = a.end.min(e) - a.start.max(s);
                    let ob = b.end.min(e) - b.start.max(s);
                    oa.total_cmp(&ob)
                });
            let from = self.name(o.speaker);
            if let Some(f) = cover {
                if f.speaker != from {
                    out.push(Event::Relabel {
                        time: secs(self.now),
                        id: o.id,
                        from,
                        to: f.speaker.clone(),
                        start: s,
                        end: e,
                    });
                }
            }
        }
        // Forget ticks and windows behind the horizon (keep a window-length of context).
        while self.first_tick < fu && !self.speech.is_empty() {
            self.speech.pop_front();
            self.seg.pop_front();
            self.first_tick += 1;
        }
        if self.speech.is_empty() {
            self.first_tick = self.first_tick.max(fu);
        }
        let keep_from = (fu * TICK).saturating_sub(SAMPLE_RATE as u64 * 10);
        while self.windows.len() > 1 && self.windows.front().is_some_and(|w| w.end < keep_from) {
            self.windows.pop_front();
        }
    }

    fn emit_tentative(&mut self, runs: &[Run], out: &mut Vec<Event>) {
        let interval = (self.cfg.tentative_interval * SAMPLE_RATE as f64) as u64 / TICK;
        let mut used = vec![false; self.open.len()];
        let mut next_open = Vec::with_capacity(runs.len());
        for r in runs {
            let mut best: Option<(usize, u64)> = None;
            for (i, o) in self.open.iter().enumerate() {
                if used[i] {
                    continue;
                }
                let ov = r.end.min(o.end).saturating_sub(r.start.max(o.start));
                if ov > 0 && best.is_none_or(|(_, b)| ov > b) {
                    best = Some((i, ov));
                }
            }
            match best {
                Some((i, _)) => {
                    used[i] = true;
                    let mut o = self.open[i].clone();
                    let changed = o.speaker != r.speaker;
                    if changed {
                        let ev = self.relabel(&o, r.speaker);
                        out.push(ev);
                    }
                    o.speaker = r.speaker;
                    o.start = r.start;
                    o.end = r.end;
                    if changed || r.end >= o.last_emit_end + interval.max(1) {
                        o.last_emit_end = r.end;
                        self.announce(r.speaker, out);
                        let turn = self.turn(o.id, r, Status::Tentative);
                        out.push(Event::Turn {
                            time: secs(self.now),
                            turn,
                        });
                    }
                    next_open.push(o);
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.announce(r.speaker, out);
                    let turn = self.turn(id, r, Status::Tentative);
                    out.push(Event::Turn {
                        time: secs(self.now),
                        turn,
                    });
                    next_open.push(OpenTurn {
                        id,
                        speaker: r.speaker,
                        start: r.start,
                        end: r.end,
                        last_emit_end: r.end,
                    });
                }
            }
        }
        // Open turns no longer matched by any run (their speech was re-split): keep them until the
        // final horizon retires them, so their relabel (if any) is announced.
        for (i, o) in self.open.drain(..).enumerate() {
            if !used[i] {
                next_open.push(o);
            }
        }
        next_open.sort_by_key(|o| o.start);
        self.open = next_open;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: usize) -> Vec<f32> {
        // Two clearly different "voices": disjoint halves of the space.
        let mut v = vec![0.0f32; 192];
        for (i, x) in v.iter_mut().enumerate() {
            *x = if (i < 96) == (seed == 0) {
                1.0
            } else {
                0.05 * ((i * 7 + seed) % 5) as f32
            };
        }
        v
    }

    /// Feeds `speaker_at(t)` (None = silence) for `secs` seconds in 30 ms frames, with a 1.5 s window
    /// every 0.5 s inside speech, like the analysis thread.
    fn run(
        secs: f64,
        speaker_at: impl Fn(f64) -> Option<usize>,
        overlap_at: impl Fn(f64) -> bool,
    ) -> Vec<Event> {
        let mut tr = TurnTracker::new(
            TurnConfig {
                status_interval: 0.0,
                ..TurnConfig::default()
            },
            ClusterConfig::default(),
        )
        .unwrap();
        let mut out = Vec::new();
        let frame = 480u64;
        let n = (secs * 16000.0) as u64 / frame;
        let mut region_start: Option<u64> = None;
        for k in 0..n {
            let (s, e) = (k * frame, (k + 1) * frame);
            let t = s as f64 / 16000.0;
            let who = speaker_at(t);
            // Segmentation probabilities for these ticks.
            let first_tick = s / TICK;
            let values: Vec<(f32, f32)> = (first_tick..e / TICK)
                .map(|tk| {
                    let tt = (tk * TICK) as f64 / 16000.0;
                    let sp = if speaker_at(tt).is_some() { 0.9 } else { 0.05 };
                    (sp, if overlap_at(tt) { 0.8 } else { 0.0 })
                })
                .collect();
            tr.process(Analysis::Activity { first_tick, values }, &mut out);
            tr.process(
                Analysis::Frame {
                    start: s,
                    end: e,
                    speech: who.is_some(),
                    power: 0.01,
                },
                &mut out,
            );
            region_start = match (region_start, who.is_some()) {
                (None, true) => Some(s),
                (r, true) => r,
                (_, false) => None,
            };
            if e % 8000 < frame && who.is_some() {
                let ws = e.saturating_sub(24000).max(region_start.unwrap_or(0));
                if let Some(v) = speaker_at((ws + e) as f64 / 32000.0).or(who) {
                    tr.process(
                        Analysis::Window {
                            start: ws,
                            end: e,
                            embedding: unit(v),
                            trusted: true,
                        },
                        &mut out,
                    );
                }
            }
        }
        tr.process(Analysis::End { at: n * frame }, &mut out);
        out
    }

    fn finals(ev: &[Event]) -> Vec<Turn> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Turn { turn, .. } if turn.status == Status::Final => Some(turn.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn two_speakers_get_stable_labels_in_order_and_final_turns() {
        // A 0-4 s, pause, B 4.5-9 s, pause, A 9.5-13 s.
        let who = |t: f64| match t {
            t if t < 4.0 => Some(0),
            t if (4.5..9.0).contains(&t) => Some(1),
            t if (9.5..13.0).contains(&t) => Some(0),
            _ => None,
        };
        let ev = run(14.0, who, |_| false);
        let f = finals(&ev);
        let labels: Vec<&str> = f.iter().map(|t| t.speaker.as_str()).collect();
        assert_eq!(labels.first(), Some(&"S1"));
        assert!(labels.contains(&"S2"));
        // Every final turn's label matches the truth at its middle (S1 = voice 0).
        for t in &f {
            let mid = (t.start + t.end) / 2.0;
            let want = match who(mid) {
                Some(0) => "S1",
                Some(_) => "S2",
                None => continue,
            };
            assert_eq!(t.speaker, want, "{t:?}");
        }
        // Turn ids: each final id once; tentative turns came first.
        let mut ids: Vec<u64> = f.iter().map(|t| t.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), f.len());
        assert!(matches!(ev.last(), Some(Event::End { speakers, .. }) if speakers.len() == 2));
        // The first speaker is announced before the second.
        let spk: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Speaker { speaker, .. } => Some(speaker.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(spk, vec!["S1", "S2"]);
    }

    #[test]
    fn overlap_gets_a_second_voice() {
        // A 0-5 s, B 4.5-10 s: 0.5 s of overlap.
        let who = |t: f64| match t {
            t if t < 4.5 => Some(0),
            t if t < 10.0 => Some(1),
            _ => None,
        };
        let ev = run(11.0, who, |t| (4.5..5.0).contains(&t));
        let f = finals(&ev);
        // Speech between 4.5 and 5.0 is covered by both S1 and S2.
        let covers = |label: &str, t: f64| {
            f.iter()
                .any(|x| x.speaker == label && x.start <= t && t < x.end)
        };
        assert!(covers("S1", 4.7) && covers("S2", 4.7), "{f:#?}");
        // Outside the overlap, one voice only.
        assert!(covers("S1", 2.0) && !covers("S2", 2.0));
        assert!(covers("S2", 8.0) && !covers("S1", 8.0));
    }

    #[test]
    fn rename_applies_to_later_output_and_refuses_duplicates() {
        let mut tr = TurnTracker::new(TurnConfig::default(), ClusterConfig::default()).unwrap();
        let mut out = Vec::new();
        tr.process(
            Analysis::Window {
                start: 0,
                end: 16000,
                embedding: unit(0),
                trusted: true,
            },
            &mut out,
        );
        let _ = tr.name(1);
        assert!(tr.rename("S1", "Alice").is_some());
        assert!(tr.rename("S2", "Alice").is_none(), "duplicate name refused");
        assert!(tr.rename("S9", "Bob").is_none(), "unknown speaker");
        assert_eq!(tr.names()[0], "Alice");
    }
}
