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

/// What happened to the live input device ([`Event::Device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// It stopped delivering audio (unplugged, sound server gone); whospoke is trying to reopen it.
    Lost,
    /// It was reopened and delivers audio again; the gap was silence.
    Resumed,
    /// It did not come back within `--reopen-timeout`; the stream ends (and whospoke exits 1).
    Gone,
}

/// One line for people about an [`Event::Device`] (text output, dashboard, log).
pub fn device_message(
    device: &str,
    state: DeviceState,
    gap_start: f64,
    gap: f64,
    reason: &str,
) -> String {
    match state {
        DeviceState::Lost => {
            format!(
                "input device {device:?} lost at {gap_start:.1} s ({reason}); trying to reopen it"
            )
        }
        DeviceState::Resumed => {
            format!("input device {device:?} is back: {gap:.1} s of silence from {gap_start:.1} s")
        }
        DeviceState::Gone => {
            format!("input device {device:?} lost at {gap_start:.1} s did not come back ({reason})")
        }
    }
}

/// Periodic health and level report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Input level of the last period, dBFS (RMS), -120 for digital silence.
    #[serde(serialize_with = "r1")]
    pub level_db: f32,
    /// Automatic gain applied to quiet input before speech detection, dB (0: none; src/level.rs).
    #[serde(serialize_with = "r1")]
    pub gain_db: f32,
    /// Whether the VAD currently hears speech.
    pub speech: bool,
    /// Total samples dropped so far because a ring buffer overflowed (input-rate samples).
    pub dropped_samples: u64,
    /// How far behind live the newest label is, seconds (stream time of audio received minus
    /// stream time of the newest labelled audio).
    #[serde(serialize_with = "ms")]
    pub label_lag: f64,
    /// Processing time per second of audio over the last period of the busiest compute stage
    /// (fbank + embeddings, or segmentation; each has its own thread), a real-time factor; 1.0
    /// means the machine just keeps up.
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
        /// When the newest audio behind this decision entered whospoke (capture callback or file
        /// reader). Not serialised as is: the JSONL writer turns it into `delay`, the processing
        /// latency at the moment the line leaves the process.
        #[serde(skip)]
        arrived: Option<std::time::Instant>,
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
    /// The answer to a request to remember a speaker's voice (`Control::Remember`, from the
    /// dashboard): whether its voice profile was written, and a sentence saying what happened.
    Remembered {
        #[serde(serialize_with = "ms")]
        time: f64,
        /// The speaker's label (the profile's name when it was saved).
        speaker: SpeakerLabel,
        /// True when the profile file was written.
        saved: bool,
        /// The profile file (empty when not saved).
        path: String,
        /// For people: what was saved, or why nothing was.
        message: String,
    },
    /// The live input device was lost, came back, or was given up on (`--device`/microphone only).
    /// While it is lost, stream time keeps running with silence (the gap), so labels stay aligned
    /// with the wall clock.
    Device {
        #[serde(serialize_with = "ms")]
        time: f64,
        /// The device as opened.
        device: String,
        /// What happened.
        state: DeviceState,
        /// Stream time where the device's audio stopped (the gap starts), seconds.
        #[serde(serialize_with = "ms")]
        gap_start: f64,
        /// Length of the gap, seconds: 0 when `lost`; the whole gap when `resumed` or `gone`.
        #[serde(serialize_with = "ms")]
        gap: f64,
        /// For people: the backend's error, how long it was silent, or how long it was retried.
        reason: String,
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
            | Event::Remembered { time, .. }
            | Event::Device { time, .. }
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
    /// Remember speaker `speaker`'s voice as the profile `name` (renaming the speaker to `name`
    /// first if it is called otherwise): a voice profile is built from the speaker's trusted
    /// windows so far and written to the profile directory (added to an existing profile of that
    /// name). Answered by an `Event::Remembered`.
    Remember { speaker: SpeakerLabel, name: String },
    /// Stop the stream: finalise pending turns, flush outputs and end.
    Stop,
}
