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
use crate::profiles::WindowLength;
use crate::{Result, SAMPLE_RATE};

/// Samples per tick (10 ms).
pub const TICK: u64 = 160;

/// A turn still going on at the final horizon is finalised up to it once that part is this long
/// (ticks): a long monologue becomes consecutive final turns of one speaker, each final about
/// `final_delay` after it was spoken, instead of staying tentative until it ends.
const LONG_TURN_PIECE: u64 = 100;

/// Trusted windows kept per speaker for "remember this voice" (the latest; at one window every
/// 0.5 s of speech, the last ~3 minutes of the speaker's speech; 192 floats each).
const VOICE_WINDOWS: usize = 360;

/// Final ticks kept behind the finalisation point (2 s), so speech extension by hysteresis
/// (`TurnConfig::extend_max`) and by energy (`TurnConfig::energy_extend_max`) sees the region
/// it continues.
const EXTEND_HISTORY: u64 = 200;

/// A speech edge heard by energy takes the label of the speech it extends from this many ticks
/// inside that speech (see `edge_label_tick`), and a region's first or last run shorter than this
/// takes the speaker of the run it touches (see `absorb_short_edges`).
const EDGE_LABEL_DEPTH: usize = 25;

/// Seconds of frame power the floor for speech edges by energy is measured over.
const FLOOR_WINDOW_S: f64 = 30.0;
/// The floor is this percentile of recent frame power (pauses, room noise).
const FLOOR_PERCENTILE: f32 = 0.10;
/// Frames of speech (by webrtc-vad) whose power gives the speech level for speech edges by
/// energy: the last 30 s of speech, at 30 ms frames.
const SPEECH_LEVEL_FRAMES: usize = 1000;
/// The speech level is this percentile (the median) of those frames' power.
const SPEECH_LEVEL_PERCENTILE: f32 = 0.5;

/// Messages from the analysis thread to this stage.
#[derive(Debug, Clone)]
pub enum Analysis {
    /// A VAD frame: samples [start, end) of the 16 kHz stream.
    Frame {
        start: u64,
        end: u64,
        speech: bool,
        power: f32,
        /// Automatic gain applied before detection, dB.
        gain_db: f32,
        /// When the frame's newest sample entered whospoke (processing-latency measurement).
        arrived: Option<std::time::Instant>,
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
    /// they decide the final speech boundaries and overlapped speech of those ticks. They take
    /// effect just before the `Frame` ending at sample `visible_at` (the frame that completed the
    /// segmentation window; `u64::MAX`: at the end of the stream), however early they arrive, so
    /// the labels do not depend on how the segmentation and analysis threads are scheduled.
    Activity {
        first_tick: u64,
        values: Vec<(f32, f32)>,
        visible_at: u64,
    },
    /// Processing time one compute stage spent on `audio` seconds of audio.
    Load { stage: Stage, audio: f64, busy: f64 },
    /// End of stream at sample `at`.
    End { at: u64 },
}

/// Segmentation results waiting for their frame: (visible_at, first_tick, per-tick values).
type PendingActivity = (u64, u64, Vec<(f32, f32)>);

/// The compute stages that report their load (each runs on its own thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Fbank + CAM++ embeddings (the analysis thread).
    Embedding = 0,
    /// segmentation-3.0 (the segmentation thread).
    Segmentation = 1,
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
    /// With segmentation (hysteresis): a final speech region that `speech_source` opened extends
    /// into the adjacent ticks whose speech probability still reaches this lower threshold ...
    pub extend_threshold: f32,
    /// ... for at most this many seconds before its first and after its last accepted tick
    /// (0: no extension, the default; also none when `extend_threshold >= speech_threshold`).
    pub extend_max: f64,
    /// Speech edges by energy: a final speech region (after the extension above) also takes the
    /// adjacent ticks whose audio stands at least `energy_extend_db` above the recording's floor
    /// (the 10th percentile of frame power over the last 30 s, as received) ...
    pub energy_extend_db: f32,
    /// ... and at most `energy_extend_below_speech` below its speech level (the median power of
    /// the last 30 s of speech): in a quiet room the first bound alone would take breaths and
    /// murmur far under the words; in noise the second alone would take the noise ...
    pub energy_extend_below_speech: f32,
    /// ... for at most this many seconds before its first and after its last tick (0: off). The
    /// detectors clip the quiet onsets and decays of words, which are speech.
    pub energy_extend_max: f64,
    /// The other way: a speech region's first and last ticks whose audio lies more than
    /// `energy_trim_below_speech` under the speech level are not speech ...
    pub energy_trim_below_speech: f32,
    /// ... at most this many seconds at each end of the region (0: off). The segmentation model's
    /// speech probability spills a few hundredths of a second past words into near-silence.
    pub energy_trim_max: f64,
    /// Seconds around an overlap within which the other turn's speaker is taken as the second speaker.
    pub overlap_reach: f64,
    /// A pause shorter than this (seconds) between two final runs of the same speaker does not end
    /// the turn: the runs are joined, pause included (the NIST RT convention counts pauses under
    /// 0.3 s as part of a speaker's segment). The final labels look this far past the horizon to
    /// decide; 0 = off.
    pub min_pause: f64,
    /// At the end of the stream, re-cluster every window of the session and announce the final turns
    /// whose speaker changes by `relabel` events (the second pass, `src/recluster.rs`). Keeps every
    /// window embedding: about 0.8 kB per window, at most 2 windows per second of speech (5.8 MB
    /// per hour).
    pub second_pass: Option<crate::recluster::ReclusterConfig>,
    /// Every message this stage receives is also sent here (`whospoke tune` records a file's
    /// analysis once, then replays it under many settings).
    pub record: Option<Recorder>,
}

/// Where the turn stage copies the messages it receives (see [`TurnConfig::record`]).
#[derive(Debug, Clone)]
pub struct Recorder(pub crossbeam_channel::Sender<Analysis>);

impl PartialEq for Recorder {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl TurnConfig {
    /// Checks the speech extension settings (by hysteresis and by energy): each reach within the
    /// finalised context the tracker keeps.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=EXTEND_HISTORY as f64 / 100.0).contains(&self.extend_max)
            || !(0.0..=1.0).contains(&self.extend_threshold)
        {
            return Err(crate::Error::Config(format!(
                "speech extension must be 0..={} s at a probability in 0..=1, not {} s at {}",
                EXTEND_HISTORY as f64 / 100.0,
                self.extend_max,
                self.extend_threshold
            )));
        }
        if !(0.0..=EXTEND_HISTORY as f64 / 200.0).contains(&self.energy_extend_max)
            || !(0.0..=60.0).contains(&self.energy_extend_db)
            || !(0.0..=100.0).contains(&self.energy_extend_below_speech)
            || !(0.0..=EXTEND_HISTORY as f64 / 200.0).contains(&self.energy_trim_max)
            || !(0.0..=100.0).contains(&self.energy_trim_below_speech)
        {
            return Err(crate::Error::Config(format!(
                "speech extension by energy must be 0..={0} s at 0..=60 dB above the floor and 0..=100 dB \
                 below the speech level, and its trimming 0..={0} s at 0..=100 dB below the speech level, \
                 not {1} s at {2} dB and {3} dB, trimming {4} s at {5} dB",
                EXTEND_HISTORY as f64 / 200.0,
                self.energy_extend_max,
                self.energy_extend_db,
                self.energy_extend_below_speech,
                self.energy_trim_max,
                self.energy_trim_below_speech
            )));
        }
        Ok(())
    }
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            final_delay: 2.0,
            tentative_interval: 0.25,
            status_interval: 1.0,
            speech_source: SpeechSource::Both,
            speech_threshold: 0.5,
            overlap_threshold: 0.5,
            extend_threshold: 0.3,
            extend_max: 0.0,
            energy_extend_db: 6.0,
            energy_extend_below_speech: 35.0,
            energy_extend_max: 0.4,
            energy_trim_below_speech: 40.0,
            energy_trim_max: 0.1,
            overlap_reach: 1.0,
            min_pause: 0.3,
            second_pass: None,
            record: None,
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
    /// Per tick from `first_tick`: its frame's power above the floor at the time, dB.
    above_floor: VecDeque<f32>,
    /// Per tick: the speech level minus its frame's power, dB (-inf before its frame arrived or
    /// while no speech had been heard yet: then only the floor bounds the extension and nothing is
    /// trimmed).
    below_speech: VecDeque<f32>,
    /// Recent frame powers, for the floor (created at the first frame, sized by its length).
    levels: Option<crate::level::RecentLevels>,
    /// Power of the recent frames of speech (by webrtc-vad), for the speech level.
    speech_levels: crate::level::RecentLevels,
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
    /// Automatic gain of the latest frame, dB (reported in status events).
    gain_db: f32,
    last_speech: bool,
    next_status: f64,
    dropped_total: u64,
    /// When the newest frame seen entered whospoke.
    arrived: Option<std::time::Instant>,
    /// Segmentation results received but not yet due: (visible_at, first_tick, values).
    pending_activity: VecDeque<PendingActivity>,
    /// Latest load per [`Stage`]; the busiest stage is the one that falls behind first.
    load: [f32; 2],
    /// Every final turn so far (for the RTTM and the second pass).
    finals: Vec<Turn>,
    /// For each final turn: its speaker index, and whether it is the second voice of an overlap.
    finals_meta: Vec<(usize, bool)>,
    /// Every assigned window of the session, kept for the second pass (when it is on).
    kept: Vec<crate::recluster::KeptWindow>,
    /// Voice profiles that may name speakers (`set_profiles`).
    identity: Option<crate::profiles::Identifier>,
    /// Per speaker: its latest trusted windows (start, end, embedding), at most `VOICE_WINDOWS`,
    /// from which "remember this voice" builds a profile.
    voices: Vec<VecDeque<(u64, u64, Vec<f32>)>>,
    /// Where remembered voices are saved (None: the default profile directory).
    profile_dir: Option<std::path::PathBuf>,
}

/// Joins consecutive runs of the same speaker separated by a pause of fewer than `gap` ticks (the
/// pause becomes part of the run; confidence is averaged over the joined runs' ticks).
fn join_short_pauses(runs: &mut Vec<Run>, gap: u64) {
    if gap == 0 {
        return;
    }
    let mut out: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs.drain(..) {
        match out.last_mut() {
            Some(p) if p.speaker == r.speaker && r.start >= p.end && r.start - p.end < gap => {
                let (lp, lr) = ((p.end - p.start) as f32, (r.end - r.start) as f32);
                p.confidence = (p.confidence * lp + r.confidence * lr) / (lp + lr);
                p.end = r.end;
            }
            _ => out.push(r),
        }
    }
    *runs = out;
}

/// For an energy-only tick `i` (kind 1 in `kinds`), the tick whose label it takes: in the speech
/// region it was grown from (the nearest core tick, kind 2, that reaches it through energy-only
/// ticks; the earlier one on a tie), `EDGE_LABEL_DEPTH` ticks inside that region or its far end.
fn edge_label_tick(kinds: &[u8], i: usize) -> Option<usize> {
    let before = kinds[..i]
        .iter()
        .rposition(|&k| k != 1)
        .filter(|&j| kinds[j] == 2);
    let after = kinds[i..]
        .iter()
        .position(|&k| k != 1)
        .map(|d| i + d)
        .filter(|&j| kinds[j] == 2);
    let from_before = match (before, after) {
        (Some(b), Some(a)) => i - b <= a - i,
        (b, _) => b.is_some(),
    };
    // The first ticks of a region are the least sure of their speaker (the window deciding them
    // may be the previous voice's): take the label from up to EDGE_LABEL_DEPTH ticks inside.
    if from_before {
        let b = before?;
        let start = kinds[..b]
            .iter()
            .rposition(|&k| k != 2)
            .map_or(0, |x| x + 1);
        Some(b.saturating_sub(EDGE_LABEL_DEPTH).max(start))
    } else {
        let a = after?;
        let end = kinds[a..]
            .iter()
            .position(|&k| k != 2)
            .map_or(kinds.len(), |d| a + d);
        Some((a + EDGE_LABEL_DEPTH).min(end - 1))
    }
}

/// A speech region's first or last run shorter than `depth` ticks that touches a run of another
/// speaker takes that speaker (the ticks at a region's edges are the least sure of their speaker:
/// the window deciding them may reach into the neighbouring voice). A region starts after a pause
/// (or after `last`, the last final run) and ends before one; `last` counts as a run it touches
/// (the rest of a long turn finalised in pieces up to a horizon). Adjacent runs of one speaker are
/// then merged.
fn absorb_short_edges(runs: &mut Vec<Run>, last: Option<Run>, depth: u64) {
    let n = runs.len();
    for k in 0..n {
        let r = runs[k];
        if r.end - r.start >= depth {
            continue;
        }
        let starts_region = if k == 0 {
            last.is_none_or(|p| p.end < r.start)
        } else {
            runs[k - 1].end < r.start
        };
        let ends_region = runs.get(k + 1).is_some_and(|x| x.start > r.end);
        let next = runs
            .get(k + 1)
            .filter(|x| x.start == r.end && x.speaker != r.speaker);
        let prev = k
            .checked_sub(1)
            .map_or(last, |j| Some(runs[j]))
            .filter(|x| x.end == r.start && x.speaker != r.speaker);
        if let (true, Some(x)) = (starts_region, next) {
            runs[k].speaker = x.speaker;
        } else if let (true, Some(x)) = (ends_region, prev) {
            runs[k].speaker = x.speaker;
        }
    }
    // Adjacent runs of one speaker become one (a pause under one tick: none).
    join_short_pauses(runs, 1);
}

/// `speech` without the ticks of `inaudible` at the start and end of each of its regions, at most
/// `max` ticks at each end. A region touching either end of the slice may continue past it, so that
/// side is left alone.
fn trim(speech: &[bool], inaudible: &[bool], max: u64) -> Vec<bool> {
    let mut out = speech.to_vec();
    let n = speech.len();
    let mut i = 0;
    while i < n {
        if !speech[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && speech[i] {
            i += 1;
        }
        let end = i;
        let mut lo = start;
        if start > 0 {
            while lo < end && (lo - start) < max as usize && inaudible[lo] {
                out[lo] = false;
                lo += 1;
            }
        }
        if end < n {
            let mut hi = end;
            while hi > lo && (end - hi) < max as usize && inaudible[hi - 1] {
                out[hi - 1] = false;
                hi -= 1;
            }
        }
    }
    out
}

/// `base` grown into the ticks of `extendable` that reach a `base` tick through extendable ticks
/// only, at most `max` ticks away (a stretch of extendable ticks touching no base tick stays out).
fn grow(base: &[bool], extendable: &[bool], max: u64) -> Vec<bool> {
    // Distance (ticks) to the nearest base tick through extendable ticks, forwards and backwards.
    let step = |d: Option<u64>, i: usize| {
        if base[i] {
            Some(0)
        } else if extendable[i] {
            d.map(|x| x + 1)
        } else {
            None
        }
    };
    let mut near = vec![u64::MAX; base.len()];
    let mut d: Option<u64> = None;
    for (i, n) in near.iter_mut().enumerate() {
        d = step(d, i);
        *n = d.unwrap_or(u64::MAX);
    }
    d = None;
    for (i, n) in near.iter_mut().enumerate().rev() {
        d = step(d, i);
        *n = (*n).min(d.unwrap_or(u64::MAX));
    }
    near.iter().map(|&n| n <= max).collect()
}

fn secs(samples: u64) -> f64 {
    samples as f64 / SAMPLE_RATE as f64
}

impl TurnTracker {
    /// New tracker.
    pub fn new(cfg: TurnConfig, cluster: ClusterConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            next_status: cfg.status_interval,
            cfg,
            clusterer: OnlineClusterer::new(cluster)?,
            names: Vec::new(),
            announced: Vec::new(),
            speech: VecDeque::new(),
            seg: VecDeque::new(),
            above_floor: VecDeque::new(),
            below_speech: VecDeque::new(),
            levels: None,
            speech_levels: crate::level::RecentLevels::new(SPEECH_LEVEL_FRAMES),
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
            gain_db: 0.0,
            last_speech: false,
            dropped_total: 0,
            load: [0.0; 2],
            arrived: None,
            pending_activity: VecDeque::new(),
            finals: Vec::new(),
            finals_meta: Vec::new(),
            kept: Vec::new(),
            identity: None,
            voices: Vec::new(),
            profile_dir: None,
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
        let taken = self.user_names();
        let Some(id) = self.identity.as_mut() else {
            return;
        };
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
    /// A window that no current speaker claims but that matches a voice profile naming nobody yet
    /// (`profiles::Identifier::match_new_voice`) starts a speaker at once, named after the profile:
    /// a known voice is named from its first windows instead of after the clusterer has gathered
    /// `new_speaker_windows` of them. Windows shorter than `MatchConfig::naming_window` name a
    /// voice alone only under a stricter bar, and count towards the evidence of its first windows;
    /// the speaker starts from the trusted window that named it or else between the evidence and
    /// the profile.
    fn start_known_voice(
        &mut self,
        embedding: &[f32],
        start: u64,
        end: u64,
        trusted: bool,
    ) -> Option<crate::cluster::Assignment> {
        self.identity.as_ref()?;
        let mut unit = embedding.to_vec();
        if !crate::cluster::normalize(&mut unit) {
            return None;
        }
        let taken = self.user_names();
        let id = self.identity.as_mut()?;
        let length = if trusted {
            WindowLength::Trusted
        } else if secs(end - start) >= id.cfg.naming_window - 1e-6 {
            WindowLength::Naming
        } else {
            WindowLength::Short
        };
        let m = id.match_new_voice(&unit, secs(end), length, self.clusterer.centroids(), |n| {
            taken.iter().any(|t| t == n)
        })?;
        let (p, sim) = (m.profile, m.similarity);
        let name = id.known[p].name.clone();
        let a = self.clusterer.start_speaker(&m.seed)?;
        let _ = self.name(a.speaker);
        tracing::info!(
            "new voice recognised as {name} from its first windows (similarity {sim:.3})"
        );
        if let Some(id) = self.identity.as_mut() {
            id.seed(a.speaker, p);
        }
        self.names[a.speaker] = name;
        Some(a)
    }

    /// Tells the clusterer which speakers carry a profile's name.
    fn sync_named(&mut self) {
        let Some(id) = self.identity.as_ref() else {
            return;
        };
        for i in 0..self.clusterer.num_speakers() {
            let named = id.held(i).is_some();
            self.clusterer.set_named(i, named);
        }
    }

    /// Where "remember this voice" saves profiles (None: the default profile directory).
    pub fn set_profile_dir(&mut self, dir: Option<std::path::PathBuf>) {
        self.profile_dir = dir;
    }

    /// Keeps a trusted window that clearly belongs to its speaker for "remember this voice".
    fn keep_voice(
        &mut self,
        a: &crate::cluster::Assignment,
        start: u64,
        end: u64,
        embedding: &[f32],
        trusted: bool,
    ) {
        if !trusted || a.similarity <= a.runner_up {
            return;
        }
        if self.voices.len() <= a.speaker {
            self.voices.resize_with(a.speaker + 1, VecDeque::new);
        }
        let v = &mut self.voices[a.speaker];
        if v.len() >= VOICE_WINDOWS {
            v.pop_front();
        }
        v.push_back((start, end, embedding.to_vec()));
    }

    /// Remembers the voice of `speaker` (current label) as the profile `name`: renames the speaker
    /// first if needed, builds a profile from its kept windows and saves it in the profile directory
    /// (added to an existing profile of that name). Returns the events to emit: the rename (if
    /// any) and an `Event::Remembered` saying what happened.
    pub fn remember(&mut self, speaker: &str, name: &str) -> Vec<Event> {
        let name = name.trim().to_string();
        let mut out = Vec::new();
        let time = secs(self.now);
        let fail = |speaker: &str, message: String| {
            tracing::warn!("{message}");
            Event::Remembered {
                time,
                speaker: speaker.to_string(),
                saved: false,
                path: String::new(),
                message,
            }
        };
        let Some(i) = self.names.iter().position(|n| n == speaker) else {
            out.push(fail(
                speaker,
                format!("cannot remember {speaker}: no such speaker"),
            ));
            return out;
        };
        if name.is_empty() {
            out.push(fail(
                speaker,
                format!("cannot remember {speaker}: the profile needs a name"),
            ));
            return out;
        }
        if name != speaker {
            match self.rename(speaker, &name) {
                Some(ev) => out.push(ev),
                None => {
                    out.push(fail(
                        speaker,
                        format!(
                            "cannot remember {speaker} as {name}: another speaker is called {name}"
                        ),
                    ));
                    return out;
                }
            }
        }
        let kept = self.voices.get(i).cloned().unwrap_or_default();
        // Speech covered by the kept windows (they overlap; count each sample once).
        let mut covered = 0u64;
        let mut reach = 0u64;
        for (s, e, _) in &kept {
            let s = (*s).max(reach);
            if *e > s {
                covered += e - s;
            }
            reach = reach.max(*e);
        }
        let windows: Vec<Vec<f32>> = kept.into_iter().map(|(_, _, w)| w).collect();
        let source = format!(
            "live session {}, speaker {speaker}, {} windows",
            crate::profiles::utc_now(),
            windows.len()
        );
        let result = crate::profiles::profile_from_windows(
            &name,
            &windows,
            secs(covered),
            &source,
            crate::profiles::MIN_SPEECH_SECONDS,
        )
        .and_then(|p| {
            let store = crate::profiles::ProfileStore::open(self.profile_dir.as_deref())?;
            let (path, updated) = crate::profiles::save_or_merge(&store, &p)?;
            Ok((p, path, updated))
        });
        out.push(match result {
            Ok((p, path, updated)) => {
                let message = format!(
                    "{} the voice profile of {name} ({:.1} s of speech): {}",
                    if updated { "updated" } else { "saved" },
                    p.speech_seconds,
                    path.display()
                );
                tracing::info!("{message}");
                Event::Remembered {
                    time,
                    speaker: name.clone(),
                    saved: true,
                    path: path.display().to_string(),
                    message,
                }
            }
            Err(e) => {
                let why = match e {
                    crate::Error::Config(m) => m,
                    e => e.to_string(),
                };
                fail(&name, format!("cannot remember the voice of {name}: {why}"))
            }
        });
        out
    }

    /// Names given by the user (not by a profile): they block that profile.
    fn user_names(&self) -> Vec<String> {
        let Some(id) = self.identity.as_ref() else {
            return Vec::new();
        };
        self.names
            .iter()
            .enumerate()
            .filter(|&(k, n)| id.held(k).is_none() && *n != format!("S{}", k + 1))
            .map(|(_, n)| n.clone())
            .collect()
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
        if let Some(r) = &self.cfg.record {
            // A closed recorder only means nobody listens any more.
            let _ = r.0.send(msg.clone());
        }
        match msg {
            Analysis::Frame {
                start,
                end,
                speech,
                power,
                gain_db,
                arrived,
            } => {
                self.apply_activity(end);
                self.arrived = arrived.or(self.arrived);
                self.gain_db = gain_db;
                self.power_sum += power as f64 * (end - start) as f64;
                self.power_n += end - start;
                self.last_speech = speech;
                self.add_frame(start, end, speech, power);
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
                self.sync_named();
                let assigned = match self.start_known_voice(&embedding, start, end, trusted) {
                    Some(a) => Some(a),
                    None => self.clusterer.assign(&embedding, t, trusted),
                };
                match assigned {
                    Some(a) => {
                        self.keep_voice(&a, start, end, &embedding, trusted);
                        self.push_window(start, end, embedding, a, trusted)
                    }
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
            Analysis::Activity {
                first_tick,
                values,
                visible_at,
            } => {
                self.pending_activity
                    .push_back((visible_at, first_tick, values));
            }
            Analysis::Load { stage, audio, busy } => {
                if audio > 0.0 {
                    self.load[stage as usize] = (busy / audio) as f32;
                }
            }
            Analysis::End { at } => {
                self.apply_activity(u64::MAX);
                self.now = self.now.max(at);
                if self.clusterer.num_speakers() == 0 {
                    // A recording with only short speech: its short windows still name one speaker
                    // rather than none.
                    for (start, end, embedding) in std::mem::take(&mut self.untrusted) {
                        if let Some(a) = self.clusterer.assign(&embedding, secs(end), true) {
                            self.push_window(start, end, embedding, a, true);
                        }
                    }
                }
                self.update(true, out);
                if let Some(cfg) = self.cfg.second_pass.clone() {
                    self.second_pass(&cfg, out);
                }
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
        trusted: bool,
    ) {
        if self.cfg.second_pass.is_some() {
            let mut unit = embedding.clone();
            crate::cluster::normalize(&mut unit);
            self.kept.push(crate::recluster::KeptWindow {
                start,
                end,
                unit,
                trusted,
            });
        }
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

    /// Applies the segmentation results due before the frame ending at `frame_end`.
    fn apply_activity(&mut self, frame_end: u64) {
        while self
            .pending_activity
            .front()
            .is_some_and(|(at, _, _)| *at <= frame_end)
        {
            let Some((_, first_tick, values)) = self.pending_activity.pop_front() else {
                break;
            };
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
    }

    /// A `turn` event decided now, carrying when the newest audio behind it entered whospoke.
    fn turn_event(&self, turn: Turn) -> Event {
        Event::Turn {
            time: secs(self.now),
            turn,
            arrived: self.arrived,
        }
    }

    fn add_frame(&mut self, start: u64, end: u64, speech: bool, power: f32) {
        let levels = self.levels.get_or_insert_with(|| {
            let frame_s = secs(end.saturating_sub(start).max(1));
            crate::level::RecentLevels::new((FLOOR_WINDOW_S / frame_s).round() as usize)
        });
        levels.push(power);
        if speech {
            self.speech_levels.push(power);
        }
        let db = crate::level::power_db(power);
        let above = db - levels.percentile(FLOOR_PERCENTILE);
        let below = if self.speech_levels.is_empty() {
            f32::NEG_INFINITY
        } else {
            self.speech_levels.percentile(SPEECH_LEVEL_PERCENTILE) - db
        };
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
            self.above_floor[idx] = above;
            self.below_speech[idx] = below;
        }
    }

    fn ensure_len(&mut self, n: usize) {
        while self.speech.len() < n {
            self.speech.push_back(false);
        }
        while self.seg.len() < n {
            self.seg.push_back(None);
        }
        while self.above_floor.len() < n {
            self.above_floor.push_back(f32::NEG_INFINITY);
        }
        while self.below_speech.len() < n {
            self.below_speech.push_back(f32::NEG_INFINITY);
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
                gain_db: self.gain_db,
                speech: self.last_speech,
                dropped_samples: self.dropped_total,
                label_lag,
                load: self.load[0].max(self.load[1]),
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

    /// The final label window `i` would get now, without fixing it.
    fn peek_final_label(&self, i: usize) -> (usize, f32) {
        let w = &self.windows[i];
        if let Some(l) = w.final_label {
            return l;
        }
        match self.clusterer.classify(&w.embedding) {
            Some(a) => (a.speaker, a.confidence()),
            None => (w.tentative, w.confidence),
        }
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

    /// Final speech for ticks [from, to): the ticks `speech_source` accepts (the core), extended by
    /// hysteresis into adjacent ticks whose segmentation speech probability reaches
    /// `extend_threshold`, at most `extend_max` before the first or after the last core tick of a
    /// region (a stretch of such ticks touching no core tick stays silence), then by energy into
    /// adjacent ticks at least `energy_extend_db` above the floor and at most
    /// `energy_extend_below_speech` below the speech level, at most `energy_extend_max`.
    /// Context on both sides (kept history before `from`, ticks after `to` that have arrived) lets
    /// a region extend across the edges of the range.
    ///
    /// Returns the first tick of the context and, per tick from there: 0 silence, 1 speech by
    /// energy only, 2 speech (core or hysteresis).
    fn final_speech(&self, from: u64, to: u64) -> (u64, Vec<u8>) {
        let ticks = |s: f64| (s.max(0.0) * (SAMPLE_RATE / TICK as u32) as f64).round() as u64;
        let mut ext = ticks(self.cfg.extend_max);
        if self.cfg.extend_threshold >= self.cfg.speech_threshold {
            ext = 0;
        }
        let energy = ticks(self.cfg.energy_extend_max);
        let cut = ticks(self.cfg.energy_trim_max);
        if ext == 0 && energy == 0 && cut == 0 {
            let kinds = (from..to)
                .map(|t| 2 * u8::from(self.is_speech(t, true)))
                .collect();
            return (from, kinds);
        }
        let stored = self.first_tick + self.speech.len() as u64;
        let reach = ext + energy + cut;
        let lo = from.saturating_sub(reach).max(self.first_tick).min(from);
        let hi = (to + reach).min(stored).max(to);
        let idx = |t: u64| (t - self.first_tick) as usize;
        let mut speech: Vec<bool> = (lo..hi).map(|t| self.is_speech(t, true)).collect();
        if cut > 0 {
            let inaudible: Vec<bool> = (lo..hi)
                .map(|t| {
                    self.below_speech
                        .get(idx(t))
                        .is_some_and(|&b| b > self.cfg.energy_trim_below_speech)
                })
                .collect();
            speech = trim(&speech, &inaudible, cut);
        }
        if ext > 0 {
            let doubtful: Vec<bool> = (lo..hi)
                .map(|t| matches!(self.seg.get(idx(t)), Some(Some((p, _))) if *p >= self.cfg.extend_threshold))
                .collect();
            speech = grow(&speech, &doubtful, ext);
        }
        let mut kinds: Vec<u8> = speech.iter().map(|&x| 2 * u8::from(x)).collect();
        if energy > 0 {
            let loud: Vec<bool> = (lo..hi)
                .map(|t| {
                    self.above_floor
                        .get(idx(t))
                        .is_some_and(|&a| a >= self.cfg.energy_extend_db)
                        && self
                            .below_speech
                            .get(idx(t))
                            .is_some_and(|&b| b <= self.cfg.energy_extend_below_speech)
                })
                .collect();
            for (k, x) in kinds.iter_mut().zip(grow(&speech, &loud, energy)) {
                if *k == 0 && x {
                    *k = 1;
                }
            }
        }
        (lo, kinds)
    }

    /// Labelled runs over ticks [from, to).
    fn runs(&mut self, from: u64, to: u64, final_mode: bool) -> Vec<Run> {
        self.runs_settled(from, to, to, final_mode)
    }

    /// Labelled runs over ticks [from, to); in final mode, windows first needed at or after tick
    /// `settled` are classified without fixing their final label (a look past the horizon must not
    /// settle labels early).
    fn runs_settled(&mut self, from: u64, to: u64, settled: u64, final_mode: bool) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        let mut conf_sum = 0.0f32;
        let mask = final_mode.then(|| self.final_speech(from, to));
        for t in from..to {
            let kind = match &mask {
                Some((lo, m)) => m[(t - lo) as usize],
                None => 2 * u8::from(self.is_speech(t, false)),
            };
            if kind == 0 {
                continue;
            }
            // Speech by energy alone (a word's quiet edge) belongs to the speech it extends: it
            // takes the label of the nearest tick of that speech.
            let at = match (&mask, kind) {
                (Some((lo, m)), 1) => {
                    edge_label_tick(m, (t - lo) as usize).map_or(t, |i| lo + i as u64)
                }
                _ => t,
            };
            let Some(wi) = self.window_for(at) else {
                continue;
            };
            let (spk, conf) = if final_mode && (t >= settled || at >= settled) {
                self.peek_final_label(wi)
            } else {
                self.window_label(wi, final_mode)
            };
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
        // Runs are read `min_pause` past the horizon, so a run ending just before it is joined to
        // the same speaker's next run when the pause between them is short.
        if horizon > self.final_upto && !self.windows.is_empty() {
            let gap = self.min_pause_ticks();
            let stored = self.first_tick + self.speech.len() as u64;
            let look = if at_end {
                horizon
            } else {
                (horizon + gap).min(stored).max(horizon)
            };
            let mut runs = self.runs_settled(self.final_upto, look, horizon, true);
            absorb_short_edges(&mut runs, self.last_final, EDGE_LABEL_DEPTH as u64);
            join_short_pauses(&mut runs, gap);
            runs.retain(|r| r.start < horizon);
            // The same speaker resuming after a short pause that began before this range (a long
            // turn finalised in pieces up to a horizon inside the pause): the pause joins this run.
            if let (Some(lf), Some(r0)) = (self.last_final, runs.first_mut()) {
                if lf.speaker == r0.speaker && r0.start > lf.end && r0.start - lf.end < gap {
                    r0.start = lf.end.max(self.final_upto);
                }
            }
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

    fn min_pause_ticks(&self) -> u64 {
        (self.cfg.min_pause.max(0.0) * (SAMPLE_RATE / TICK as u32) as f64).round() as u64
    }

    /// The second pass (stream ended): re-clusters every kept window (`recluster::refine`), gives each
    /// final turn the speaker most of its ticks' windows now have (each tick voted by the window
    /// deciding it, as in the live path), and announces each changed turn by a `relabel` event.
    /// The second voice of an overlap follows the refined speaker of the nearest turn that had its
    /// speaker.
    fn second_pass(&mut self, cfg: &crate::recluster::ReclusterConfig, out: &mut Vec<Event>) {
        let labels = crate::recluster::refine(&self.kept, self.clusterer.centroids(), cfg);
        if labels.is_empty() || self.finals.is_empty() {
            return;
        }
        let k = self.clusterer.num_speakers();
        // Windows by centre, to find the one deciding each tick.
        let mut order: Vec<usize> = (0..self.kept.len()).collect();
        let centre = |w: &crate::recluster::KeptWindow| (w.start + w.end) as f64 / 2.0;
        order.sort_by(|&a, &b| centre(&self.kept[a]).total_cmp(&centre(&self.kept[b])));
        let centres: Vec<f64> = order.iter().map(|&i| centre(&self.kept[i])).collect();
        let half = self
            .kept
            .iter()
            .map(|w| (w.end - w.start) as f64 / 2.0)
            .fold(0.0, f64::max);
        let window_at = |c: f64| -> Option<usize> {
            let lo = centres.partition_point(|&x| x < c - half);
            let hi = centres.partition_point(|&x| x <= c + half);
            let covering = (lo..hi)
                .filter(|&j| {
                    let w = &self.kept[order[j]];
                    (w.start as f64) <= c && c < w.end as f64
                })
                .min_by(|&a, &b| (centres[a] - c).abs().total_cmp(&(centres[b] - c).abs()));
            covering
                .or_else(|| {
                    [lo.checked_sub(1), (hi < centres.len()).then_some(hi)]
                        .into_iter()
                        .flatten()
                        .min_by(|&a, &b| (centres[a] - c).abs().total_cmp(&(centres[b] - c).abs()))
                })
                .map(|j| order[j])
        };
        let tick_of = |s: f64| (s * SAMPLE_RATE as f64 / TICK as f64).round() as u64;
        let mut refined: Vec<usize> = self.finals_meta.iter().map(|m| m.0).collect();
        for (i, t) in self.finals.iter().enumerate() {
            let (live, second) = self.finals_meta[i];
            if second {
                continue;
            }
            let mut votes = vec![0u64; k.max(live + 1)];
            for tick in tick_of(t.start)..tick_of(t.end) {
                if let Some(w) = window_at((tick * TICK + TICK / 2) as f64) {
                    if let Some(v) = votes.get_mut(labels[w]) {
                        *v += 1;
                    }
                }
            }
            // Ties keep the live speaker.
            let best = votes.iter().copied().max().unwrap_or(0);
            if best > votes[live] {
                refined[i] = votes.iter().position(|&v| v == best).unwrap_or(live);
            }
        }
        let reach = self.cfg.overlap_reach + 0.5;
        for i in 0..self.finals.len() {
            let (live, second) = self.finals_meta[i];
            if !second {
                continue;
            }
            let t = &self.finals[i];
            let nearest = self
                .finals
                .iter()
                .enumerate()
                .filter(|&(j, _)| self.finals_meta[j] == (live, false))
                .map(|(j, f)| (j, (f.start - t.end).max(t.start - f.end).max(0.0)))
                .filter(|&(_, gap)| gap <= reach)
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((j, _)) = nearest {
                refined[i] = refined[j];
            }
            // A second voice is another speaker than the turn it overlaps: when the refined labels
            // collide, the pair keeps the two live speakers (swapped if need be).
            let under = self
                .finals
                .iter()
                .enumerate()
                .filter(|&(j, _)| !self.finals_meta[j].1)
                .map(|(j, f)| (j, f.end.min(t.end) - f.start.max(t.start)))
                .filter(|&(_, ov)| ov > 0.0)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(j, _)| j);
            if let Some(j) = under {
                if refined[i] == refined[j] {
                    if let Some(other) = [live, self.finals_meta[j].0]
                        .into_iter()
                        .find(|&c| c != refined[j])
                    {
                        refined[i] = other;
                    }
                }
            }
        }
        let mut changed = 0usize;
        for (i, &to) in refined.iter().enumerate() {
            let from = self.finals_meta[i].0;
            if to == from {
                continue;
            }
            changed += 1;
            self.announce(to, out);
            let (from, to) = (self.name(from), self.name(to));
            let t = &self.finals[i];
            out.push(Event::Relabel {
                time: secs(self.now),
                id: t.id,
                from,
                to,
                start: t.start,
                end: t.end,
            });
        }
        tracing::info!(
            "second pass: {} windows re-clustered, {changed} of {} final turns relabelled",
            self.kept.len(),
            self.finals.len()
        );
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
        self.finals_meta.push((r.speaker, false));
        out.push(self.turn_event(turn));
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
                self.finals_meta.push((spk, true));
                out.push(self.turn_event(turn));
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
        // Keep `EXTEND_HISTORY` final ticks: a region continuing past `fu` may still extend.
        while self.first_tick + EXTEND_HISTORY < fu && !self.speech.is_empty() {
            self.speech.pop_front();
            self.seg.pop_front();
            self.above_floor.pop_front();
            self.below_speech.pop_front();
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
                        out.push(self.turn_event(turn));
                    }
                    next_open.push(o);
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.announce(r.speaker, out);
                    let turn = self.turn(id, r, Status::Tentative);
                    out.push(self.turn_event(turn));
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

    /// Feeds the segmentation activity of samples [s, e) (one (speech, overlap) per tick), then the
    /// VAD frame [s, e) with its speech flag.
    fn feed_frame(
        tr: &mut TurnTracker,
        s: u64,
        e: u64,
        speech: bool,
        values: Vec<(f32, f32)>,
        power: f32,
        out: &mut Vec<Event>,
    ) {
        tr.process(
            Analysis::Activity {
                first_tick: s / TICK,
                values,
                visible_at: e,
            },
            out,
        );
        tr.process(
            Analysis::Frame {
                start: s,
                end: e,
                speech,
                power,
                gain_db: 0.0,
                arrived: None,
            },
            out,
        );
    }

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
        run_with(TurnConfig::default(), secs, speaker_at, overlap_at)
    }

    fn run_with(
        cfg: TurnConfig,
        secs: f64,
        speaker_at: impl Fn(f64) -> Option<usize>,
        overlap_at: impl Fn(f64) -> bool,
    ) -> Vec<Event> {
        let mut tr = TurnTracker::new(
            TurnConfig {
                status_interval: 0.0,
                ..cfg
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
            feed_frame(&mut tr, s, e, who.is_some(), values, 0.01, &mut out);
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

    /// Final turns with contiguous pieces of one speaker put together: (speaker, start, end).
    fn regions(ev: &[Event]) -> Vec<(String, f64, f64)> {
        let mut out: Vec<(String, f64, f64)> = Vec::new();
        for t in finals(ev) {
            match out.last_mut() {
                Some(r) if r.0 == t.speaker && (t.start - r.2).abs() < 1e-6 => r.2 = t.end,
                _ => out.push((t.speaker.clone(), t.start, t.end)),
            }
        }
        out
    }

    #[test]
    fn a_pause_shorter_than_min_pause_does_not_end_the_turn() {
        // One voice: 0-3 s, pause 0.21 s, 3.21-6 s, pause 0.6 s, 6.6-9 s; then silence.
        let who =
            |t: f64| (t < 3.0 || (3.21..6.0).contains(&t) || (6.6..9.0).contains(&t)).then_some(0);
        let near = |a: f64, b: f64| (a - b).abs() < 0.05;
        let joined = regions(&run(11.0, who, |_| false));
        assert_eq!(joined.len(), 2, "{joined:?}");
        assert!(
            near(joined[0].1, 0.0) && near(joined[0].2, 6.0),
            "{joined:?}"
        );
        assert!(
            near(joined[1].1, 6.6) && near(joined[1].2, 9.0),
            "{joined:?}"
        );
        assert!(joined.iter().all(|r| r.0 == "S1"), "{joined:?}");
        // Off: every pause splits the turn.
        let cfg = TurnConfig {
            min_pause: 0.0,
            ..TurnConfig::default()
        };
        let split = regions(&run_with(cfg, 11.0, who, |_| false));
        assert_eq!(split.len(), 3, "{split:?}");
        assert!(near(split[0].2, 3.0) && near(split[1].1, 3.21), "{split:?}");
    }

    #[test]
    fn a_short_pause_between_two_speakers_is_kept() {
        // A 0-4 s, B from 4.15 s: different speakers are never joined, however short the pause.
        let who = |t: f64| match t {
            t if t < 4.0 => Some(0),
            t if (4.15..8.0).contains(&t) => Some(1),
            _ => None,
        };
        let r = regions(&run(9.0, who, |_| false));
        assert_eq!(r.len(), 2, "{r:?}");
        assert_ne!(r[0].0, r[1].0, "{r:?}");
        assert!(r[1].1 - r[0].2 > 0.1, "the pause stays silence: {r:?}");
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
    fn remember_renames_and_refuses_too_little_speech() {
        let mut tr = TurnTracker::new(TurnConfig::default(), ClusterConfig::default()).unwrap();
        tr.set_profile_dir(Some(std::env::temp_dir().join("whospoke-never-written")));
        let mut out = Vec::new();
        tr.process(
            Analysis::Window {
                start: 0,
                end: 24000,
                embedding: unit(0),
                trusted: true,
            },
            &mut out,
        );
        let _ = tr.name(1);
        let ev = tr.remember("S1", "Alice");
        assert!(matches!(&ev[0], Event::Rename { from, to, .. } if from == "S1" && to == "Alice"));
        assert!(
            matches!(&ev[1], Event::Remembered { speaker, saved: false, path, message, .. }
                if speaker == "Alice" && path.is_empty() && message.contains("not enough speech")),
            "{ev:?}"
        );
        // A name another speaker has, or an unknown speaker: refused, nothing renamed.
        let ev = tr.remember("S2", "Alice");
        assert!(
            matches!(&ev[..], [Event::Remembered { saved: false, .. }]),
            "{ev:?}"
        );
        assert_eq!(tr.names(), ["Alice", "S2"]);
        let ev = tr.remember("S7", "Bob");
        assert!(
            matches!(&ev[..], [Event::Remembered { saved: false, message, .. }] if message.contains("no such speaker")),
            "{ev:?}"
        );
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

    /// One voice: webrtc-vad says `vad_at(t)`, segmentation `p_at(t)` (overlap 0), every frame at
    /// the same power; 1.5 s windows every 0.5 s inside VAD speech. Returns the union of the final
    /// turns as ticks.
    fn final_speech_ticks(
        cfg: TurnConfig,
        secs: f64,
        vad_at: impl Fn(f64) -> bool,
        p_at: impl Fn(f64) -> f32,
    ) -> Vec<bool> {
        final_speech_ticks_at(cfg, secs, vad_at, p_at, |_| 0.01)
    }

    /// [`final_speech_ticks`] with the frame power (mean square) `power_at(t)`.
    fn final_speech_ticks_at(
        cfg: TurnConfig,
        secs: f64,
        vad_at: impl Fn(f64) -> bool,
        p_at: impl Fn(f64) -> f32,
        power_at: impl Fn(f64) -> f32,
    ) -> Vec<bool> {
        let mut tr = TurnTracker::new(
            TurnConfig {
                status_interval: 0.0,
                ..cfg
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
            let speech = vad_at(s as f64 / 16000.0);
            let first_tick = s / TICK;
            let values = (first_tick..e / TICK)
                .map(|tk| (p_at((tk * TICK) as f64 / 16000.0), 0.0))
                .collect();
            let power = power_at(s as f64 / 16000.0);
            feed_frame(&mut tr, s, e, speech, values, power, &mut out);
            region_start = if speech {
                region_start.or(Some(s))
            } else {
                None
            };
            if e % 8000 < frame && speech {
                let ws = e.saturating_sub(24000).max(region_start.unwrap_or(0));
                tr.process(
                    Analysis::Window {
                        start: ws,
                        end: e,
                        embedding: unit(0),
                        trusted: true,
                    },
                    &mut out,
                );
            }
        }
        tr.process(Analysis::End { at: n * frame }, &mut out);
        let mut ticks = vec![false; (secs * 100.0) as usize];
        for f in finals(&out) {
            let (a, b) = (
                (f.start * 100.0).round() as usize,
                (f.end * 100.0).round() as usize,
            );
            for x in ticks.iter_mut().take(b).skip(a) {
                *x = true;
            }
        }
        ticks
    }

    #[test]
    fn speech_extends_by_hysteresis_only_next_to_agreed_speech_and_only_so_far() {
        // webrtc-vad hears 0.9-4.5 s; segmentation is sure (0.9) in 1.5-3.5 s, doubtful (0.35) in
        // 1.2-1.5 s and 3.5-4.2 s, and also doubtful in 5.0-5.5 s, where webrtc-vad hears nothing.
        let vad = |t: f64| (0.9..4.5).contains(&t);
        let p = |t: f64| {
            if (1.5..3.5).contains(&t) {
                0.9
            } else if (1.2..1.5).contains(&t) || (3.5..4.2).contains(&t) || (5.0..5.5).contains(&t)
            {
                0.35
            } else {
                0.05
            }
        };
        // Without extension (the default thresholds alone): where both agree.
        let plain = final_speech_ticks(TurnConfig::default(), 6.0, vad, p);
        assert_eq!(spans(&plain), vec![(150, 350)]);
        // Hysteresis: the region opens where both agree, then extends through the doubtful ticks
        // before it (0.3 s) and after it, at most 0.5 s; the doubtful 5.0-5.5 s stays silence.
        let cfg = TurnConfig {
            extend_threshold: 0.3,
            extend_max: 0.5,
            ..TurnConfig::default()
        };
        let ext = final_speech_ticks(cfg.clone(), 6.0, vad, p);
        assert_eq!(spans(&ext), vec![(120, 400)]);
        // A threshold above the doubtful probability extends nothing.
        let high = TurnConfig {
            extend_threshold: 0.4,
            ..cfg
        };
        assert_eq!(
            spans(&final_speech_ticks(high, 6.0, vad, p)),
            vec![(150, 350)]
        );
    }

    /// Spans of true ticks as (first, end).
    fn spans(m: &[bool]) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = Vec::new();
        for (i, &x) in m.iter().enumerate() {
            if x && (i == 0 || !m[i - 1]) {
                v.push((i, i));
            }
            if let (true, Some(last)) = (x, v.last_mut()) {
                last.1 = i + 1;
            }
        }
        v
    }

    /// Spans of final speech over 10 s where both detectors hear speech exactly when `agree(t)`
    /// (P(speech) 0.9, else 0.05) and the audio's level is `db_at(t)` dBFS.
    fn energy_spans(
        cfg: TurnConfig,
        agree: impl Fn(f64) -> bool + Copy,
        db_at: impl Fn(f64) -> f32,
    ) -> Vec<(usize, usize)> {
        let p = move |t: f64| if agree(t) { 0.9 } else { 0.05 };
        let power = |t: f64| 10f32.powf(db_at(t) / 10.0);
        spans(&final_speech_ticks_at(cfg, 10.0, agree, p, power))
    }

    #[test]
    fn speech_extends_by_energy_into_quiet_word_edges_above_the_floor_and_only_so_far() {
        // Both detectors hear 2.0-4.0 s. The audio: a floor at -80 dBFS; a soft onset at -55 dBFS
        // (25 dB above the floor) in 1.7-2.0 s and a decay at -65 dBFS (15 dB above it) in
        // 4.0-4.3 s; a -50 dBFS sound in 6.0-6.5 s that no detector calls speech; and a long
        // -55 dBFS tail in 7.0-8.0 s after speech in 6.6-7.0 s.
        let vad = |t: f64| (2.0..4.0).contains(&t) || (6.6..7.0).contains(&t);
        let db = |t: f64| {
            if vad(t) {
                -25.0
            } else if (1.7..2.0).contains(&t) || (7.0..8.0).contains(&t) {
                -55.0
            } else if (4.0..4.3).contains(&t) {
                -65.0
            } else if (6.0..6.5).contains(&t) {
                -50.0
            } else {
                -80.0
            }
        };
        // Default (6 dB above the floor and at most 35 dB under the speech level, -25 dBFS: here
        // -60 dBFS or louder; at most 0.4 s): the onset joins its speech, the decay (40 dB under
        // the speech) does not; the sound without speech next to it stays silence; the long tail
        // joins for 0.4 s only. (Frames are 30 ms: a frame takes the level and decisions of its
        // start, so 1.7 s falls to the frame from 1.71 s and 4.0 s to the one ending at 4.02 s.)
        assert_eq!(
            energy_spans(TurnConfig::default(), vad, db),
            vec![(171, 402), (660, 740)]
        );
        // 45 dB under the speech level also takes the decay.
        let low = TurnConfig {
            energy_extend_below_speech: 45.0,
            ..TurnConfig::default()
        };
        assert_eq!(energy_spans(low, vad, db), vec![(171, 432), (660, 740)]);
        // Off: only what the detectors agree on.
        let off = TurnConfig {
            energy_extend_max: 0.0,
            ..TurnConfig::default()
        };
        assert_eq!(energy_spans(off, vad, db), vec![(201, 400), (660, 700)]);
    }

    #[test]
    fn in_noise_word_edges_a_few_db_above_the_floor_extend_speech() {
        // Noise at -45 dBFS, speech at -25 dBFS in 2.0-4.0 s, its onset at -37 dBFS (8 dB above the
        // noise) in 1.8-2.0 s. The default takes the onset; 20 dB above the floor would not.
        let vad = |t: f64| (2.0..4.0).contains(&t);
        let db = |t: f64| {
            if vad(t) {
                -25.0
            } else if (1.8..2.0).contains(&t) {
                -37.0
            } else {
                -45.0
            }
        };
        assert_eq!(
            energy_spans(TurnConfig::default(), vad, db),
            vec![(180, 402)]
        );
        let high = TurnConfig {
            energy_extend_db: 20.0,
            ..TurnConfig::default()
        };
        assert_eq!(energy_spans(high, vad, db), vec![(201, 400)]);
    }

    #[test]
    fn near_silence_at_the_edges_of_speech_is_trimmed_only_so_far() {
        // Both detectors call 0.5-1.5 s and 2.0-4.0 s speech, but the second's first 0.06 s and
        // last 0.15 s are digital silence (the segmentation model's probability spills past
        // words): the first goes, the last only 0.1 s deep. Speech at -25 dBFS, silence at -100.
        let vad = |t: f64| (0.5..1.5).contains(&t) || (2.0..4.0).contains(&t);
        let db = |t: f64| {
            if (0.5..1.5).contains(&t) || (2.06..3.85).contains(&t) {
                -25.0
            } else {
                -100.0
            }
        };
        assert_eq!(
            energy_spans(TurnConfig::default(), vad, db),
            vec![(51, 150), (207, 390)]
        );
        let off = TurnConfig {
            energy_trim_max: 0.0,
            ..TurnConfig::default()
        };
        assert_eq!(energy_spans(off, vad, db), vec![(51, 150), (201, 400)]);
    }

    #[test]
    fn trim_cuts_inaudible_ticks_at_closed_region_ends_only() {
        let b = |s: &str| s.chars().map(|c| c == '1').collect::<Vec<bool>>();
        let speech = b("0111111100111");
        let quiet = b("0110000110011");
        // Region 1-7: at most two quiet ticks at its start go, and its quiet last tick; the region
        // running into the slice's end is left alone.
        assert_eq!(trim(&speech, &quiet, 2), b("0001111000111"));
        assert_eq!(trim(&speech, &quiet, 1), b("0011111000111"));
        // A region that starts the slice keeps its start; one closed on both sides and quiet
        // throughout goes.
        assert_eq!(trim(&b("1100"), &b("1000"), 5), b("1100"));
        assert_eq!(trim(&b("0110"), &b("1111"), 5), b("0000"));
    }

    #[test]
    fn an_edge_heard_by_energy_takes_the_label_of_the_speech_it_extends() {
        let kinds = [0u8, 1, 2, 2, 1, 1, 1, 0, 1, 1, 1, 2, 1, 1, 2];
        // The label comes from inside the region (here shorter than EDGE_LABEL_DEPTH: its far end).
        assert_eq!(edge_label_tick(&kinds, 1), Some(3));
        assert_eq!(edge_label_tick(&kinds, 4), Some(2));
        assert_eq!(edge_label_tick(&kinds, 6), Some(2));
        // Silence between: tick 8 was grown from the speech after it, though the speech before
        // it is nearer.
        assert_eq!(edge_label_tick(&kinds, 8), Some(11));
        assert_eq!(edge_label_tick(&kinds, 12), Some(11));
        assert_eq!(edge_label_tick(&kinds, 13), Some(14));
        assert_eq!(edge_label_tick(&[1, 1], 0), None);
        let mut long = vec![1u8; 3];
        long.extend([2u8; 40]);
        assert_eq!(edge_label_tick(&long, 0), Some(3 + EDGE_LABEL_DEPTH));
        assert_eq!(
            grow(
                &[false, false, true, false, false, false],
                &[true, true, false, true, true, true],
                2
            ),
            vec![true, true, true, true, true, false]
        );
        // A stretch of extendable ticks touching no base tick stays out.
        assert_eq!(grow(&[false, false], &[true, true], 5), vec![false, false]);
    }

    #[test]
    fn a_short_run_at_the_edge_of_a_region_takes_the_speaker_it_touches() {
        let run = |speaker, start, end| Run {
            speaker,
            start,
            end,
            confidence: 1.0,
        };
        // Region 100..300: 10 ticks of speaker 1 first (a window reaching into the previous voice),
        // then speaker 0; region 400..600: speaker 2, then 20 ticks of speaker 0 at its end;
        // region 700..790: a 10-tick run of speaker 1 inside speaker 2's speech is not at an edge.
        let mut runs = vec![
            run(1, 100, 110),
            run(0, 110, 300),
            run(2, 400, 580),
            run(0, 580, 600),
            run(2, 700, 740),
            run(1, 740, 750),
            run(2, 750, 790),
        ];
        absorb_short_edges(&mut runs, Some(run(3, 0, 50)), EDGE_LABEL_DEPTH as u64);
        let got: Vec<(usize, u64, u64)> =
            runs.iter().map(|r| (r.speaker, r.start, r.end)).collect();
        assert_eq!(
            got,
            vec![
                (0, 100, 300),
                (2, 400, 600),
                (2, 700, 740),
                (1, 740, 750),
                (2, 750, 790)
            ]
        );
        // A run at least EDGE_LABEL_DEPTH long is a turn of its own; so is a run that continues
        // the last final run (no pause before it).
        let mut runs = vec![run(1, 100, 100 + EDGE_LABEL_DEPTH as u64), run(0, 125, 300)];
        absorb_short_edges(&mut runs, None, EDGE_LABEL_DEPTH as u64);
        assert_eq!(runs.len(), 2);
        let mut runs = vec![run(1, 100, 110), run(0, 110, 300)];
        absorb_short_edges(&mut runs, Some(run(1, 50, 100)), EDGE_LABEL_DEPTH as u64);
        assert_eq!(runs[0].speaker, 1);
        // The short end of a long turn finalised in pieces (the last piece ended at the horizon,
        // 100) takes that turn's speaker; a long rest keeps its own.
        let mut runs = vec![run(2, 100, 106), run(2, 200, 300)];
        absorb_short_edges(&mut runs, Some(run(1, 20, 100)), EDGE_LABEL_DEPTH as u64);
        assert_eq!((runs[0].speaker, runs[1].speaker), (1, 2));
        let mut runs = vec![run(2, 100, 100 + EDGE_LABEL_DEPTH as u64), run(2, 200, 300)];
        absorb_short_edges(&mut runs, Some(run(1, 20, 100)), EDGE_LABEL_DEPTH as u64);
        assert_eq!(runs[0].speaker, 2);
    }

    #[test]
    fn speech_extension_settings_out_of_range_are_refused_before_anything_starts() {
        assert!(TurnConfig::default().validate().is_ok());
        for bad in [
            TurnConfig {
                energy_extend_max: 5.0,
                ..TurnConfig::default()
            },
            TurnConfig {
                energy_extend_db: 70.0,
                ..TurnConfig::default()
            },
            TurnConfig {
                extend_max: -1.0,
                ..TurnConfig::default()
            },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("speech extension"), "{e}");
            let cfg = crate::pipeline::Config {
                turns: bad,
                ..crate::pipeline::Config::default()
            };
            assert!(cfg.validate().is_err());
        }
    }
}
