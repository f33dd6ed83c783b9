//! The VAD stage: 16 kHz mono audio in, fixed-size frames with a smoothed speech decision out.
//!
//! webrtc-vad decides per 10/20/30 ms frame; [`VadGate`] smooths the raw decisions so words are not
//! chopped: an onset needs `onset_frames` voiced frames in a row, `preroll_ms` of audio before the onset
//! is marked as speech too (decisions leave with that much delay), and speech continues for
//! `hangover_ms` after the last voiced frame.

use std::collections::VecDeque;

use crate::{Error, Result, SAMPLE_RATE};

/// Largest frame: 30 ms at 16 kHz.
pub const MAX_FRAME: usize = 480;

/// VAD settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// Frame length in ms: 10, 20 or 30.
    pub frame_ms: u32,
    /// webrtc-vad aggressiveness 0 (least) to 3 (most aggressive in rejecting non-speech).
    pub aggressiveness: u8,
    /// Speech continues this long after the last voiced frame.
    pub hangover_ms: u32,
    /// Audio this long before an onset is included in the speech.
    pub preroll_ms: u32,
    /// Voiced frames in a row needed to start speech.
    pub onset_frames: u32,
    /// Automatic gain for quiet input, applied before the VAD (src/level.rs).
    pub level: crate::level::LevelConfig,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            frame_ms: 30,
            aggressiveness: 3,
            hangover_ms: 150,
            preroll_ms: 60,
            onset_frames: 2,
            level: crate::level::LevelConfig::default(),
        }
    }
}

impl VadConfig {
    /// Samples per frame at 16 kHz.
    pub fn frame_len(&self) -> usize {
        (SAMPLE_RATE as usize * self.frame_ms as usize) / 1000
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if ![10, 20, 30].contains(&self.frame_ms) {
            return Err(Error::Config(format!(
                "VAD frame length must be 10, 20 or 30 ms, not {}",
                self.frame_ms
            )));
        }
        if self.aggressiveness > 3 {
            return Err(Error::Config(format!(
                "VAD aggressiveness must be 0..=3, not {}",
                self.aggressiveness
            )));
        }
        if self.onset_frames == 0 {
            return Err(Error::Config("VAD onset frames must be at least 1".into()));
        }
        Ok(())
    }
}

/// One frame of 16 kHz audio with its speech decision: the message on the ring from the VAD thread to
/// the analysis thread. Fixed size, so the ring never allocates.
#[derive(Clone, Copy)]
pub struct VadFrame {
    /// Index of the first sample in the 16 kHz stream.
    pub start: u64,
    /// Valid samples in `samples` (the frame length; shorter only for the last frame of a stream).
    pub len: u16,
    /// Smoothed decision.
    pub speech: bool,
    /// Mean square of the frame as received (for the level meter).
    pub power: f32,
    /// Automatic gain applied to `samples`, dB (src/level.rs).
    pub gain_db: f32,
    /// Input samples (per channel, at the input rate) lost just before this frame; the frame's audio
    /// then starts after a stretch of inserted silence that keeps stream time true.
    pub dropped: u64,
    /// When the newest input sample of this frame entered whospoke (the capture callback, or the
    /// file/stdin reader), for measuring processing latency; None when unknown.
    pub arrived: Option<std::time::Instant>,
    /// The audio.
    pub samples: [f32; MAX_FRAME],
}

impl VadFrame {
    /// The valid samples.
    pub fn audio(&self) -> &[f32] {
        &self.samples[..self.len as usize]
    }
    /// One past the last sample index.
    pub fn end(&self) -> u64 {
        self.start + self.len as u64
    }
}

impl Default for VadFrame {
    fn default() -> Self {
        Self {
            start: 0,
            len: 0,
            speech: false,
            power: 0.0,
            gain_db: 0.0,
            dropped: 0,
            arrived: None,
            samples: [0.0; MAX_FRAME],
        }
    }
}

/// Raw-decision smoother (pure logic, testable without audio).
#[derive(Debug)]
pub struct Smoother {
    onset_frames: u32,
    hangover_frames: u32,
    preroll_frames: usize,
    in_speech: bool,
    voiced_run: u32,
    hang_left: u32,
    /// Decisions not yet released (delay line for the pre-roll).
    pending: VecDeque<bool>,
}

impl Smoother {
    /// Builds the smoother for `cfg`.
    pub fn new(cfg: &VadConfig) -> Self {
        let f = cfg.frame_ms.max(1);
        let preroll_frames = cfg.preroll_ms.div_ceil(f) as usize;
        Self {
            onset_frames: cfg.onset_frames.max(1),
            hangover_frames: cfg.hangover_ms.div_ceil(f),
            preroll_frames,
            in_speech: false,
            voiced_run: 0,
            hang_left: 0,
            pending: VecDeque::with_capacity(preroll_frames + cfg.onset_frames as usize + 2),
        }
    }

    /// Frames a decision is held back before release.
    pub fn delay_frames(&self) -> usize {
        self.preroll_frames + self.onset_frames as usize - 1
    }

    /// Feeds one raw decision; returns the decision of the frame leaving the delay line, if any.
    pub fn push(&mut self, voiced: bool) -> Option<bool> {
        if voiced {
            self.voiced_run += 1;
        } else {
            self.voiced_run = 0;
        }
        let decision = if self.in_speech {
            if voiced {
                self.hang_left = self.hangover_frames;
                true
            } else if self.hang_left > 0 {
                self.hang_left -= 1;
                true
            } else {
                self.in_speech = false;
                false
            }
        } else if self.voiced_run >= self.onset_frames {
            self.in_speech = true;
            self.hang_left = self.hangover_frames;
            // The run that triggered the onset, and the pre-roll before it, become speech.
            let back =
                (self.onset_frames as usize - 1 + self.preroll_frames).min(self.pending.len());
            let n = self.pending.len();
            for d in self.pending.iter_mut().skip(n - back) {
                *d = true;
            }
            true
        } else {
            false
        };
        self.pending.push_back(decision);
        if self.pending.len() > self.delay_frames() {
            self.pending.pop_front()
        } else {
            None
        }
    }

    /// Releases the decisions still held back (end of stream).
    pub fn drain(&mut self) -> impl Iterator<Item = bool> + '_ {
        self.pending.drain(..)
    }
}

/// webrtc-vad plus the smoother. Not `Send` (webrtc-vad): build it inside the thread that uses it.
pub struct VadGate {
    vad: webrtc_vad::Vad,
    aggressiveness: u8,
    smoother: Smoother,
    frame_len: usize,
    pcm: [i16; MAX_FRAME],
    /// Frames classified since webrtc-vad was last (re)started, and the current run of non-speech.
    since_reset: u32,
    quiet_run: u32,
}

/// webrtc-vad's adaptive noise and speech models drift over a long stream (missed speech grows by
/// a point or two per hour on the same voices), so the detector is restarted inside a pause
/// (`RESET_QUIET` non-speech frames in a row) once it has run for `RESET_AFTER` frames; it adapts
/// again within a fraction of a second.
const RESET_AFTER: u32 = 4000;
const RESET_QUIET: u32 = 20;

fn new_webrtc(aggressiveness: u8) -> webrtc_vad::Vad {
    let mode = match aggressiveness {
        0 => webrtc_vad::VadMode::Quality,
        1 => webrtc_vad::VadMode::LowBitrate,
        2 => webrtc_vad::VadMode::Aggressive,
        _ => webrtc_vad::VadMode::VeryAggressive,
    };
    webrtc_vad::Vad::new_with_rate_and_mode(webrtc_vad::SampleRate::Rate16kHz, mode)
}

impl VadGate {
    /// Builds the gate.
    pub fn new(cfg: &VadConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            vad: new_webrtc(cfg.aggressiveness),
            aggressiveness: cfg.aggressiveness,
            smoother: Smoother::new(cfg),
            frame_len: cfg.frame_len(),
            pcm: [0; MAX_FRAME],
            since_reset: 0,
            quiet_run: 0,
        })
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Raw webrtc decision for one full frame.
    pub fn classify(&mut self, frame: &[f32]) -> bool {
        if frame.len() != self.frame_len {
            return false;
        }
        for (d, s) in self.pcm.iter_mut().zip(frame) {
            *d = (s.clamp(-1.0, 1.0) * 32767.0) as i16;
        }
        let voiced = self
            .vad
            .is_voice_segment(&self.pcm[..self.frame_len])
            .unwrap_or(false);
        self.since_reset = self.since_reset.saturating_add(1);
        self.quiet_run = if voiced { 0 } else { self.quiet_run + 1 };
        if self.since_reset >= RESET_AFTER && self.quiet_run >= RESET_QUIET {
            self.vad = new_webrtc(self.aggressiveness);
            self.since_reset = 0;
        }
        voiced
    }

    /// Access to the smoother (delay line).
    pub fn smoother(&mut self) -> &mut Smoother {
        &mut self.smoother
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: &VadConfig, raw: &[bool]) -> Vec<bool> {
        let mut s = Smoother::new(cfg);
        let mut out: Vec<bool> = raw.iter().filter_map(|&v| s.push(v)).collect();
        out.extend(s.drain());
        out
    }

    #[test]
    fn smoother_keeps_length_and_order() {
        let cfg = VadConfig::default();
        let raw: Vec<bool> = (0..200).map(|i| (i / 17) % 2 == 0).collect();
        assert_eq!(run(&cfg, &raw).len(), raw.len());
    }

    #[test]
    fn single_voiced_frame_is_not_speech() {
        let cfg = VadConfig::default(); // onset 2 frames
        let mut raw = vec![false; 50];
        raw[20] = true;
        assert!(run(&cfg, &raw).iter().all(|&d| !d));
    }

    #[test]
    fn hangover_and_preroll_extend_speech() {
        let cfg = VadConfig {
            frame_ms: 10,
            hangover_ms: 50,
            preroll_ms: 30,
            onset_frames: 2,
            ..VadConfig::default()
        };
        let mut raw = vec![false; 100];
        for r in raw.iter_mut().take(60).skip(40) {
            *r = true;
        }
        let out = run(&cfg, &raw);
        let first = out.iter().position(|&d| d).unwrap();
        let last = out.iter().rposition(|&d| d).unwrap();
        assert_eq!(first, 40 - 3, "pre-roll of 3 frames");
        assert_eq!(last, 59 + 5, "hangover of 5 frames");
        assert!(out[first..=last].iter().all(|&d| d));
    }

    #[test]
    fn short_pause_inside_speech_is_bridged() {
        let cfg = VadConfig {
            frame_ms: 10,
            hangover_ms: 100,
            ..VadConfig::default()
        };
        let mut raw = vec![true; 80];
        for r in raw.iter_mut().take(45).skip(40) {
            *r = false;
        }
        let out = run(&cfg, &raw);
        assert!(out[10..70].iter().all(|&d| d));
    }

    #[test]
    fn bad_frame_length_rejected() {
        let cfg = VadConfig {
            frame_ms: 25,
            ..VadConfig::default()
        };
        assert!(VadGate::new(&cfg).is_err());
    }

    #[test]
    fn webrtc_hears_speech_not_silence() {
        // Real speech: the reference clip copied into the repo (3 s from the dev set).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/campplus-ref/clip0_wav.f32"
        );
        let bytes = std::fs::read(path).unwrap();
        let wav: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut gate = VadGate::new(&VadConfig::default()).unwrap();
        let n = gate.frame_len();
        let voiced = wav.chunks_exact(n).filter(|f| gate.classify(f)).count();
        let total = wav.len() / n;
        assert!(voiced * 2 > total, "speech clip: {voiced}/{total} voiced");
        let silence = vec![0.0f32; n];
        assert!(!gate.classify(&silence));
        let quiet_noise: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 * 1e-5).collect();
        assert!(!gate.classify(&quiet_noise));
    }
}
