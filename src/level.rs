//! Input level: automatic gain for quiet input, the first step of the VAD thread.
//!
//! webrtc-vad judges speech partly by its absolute level, so quiet input (a far-field microphone,
//! a recording made at low gain) loses much of its speech before anything else sees it: the dev
//! set made 20 dB quieter missed 20 % of its speech instead of 6 % (docs/accuracy.md, "Quiet input").
//! [`Leveler`] tracks, over the last `window_s` seconds, the loud frames' level (95th percentile of
//! frame power, in dB below full scale: speech when there is any) and the floor (10th percentile:
//! pauses, room noise), and raises the input so that its loud frames reach `target_db`:
//! - only when the loud frames stand at least `min_contrast_db` above the floor (something louder
//!   than the room is there; silence or steady noise alone is never raised);
//! - by at most `max_gain_db`, rising at most `rise_db_per_s` and falling at once; never lowering
//!   the input (little or no gain at usual recording levels);
//! - after at least `min_seconds` of input, so a first estimate is not made of a few frames.
//!
//! Everything downstream (VAD, segmentation, embeddings) sees the raised audio; the input level the
//! dashboard shows is measured before it. Fixed work per frame (a histogram of 0.5 dB bins), no
//! allocation after construction.

use std::collections::VecDeque;

/// Settings of the automatic gain.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelConfig {
    /// Off: the input passes unchanged.
    pub enabled: bool,
    /// Level (dBFS, mean power of a frame) the loud frames are raised to.
    pub target_db: f32,
    /// Largest gain, dB.
    pub max_gain_db: f32,
    /// Seconds of input the levels are measured over.
    pub window_s: f32,
    /// The loud frames must stand this far above the floor (dB) for any gain.
    pub min_contrast_db: f32,
    /// Fastest rise of the gain, dB per second (it falls at once).
    pub rise_db_per_s: f32,
    /// Input needed before the first gain, seconds.
    pub min_seconds: f32,
}

impl Default for LevelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            target_db: -20.0,
            max_gain_db: 30.0,
            window_s: 30.0,
            min_contrast_db: 12.0,
            rise_db_per_s: 10.0,
            min_seconds: 1.0,
        }
    }
}

const FLOOR_DB: f32 = -100.0;
const BIN_DB: f32 = 0.5;
const BINS: usize = 200;

/// Mean square of a frame (full scale 1).
pub fn mean_square(frame: &[f32]) -> f32 {
    frame.iter().map(|x| x * x).sum::<f32>() / frame.len().max(1) as f32
}

/// Power of a frame in dB below full scale, floored at -100.
pub fn frame_db(frame: &[f32]) -> f32 {
    power_db(mean_square(frame))
}

/// dB below full scale of a mean square `p`, floored at -100.
pub fn power_db(p: f32) -> f32 {
    (10.0 * (p + 1e-10).log10()).clamp(FLOOR_DB, 0.0)
}

/// Frame levels of the last `capacity` frames as a histogram of 0.5 dB bins, for percentiles
/// (the floor, the loud frames) at fixed cost per frame and no allocation after construction.
#[derive(Debug, Clone)]
pub struct RecentLevels {
    counts: Vec<u32>,
    recent: VecDeque<u16>,
    capacity: usize,
}

impl RecentLevels {
    /// Keeps the levels of the last `capacity` frames (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            counts: vec![0; BINS],
            recent: VecDeque::with_capacity(capacity + 1),
            capacity,
        }
    }

    /// Adds a frame of mean square `power` (full scale 1), forgetting the oldest beyond capacity.
    pub fn push(&mut self, power: f32) {
        let bin = (((power_db(power) - FLOOR_DB) / BIN_DB) as usize).min(BINS - 1);
        self.counts[bin] += 1;
        self.recent.push_back(bin as u16);
        if self.recent.len() > self.capacity {
            if let Some(old) = self.recent.pop_front() {
                self.counts[old as usize] -= 1;
            }
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether no frame has been pushed.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// Level (dBFS) below which `q` of the recent frames lie (-100 when empty).
    pub fn percentile(&self, q: f32) -> f32 {
        let n = self.recent.len();
        if n == 0 {
            return FLOOR_DB;
        }
        let want = ((q * n as f32).ceil() as usize).clamp(1, n);
        let mut seen = 0usize;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c as usize;
            if seen >= want {
                return FLOOR_DB + (b as f32 + 0.5) * BIN_DB;
            }
        }
        0.0
    }
}

/// The automatic gain (see the module doc). Feed it every frame in order.
#[derive(Debug, Clone)]
pub struct Leveler {
    cfg: LevelConfig,
    frame_s: f32,
    levels: RecentLevels,
    gain_db: f32,
    /// Whether the log has said that quiet input is being raised.
    told: bool,
}

impl Leveler {
    /// A leveler for frames of `frame_ms` milliseconds.
    pub fn new(cfg: &LevelConfig, frame_ms: u32) -> Self {
        let frame_s = frame_ms.max(1) as f32 / 1000.0;
        let capacity = ((cfg.window_s.max(frame_s) / frame_s).round() as usize).max(1);
        Self {
            cfg: cfg.clone(),
            frame_s,
            levels: RecentLevels::new(capacity),
            gain_db: 0.0,
            told: false,
        }
    }

    /// Gain applied to the latest frame, dB.
    pub fn gain_db(&self) -> f32 {
        self.gain_db
    }

    /// The gain the recent levels call for, dB.
    fn wanted(&self) -> f32 {
        if (self.levels.len() as f32) * self.frame_s < self.cfg.min_seconds {
            return 0.0;
        }
        let loud = self.levels.percentile(0.95);
        let floor = self.levels.percentile(0.10);
        if loud - floor < self.cfg.min_contrast_db {
            return 0.0;
        }
        (self.cfg.target_db - loud).clamp(0.0, self.cfg.max_gain_db)
    }

    /// Measures `frame` (before any gain), raises it in place by the current gain and returns its
    /// mean square as received (the level meter's input).
    pub fn process(&mut self, frame: &mut [f32]) -> f32 {
        let power = mean_square(frame);
        if !self.cfg.enabled || frame.is_empty() {
            return power;
        }
        self.levels.push(power);
        let wanted = self.wanted();
        self.gain_db = if wanted > self.gain_db {
            wanted.min(self.gain_db + self.cfg.rise_db_per_s * self.frame_s)
        } else {
            wanted
        };
        if self.gain_db > 0.0 {
            let k = 10f32.powf(self.gain_db / 20.0);
            for x in frame.iter_mut() {
                *x *= k;
            }
        }
        if !self.told && self.gain_db >= 6.0 {
            self.told = true;
            tracing::info!(
                "quiet input: raising its level by up to {:.0} dB before speech detection (--no-auto-gain turns this off)",
                self.gain_db
            );
        }
        power
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 ms frames of a tone at `db` dBFS (mean power).
    fn tone(db: f32, frames: usize, seed: usize) -> Vec<Vec<f32>> {
        let amp = (2.0f32 * 10f32.powf(db / 10.0)).sqrt();
        (0..frames)
            .map(|f| {
                (0..480)
                    .map(|i| {
                        let t = (f * 480 + i + seed) as f32 / 16000.0;
                        amp * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                    })
                    .collect()
            })
            .collect()
    }

    /// Alternates `loud` dB "speech" (0.6 s) with `floor` dB "pauses" (0.3 s) for `secs` seconds;
    /// returns the gain after the last frame and the level of the last loud frame after it.
    fn conversation(lv: &mut Leveler, loud: f32, floor: f32, secs: usize) -> (f32, f32) {
        let mut last_loud = FLOOR_DB;
        for k in 0..(secs * 10 / 9) {
            for mut f in tone(loud, 20, k) {
                lv.process(&mut f);
                last_loud = frame_db(&f);
            }
            for mut f in tone(floor, 10, k) {
                lv.process(&mut f);
            }
        }
        (lv.gain_db(), last_loud)
    }

    #[test]
    fn quiet_speech_is_raised_to_the_target() {
        let mut lv = Leveler::new(&LevelConfig::default(), 30);
        let (gain, out) = conversation(&mut lv, -50.0, -75.0, 20);
        assert!((gain - 30.0).abs() < 0.6, "gain {gain}");
        assert!((out + 20.0).abs() < 1.0, "raised level {out}");
    }

    #[test]
    fn gain_is_capped_and_normal_input_untouched() {
        let mut lv = Leveler::new(&LevelConfig::default(), 30);
        let (gain, _) = conversation(&mut lv, -70.0, -95.0, 20);
        assert!((gain - 30.0).abs() < 1e-3, "capped at 30 dB: {gain}");
        let mut lv = Leveler::new(&LevelConfig::default(), 30);
        let (gain, out) = conversation(&mut lv, -18.0, -60.0, 20);
        assert_eq!(gain, 0.0);
        assert!((out + 18.0).abs() < 0.1);
    }

    #[test]
    fn silence_and_steady_noise_are_not_raised() {
        let mut lv = Leveler::new(&LevelConfig::default(), 30);
        for mut f in tone(-60.0, 1000, 0) {
            lv.process(&mut f);
            assert_eq!(lv.gain_db(), 0.0);
        }
        let mut lv = Leveler::new(&LevelConfig::default(), 30);
        for _ in 0..1000 {
            let mut f = vec![0.0f32; 480];
            lv.process(&mut f);
            assert!(f.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn gain_rises_gradually_and_falls_at_once() {
        let cfg = LevelConfig::default();
        let mut lv = Leveler::new(&cfg, 30);
        let mut prev = 0.0f32;
        for k in 0..40 {
            for mut f in tone(-50.0, 20, k).into_iter().chain(tone(-75.0, 10, k)) {
                lv.process(&mut f);
                let step = lv.gain_db() - prev;
                assert!(
                    step <= cfg.rise_db_per_s * 0.03 + 1e-4,
                    "rose {step} dB in a frame"
                );
                prev = lv.gain_db();
            }
        }
        assert!(prev > 25.0, "reached {prev}");
        // The talker moves to the microphone: once loud frames dominate the window, the gain
        // follows them down without a ramp (never above what the window calls for).
        for k in 0..40 {
            for mut f in tone(-15.0, 20, k).into_iter().chain(tone(-75.0, 10, k)) {
                lv.process(&mut f);
            }
        }
        assert_eq!(lv.gain_db(), 0.0);
    }

    #[test]
    fn off_means_unchanged() {
        let cfg = LevelConfig {
            enabled: false,
            ..LevelConfig::default()
        };
        let mut lv = Leveler::new(&cfg, 30);
        let (gain, out) = conversation(&mut lv, -50.0, -75.0, 10);
        assert_eq!(gain, 0.0);
        assert!((out + 50.0).abs() < 0.1);
    }
}
