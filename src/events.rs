//! Typed messages that leave the pipeline for the sinks (stdout formats, RTTM file, dashboard).
//!
//! Every event carries `time`: stream time in seconds since the stream started, derived from the
//! number of 16 kHz samples processed (never the wall clock). The JSON form of each event is the
//! documented schema in `docs/jsonl-schema.md` (`serde` tag `type`, snake_case).

use serde::{Serialize, Serializer};

/// Serialises seconds rounded to the millisecond (stream times and durations).
fn ms<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 1000.0).round() / 1000.0)
}

/// Serialises a float rounded to three decimals.
fn r3<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(((*v as f64) * 1000.0).round() / 1000.0)
}

/// Serialises a level rounded to 0.1 dB.
fn r1<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(((*v as f64) * 10.0).round() / 10.0)
}

/// A speaker label as printed: `S1`, `S2`, ... in order of first appearance (or a name once renamed).
pub type SpeakerLabel = String;

/// Whether a label may still change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Emitted quickly; may be changed later by a `relabel` or a later version of the same turn.
    Tentative,
    /// Will never change again.
    Final,
}

/// One speaker turn: a stretch of speech attributed to one speaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    /// Turn id, unique per stream; later versions of the same turn (extended end, final) reuse it.
    pub id: u64,
    /// Speaker label (`S1`...).
    pub speaker: SpeakerLabel,
    /// Start, seconds of stream time.
    #[serde(serialize_with = "ms")]
    pub start: f64,
    /// End, seconds of stream time.
    #[serde(serialize_with = "ms")]
    pub end: f64,
    /// Tentative or final.
    pub status: Status,
    /// Confidence in [0, 1] that the speaker label is right (mean cosine margin, clamped).
    #[serde(serialize_with = "r3")]
    pub confidence: f32,
}

/// Periodic health and level report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Input level of the last period, dBFS (RMS), -120 for digital silence.
    #[serde(serialize_with = "r1")]
    pub level_db: f32,
    /// Whether the VAD currently hears speech.
    pub speech: bool,
    /// Total samples dropped so far because a ring buffer overflowed (input-rate samples).
    pub dropped_samples: u64,
    /// How far behind live the newest label is, seconds (stream time of audio received minus
    /// stream time of the newest labelled audio).
    #[serde(serialize_with = "ms")]
    pub label_lag: f64,
    /// Processing time per second of audio over the last period (embedding + fbank + VAD), a
    /// real-time factor; 1.0 means the machine just keeps up.
    #[serde(serialize_with = "r3")]
    pub load: f32,
}

/// Everything the pipeline tells its sinks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The stream started.
    Start {
        #[serde(serialize_with = "ms")]
        time: f64,
        /// Input name: file path, `stdin`, or the device name.
        input: String,
        /// Input sample rate and channel count as opened.
        sample_rate: u32,
        channels: u16,
    },
    /// A turn was opened, extended or finalised. Same `id` = same turn.
    Turn {
        #[serde(serialize_with = "ms")]
        time: f64,
        #[serde(flatten)]
        turn: Turn,
    },
    /// A label already emitted changed (the turn `id` now belongs to `to`).
    Relabel {
        #[serde(serialize_with = "ms")]
        time: f64,
        id: u64,
        from: SpeakerLabel,
        to: SpeakerLabel,
        #[serde(serialize_with = "ms")]
        start: f64,
        #[serde(serialize_with = "ms")]
        end: f64,
    },
    /// A new speaker appeared.
    Speaker {
        #[serde(serialize_with = "ms")]
        time: f64,
        speaker: SpeakerLabel,
    },
    /// A speaker was renamed by the user; all later output uses the new name.
    Rename {
        #[serde(serialize_with = "ms")]
        time: f64,
        from: SpeakerLabel,
        to: SpeakerLabel,
    },
    /// A speaker was recognised from a voice profile (`whospoke enroll`): every turn labelled
    /// `speaker`, already emitted or not, belongs to `name`, and later events use `name`. `name` may
    /// also be an `S` label again when a profile's name moved to a clearly better matching speaker.
    Identified {
        #[serde(serialize_with = "ms")]
        time: f64,
        /// The label used so far (`S2`, or a profile name).
        speaker: SpeakerLabel,
        /// The profile's name.
        name: SpeakerLabel,
        /// Cosine similarity of the speaker's voice to the profile.
        #[serde(serialize_with = "r3")]
        similarity: f32,
    },
    /// Audio was lost (ring overflow or device gap). Never silent.
    Dropped {
        #[serde(serialize_with = "ms")]
        time: f64,
        /// Input-rate samples lost in this incident.
        samples: u64,
        /// Total so far.
        total: u64,
        reason: String,
    },
    /// Periodic status.
    Status {
        #[serde(serialize_with = "ms")]
        time: f64,
        #[serde(flatten)]
        health: Health,
    },
    /// The stream ended; all turns are final.
    End {
        #[serde(serialize_with = "ms")]
        time: f64,
        speakers: Vec<SpeakerLabel>,
        dropped_samples: u64,
    },
}

impl Event {
    /// Stream time of the event, seconds.
    pub fn time(&self) -> f64 {
        match self {
            Event::Start { time, .. }
            | Event::Turn { time, .. }
            | Event::Relabel { time, .. }
            | Event::Speaker { time, .. }
            | Event::Rename { time, .. }
            | Event::Identified { time, .. }
            | Event::Dropped { time, .. }
            | Event::Status { time, .. }
            | Event::End { time, .. } => *time,
        }
    }
}

/// Requests from a sink (the dashboard) back to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Give speaker `speaker` (current label, e.g. `S2`) the name `name` in every output from now on.
    Rename { speaker: SpeakerLabel, name: String },
    /// Stop the stream: finalise pending turns, flush outputs and end.
    Stop,
}
