//! The analysis stage: incremental fbank over the whole stream (each 10 ms frame computed once) and
//! CAM++ embeddings of short sliding windows inside speech.
//!
//! [`WindowScheduler`] decides, frame by frame, which windows to embed: while a speech region lasts,
//! one window of up to `window` seconds ending now, every `step` seconds, once the region is
//! `min_window` long (with voice profiles loaded, one more when it is `naming_window` long); when a
//! region ends, one last window over its tail (if it is not covered yet).
//! Regions shorter than `min_window` get no embedding; the turn stage labels them from their
//! neighbours.

use std::collections::VecDeque;

use crate::fbank::{StreamingFbank, FRAME_LENGTH, FRAME_SHIFT, NUM_BINS};
use crate::{Error, Result, SAMPLE_RATE};

/// Sliding-window settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    /// Longest window, seconds.
    pub window: f64,
    /// Step between windows inside a region, seconds.
    pub step: f64,
    /// Shortest window embedded (and shortest region with an embedding), seconds.
    pub min_window: f64,
    /// Windows shorter than this do not update centroids, seconds.
    pub trusted_window: f64,
    /// One more window when a speech region reaches this length, seconds, between the regular ones
    /// (0.5 s and 1 s by default): a window this long can name a known voice by itself
    /// (`profiles::MatchConfig::naming_window`), so a known speaker is named a quarter of a second
    /// sooner. None (default): no extra window; the pipeline sets it when voice profiles are loaded.
    pub naming_window: Option<f64>,
    /// Shared-trunk embeddings (mode seg, opt-in): the CAM++ trunk runs once over consecutive chunks of
    /// speech with this much context on each side (seconds), and each window pools the trunk frames it
    /// covers ([`TrunkTiling`], `crate::embed::TrunkFrames`); a window's embedding then waits this long for
    /// the context after it. About two thirds of the embedding work (criterion: `embed_campplus/1s_audio_shared_trunk`), slightly less accurate (docs/accuracy.md).
    /// None (default): each window goes through the whole network alone.
    pub trunk_margin: Option<f64>,
    /// Mode seg: CAM++'s trunk with 8-bit convolutions (`models/campplus_trunk_int8.onnx`) instead of the
    /// float one.
    pub trunk_int8: bool,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            window: 1.5,
            step: 0.5,
            min_window: 0.5,
            trusted_window: 1.0,
            naming_window: None,
            trunk_margin: None,
            trunk_int8: true,
        }
    }
}

impl WindowConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.min_window >= 0.2 && self.min_window <= self.window) {
            return Err(Error::Config(format!(
                "minimum window ({} s) must be between 0.2 s and the window ({} s)",
                self.min_window, self.window
            )));
        }
        if self.window.is_nan() || self.window > 10.0 {
            return Err(Error::Config(format!(
                "window must be at most 10 s, not {}",
                self.window
            )));
        }
        if let Some(n) = self.naming_window {
            if !(n >= self.min_window && n <= self.window) {
                return Err(Error::Config(format!(
                    "naming window ({n} s) must be between the minimum window ({} s) and the window ({} s)",
                    self.min_window, self.window
                )));
            }
        }
        if let Some(m) = self.trunk_margin {
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::Config(format!(
                    "trunk margin must be between 0 and 1 s, not {m}"
                )));
            }
        }
        if !(self.step >= 0.05 && self.step <= self.window) {
            return Err(Error::Config(format!(
                "step must be between 0.05 s and the window ({} s), not {}",
                self.window, self.step
            )));
        }
        Ok(())
    }
    /// Fbank frames of a full window (25 ms frames every 10 ms): 148 for 1.5 s.
    pub fn window_frames(&self) -> usize {
        let n = Self::samples(self.window) as usize;
        let len = crate::fbank::FRAME_LENGTH;
        if n < len {
            return 0;
        }
        (n - len) / crate::fbank::FRAME_SHIFT + 1
    }

    fn samples(s: f64) -> u64 {
        (s * SAMPLE_RATE as f64).round() as u64
    }
}

/// A window to embed: samples [start, end) of the 16 kHz stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    pub start: u64,
    pub end: u64,
}

/// Decides which windows to embed as VAD frames arrive (pure logic).
#[derive(Debug, Clone)]
pub struct WindowScheduler {
    window: u64,
    step: u64,
    min_window: u64,
    /// Region length of the extra window (`WindowConfig::naming_window`).
    naming: Option<u64>,
    region_start: Option<u64>,
    /// End of the last window.
    last_end: u64,
    /// End of the last regular window (the `step` grid; the extra window does not move it).
    grid_end: u64,
    /// Whether the open region has had a window at least `naming` long.
    named: bool,
}

impl WindowScheduler {
    /// New scheduler.
    pub fn new(cfg: &WindowConfig) -> Self {
        Self {
            window: WindowConfig::samples(cfg.window),
            step: WindowConfig::samples(cfg.step),
            min_window: WindowConfig::samples(cfg.min_window),
            naming: cfg.naming_window.map(WindowConfig::samples),
            region_start: None,
            last_end: 0,
            grid_end: 0,
            named: false,
        }
    }

    /// Feeds one frame [start, end) with its speech decision; returns a window to embed, if due.
    pub fn push(&mut self, start: u64, end: u64, speech: bool) -> Option<WindowSpan> {
        match (self.region_start, speech) {
            (None, true) => {
                self.region_start = Some(start);
                self.last_end = start;
                self.grid_end = start;
                self.named = false;
                None
            }
            (Some(rs), true) => {
                let len = end - rs;
                let regular = len >= self.min_window.max(self.step.min(self.window))
                    && end - self.grid_end >= self.step;
                let extra = !self.named && self.naming.is_some_and(|n| len >= n);
                if regular {
                    self.grid_end = end;
                } else if !extra {
                    return None;
                }
                self.last_end = end;
                self.named |= self.naming.is_some_and(|n| len >= n);
                Some(WindowSpan {
                    start: rs.max(end.saturating_sub(self.window)),
                    end,
                })
            }
            (Some(_), false) => self.close(start),
            (None, false) => None,
        }
    }

    /// Closes the open region at `end` (a non-speech frame or the end of the stream).
    pub fn close(&mut self, end: u64) -> Option<WindowSpan> {
        let rs = self.region_start.take()?;
        let len = end.saturating_sub(rs);
        let uncovered = end.saturating_sub(self.last_end);
        if len >= self.min_window && uncovered >= self.step / 2 {
            self.last_end = end;
            Some(WindowSpan {
                start: rs.max(end.saturating_sub(self.window)),
                end,
            })
        } else {
            None
        }
    }
}

/// The fbank frames of the recent past, indexed by absolute frame number.
#[derive(Debug)]
pub struct FbankHistory {
    frames: VecDeque<[f32; NUM_BINS]>,
    first: u64,
    capacity: usize,
}

impl FbankHistory {
    /// Keeps at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: VecDeque::with_capacity(capacity),
            first: 0,
            capacity,
        }
    }
    /// Appends frame `index` (must be the next one).
    pub fn push(&mut self, index: u64, values: &[f32]) {
        if self.frames.is_empty() {
            self.first = index;
        }
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
            self.first += 1;
        }
        let mut f = [0.0f32; NUM_BINS];
        f.copy_from_slice(&values[..NUM_BINS]);
        self.frames.push_back(f);
    }

    /// Frames fully inside samples [start, end), copied row-major into `out`; returns the count.
    pub fn copy_span(&self, start: u64, end: u64, out: &mut Vec<f32>) -> usize {
        self.copy_span_from(start, end, out).1
    }

    /// As [`FbankHistory::copy_span`]; returns (index of the first frame copied, count).
    pub fn copy_span_from(&self, start: u64, end: u64, out: &mut Vec<f32>) -> (u64, usize) {
        out.clear();
        let shift = FRAME_SHIFT as u64;
        let first_idx = start.div_ceil(shift);
        if end < FRAME_LENGTH as u64 {
            return (first_idx, 0);
        }
        let last_idx_excl = (end - FRAME_LENGTH as u64) / shift + 1;
        let lo = first_idx.max(self.first);
        let hi = last_idx_excl.min(self.first + self.frames.len() as u64);
        for i in lo..hi {
            out.extend_from_slice(&self.frames[(i - self.first) as usize]);
        }
        (lo, hi.saturating_sub(lo) as usize)
    }
}

/// One trunk chunk of the shared-trunk embeddings: the trunk runs over fbank frames [start, end) and its
/// output frames centred in [valid_from, valid_to) are kept (the rest is context: `margin` frames on each
/// side, so every kept frame saw some audio beyond it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkChunk {
    pub start: u64,
    pub end: u64,
    pub valid_from: u64,
    pub valid_to: u64,
}

/// Plans shared-trunk chunks (pure logic): the trunk's kept frames tile each speech region's windows
/// without overlap, a new chunk per window covering what earlier windows did not (about one window step),
/// plus `margin` fbank frames of context on both sides. With 1.5 s windows every 0.5 s, each fbank frame
/// goes through the trunk about (0.5 + 2 x margin) / 0.5 times instead of 3 times.
#[derive(Debug, Clone)]
pub struct TrunkTiling {
    margin: u64,
    /// Fbank frames before this are tiled.
    tiled_until: u64,
}

impl TrunkTiling {
    /// `margin`: context on each side of a chunk, fbank frames.
    pub fn new(margin: u64) -> Self {
        Self {
            margin,
            tiled_until: 0,
        }
    }

    /// The chunk a window over fbank frames [first, end) needs (None when earlier chunks cover it). The
    /// chunk's start is even, so its trunk frames sit on even fbank frames.
    pub fn plan(&mut self, first: u64, end: u64) -> Option<TrunkChunk> {
        let valid_from = self.tiled_until.max(first);
        // Kept frames are centred on even fbank frames.
        let valid_from = valid_from + (valid_from % 2);
        if end <= valid_from {
            return None;
        }
        self.tiled_until = end;
        let start = valid_from.saturating_sub(self.margin);
        Some(TrunkChunk {
            start: start - (start % 2),
            end: end + self.margin,
            valid_from,
            valid_to: end,
        })
    }
}

/// Fbank + window bookkeeping for the analysis thread (the model call is done by the caller).
pub struct FeatureTracker {
    fbank: StreamingFbank,
    history: FbankHistory,
    scheduler: WindowScheduler,
    trusted: u64,
    buf: Vec<f32>,
}

impl FeatureTracker {
    /// New tracker for `cfg`.
    pub fn new(cfg: &WindowConfig) -> Result<Self> {
        cfg.validate()?;
        // Keep the longest window plus slack.
        let cap = ((cfg.window + 2.0) * 100.0) as usize;
        Ok(Self {
            fbank: StreamingFbank::new(),
            history: FbankHistory::new(cap),
            scheduler: WindowScheduler::new(cfg),
            trusted: WindowConfig::samples(cfg.trusted_window),
            buf: Vec::new(),
        })
    }

    /// Feeds one VAD frame's audio. Returns a window to embed, if due.
    pub fn push(&mut self, start: u64, audio: &[f32], speech: bool) -> Option<WindowSpan> {
        let history = &mut self.history;
        self.fbank.push(audio, |i, v| history.push(i, v));
        self.scheduler
            .push(start, start + audio.len() as u64, speech)
    }

    /// Closes the stream at sample `end`.
    pub fn finish(&mut self, end: u64) -> Option<WindowSpan> {
        self.scheduler.close(end)
    }

    /// Fbank frames computed so far (frames 0..this exist; the oldest may be forgotten).
    pub fn frames_available(&self) -> u64 {
        self.history.first + self.history.frames.len() as u64
    }

    /// Copies the raw fbank frames [start, end) that the history still holds into `out` (row-major);
    /// returns (index of the first frame copied, count).
    pub fn copy_frames(&self, start: u64, end: u64, out: &mut Vec<f32>) -> (u64, usize) {
        out.clear();
        let lo = start.max(self.history.first);
        let hi = end.min(self.frames_available());
        for i in lo..hi {
            out.extend_from_slice(&self.history.frames[(i - self.history.first) as usize]);
        }
        (lo, hi.saturating_sub(lo) as usize)
    }

    /// Whether `span` is long enough for its window to update centroids.
    pub fn trusted(&self, span: WindowSpan) -> bool {
        span.end - span.start >= self.trusted
    }

    /// The fbank frames of `span` as a [frames, 80] view, and whether the span is long enough to trust.
    pub fn features(&mut self, span: WindowSpan) -> Result<(ndarray::ArrayView2<'_, f32>, bool)> {
        let (view, trusted, _) = self.features_from(span)?;
        Ok((view, trusted))
    }

    /// As [`FeatureTracker::features`], plus the stream index of the first fbank frame.
    pub fn features_from(
        &mut self,
        span: WindowSpan,
    ) -> Result<(ndarray::ArrayView2<'_, f32>, bool, u64)> {
        let (first, n) = self
            .history
            .copy_span_from(span.start, span.end, &mut self.buf);
        let view = ndarray::ArrayView2::from_shape((n, NUM_BINS), &self.buf[..n * NUM_BINS])
            .map_err(|e| Error::Inference(format!("fbank window shape: {e}")))?;
        Ok((view, span.end - span.start >= self.trusted, first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(s: &mut WindowScheduler, speech: &[(u64, bool)]) -> Vec<WindowSpan> {
        // (count of 30 ms frames, speech)
        let mut t = 0u64;
        let mut out = Vec::new();
        for &(n, sp) in speech {
            for _ in 0..n {
                if let Some(w) = s.push(t, t + 480, sp) {
                    out.push(w);
                }
                t += 480;
            }
        }
        out.extend(s.close(t));
        out
    }

    #[test]
    fn windows_slide_inside_speech() {
        let cfg = WindowConfig::default();
        let mut s = WindowScheduler::new(&cfg);
        // 0.3 s silence, 4.8 s speech, 0.6 s silence.
        let w = frames(&mut s, &[(10, false), (160, true), (20, false)]);
        assert!(w.len() >= 8, "{w:?}");
        for win in &w {
            assert!(win.start >= 4800 && win.end <= 4800 + 160 * 480);
            assert!(win.end - win.start <= 24000);
            assert!(win.end - win.start >= 8000);
        }
        // Steps of about 0.5 s.
        for p in w.windows(2) {
            assert!(p[1].end - p[0].end <= 8000 + 480);
        }
    }

    #[test]
    fn short_blips_get_no_window() {
        let cfg = WindowConfig::default();
        let mut s = WindowScheduler::new(&cfg);
        let w = frames(
            &mut s,
            &[(10, false), (5, true), (10, false), (8, true), (10, false)],
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn short_region_gets_one_window() {
        let cfg = WindowConfig::default();
        let mut s = WindowScheduler::new(&cfg);
        let w = frames(&mut s, &[(10, false), (25, true), (10, false)]);
        // One window from the region start (the 0.24 s tail is labelled from it by the turn stage).
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].start, 4800);
        assert!(w[0].end - w[0].start >= 8000);
    }

    #[test]
    fn naming_window_adds_one_window_per_region_off_the_grid() {
        let plain = WindowConfig::default();
        let naming = WindowConfig {
            naming_window: Some(0.75),
            ..WindowConfig::default()
        };
        naming.validate().expect("valid");
        // 0.3 s silence, 4.8 s speech, 0.6 s silence, 2.4 s speech, 0.6 s silence.
        let speech = [
            (10, false),
            (160, true),
            (20, false),
            (80, true),
            (20, false),
        ];
        let w0 = frames(&mut WindowScheduler::new(&plain), &speech);
        let w1 = frames(&mut WindowScheduler::new(&naming), &speech);
        // Every regular window stays where it was; each region gains one window 0.75 s long.
        let extra: Vec<_> = w1.iter().filter(|w| !w0.contains(w)).collect();
        assert!(w0.iter().all(|w| w1.contains(w)), "{w0:?} vs {w1:?}");
        assert_eq!(extra.len(), 2, "{extra:?}");
        for (w, region_start) in extra.iter().zip([4800u64, 4800 + 180 * 480]) {
            assert_eq!(w.start, region_start);
            assert_eq!(
                w.end - w.start,
                25 * 480,
                "the first frame reaching 0.75 s: {w:?}"
            );
        }
        // A region of 0.9 s: the 0.75 s window leaves too little uncovered for a tail window.
        let short = [(10, false), (30, true), (10, false)];
        let w = frames(&mut WindowScheduler::new(&naming), &short);
        let lens: Vec<u64> = w.iter().map(|w| w.end - w.start).collect();
        assert_eq!(lens, vec![17 * 480, 25 * 480]);
        // A naming window outside [min_window, window] is refused.
        for bad in [0.3, 2.0, f64::NAN] {
            let cfg = WindowConfig {
                naming_window: Some(bad),
                ..WindowConfig::default()
            };
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn history_copies_exact_frames() {
        let mut h = FbankHistory::new(100);
        for i in 0..50u64 {
            h.push(i, &[i as f32; NUM_BINS]);
        }
        let mut out = Vec::new();
        // samples [1600, 3200): frames 10..=8+... i with 160 i >= 1600 and 160 i + 400 <= 3200 -> 10..=17
        let n = h.copy_span(1600, 3200, &mut out);
        assert_eq!(n, 8);
        assert_eq!(out[0], 10.0);
        assert_eq!(out[(n - 1) * NUM_BINS], 17.0);
    }

    /// Windows of a region (1.5 s every ~0.5 s) get chunks whose kept frames tile the region once, each
    /// with the margin of context on both sides and an even start; a window already covered gets none;
    /// a new region starts a new tiling.
    #[test]
    fn trunk_tiling_covers_each_frame_once_with_context() {
        let mut t = TrunkTiling::new(16);
        let windows = [(101, 151), (101, 202), (101, 253), (105, 303), (156, 303)];
        let chunks: Vec<Option<TrunkChunk>> = windows.iter().map(|&(a, b)| t.plan(a, b)).collect();
        let c: Vec<TrunkChunk> = chunks.iter().flatten().copied().collect();
        assert_eq!(chunks[4], None, "the last window is already covered");
        assert_eq!(c.len(), 4);
        // Kept frames: even centres from the region's first even frame, without gaps or overlap.
        assert_eq!(c[0].valid_from, 102);
        for w in c.windows(2) {
            assert!(w[1].valid_from >= w[0].valid_to && w[1].valid_from <= w[0].valid_to + 1);
        }
        assert_eq!(c[3].valid_to, 303);
        for k in &c {
            assert_eq!(k.start % 2, 0);
            assert!(k.valid_from - k.start >= 16 && k.valid_from - k.start <= 17);
            assert_eq!(k.end, k.valid_to + 16);
        }
        // A later region: tiled from its own start.
        let n = t.plan(500, 550).expect("new region");
        assert_eq!(
            (n.valid_from, n.valid_to, n.start, n.end),
            (500, 550, 484, 566)
        );
    }
}

/// Segmentation-based speech and overlap detection (segmentation-3.0 on sliding windows).
#[derive(Debug, Clone, PartialEq)]
pub struct SegConfig {
    /// Use segmentation-3.0 for final speech boundaries and overlapped speech.
    pub enabled: bool,
    /// Window, seconds.
    pub window: f64,
    /// Step, seconds.
    pub step: f64,
    /// A tick is speech when the mean probability of any speaker is at least this.
    pub speech_threshold: f32,
    /// A tick is overlapped speech when the mean probability of two speakers is at least this.
    pub overlap_threshold: f32,
    /// Speaker-conditioned embeddings: each CAM++ window's statistics pooling weights its frames by the
    /// probability that the window's dominant local speaker (of the newest segmentation window) speaks alone
    /// there ([`LocalWeights`]; `models/campplus_trunk.onnx` + `campplus_head.bin`). Off: plain CAM++ (`campplus.onnx`).
    pub weighted_embeddings: bool,
    /// segmentation-3.0 with 8-bit LSTMs and matrix products (`models/segmentation-3.0-int8.onnx`, run split at
    /// its first convolution, which overlapping windows share: `segmentation-3.0-sincconv.onnx` +
    /// `segmentation-3.0-int8-rest.onnx`), one window per model call.
    pub int8: bool,
}

impl Default for SegConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 5.0,
            step: 1.0,
            speech_threshold: 0.5,
            overlap_threshold: 0.5,
            weighted_embeddings: true,
            int8: true,
        }
    }
}

impl SegConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.window >= 1.0 && self.window <= 10.0) {
            return Err(Error::Config(format!(
                "segmentation window must be 1..=10 s, not {}",
                self.window
            )));
        }
        if !(self.step >= 0.1 && self.step <= self.window) {
            return Err(Error::Config(format!(
                "segmentation step must be between 0.1 s and the window, not {}",
                self.step
            )));
        }
        Ok(())
    }
}

/// One segmentation window's local speakers, sent from the segmentation thread to the analysis thread for
/// speaker-conditioned embeddings: for each model frame, the probability that local speaker A, B or C is the
/// only one speaking (the single-speaker powerset classes, [`crate::segment::powerset_exclusive`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SegLocals {
    /// Stream sample of the window's first sample (negative: the window reaches back before the stream start).
    pub start: i64,
    /// Stream sample one past the window's last sample.
    pub end: u64,
    /// Per model frame (16.875 ms step), P(only A), P(only B), P(only C).
    pub exclusive: Vec<[f32; crate::segment::NUM_LOCAL]>,
}

impl SegLocals {
    /// From a window's powerset log-probabilities [F, 7] starting at stream sample `start`, `len` samples long.
    pub fn from_log_probs(start: i64, len: usize, log_probs: ndarray::ArrayView2<f32>) -> Self {
        let exclusive = log_probs
            .rows()
            .into_iter()
            .map(|r| [r[1].exp(), r[2].exp(), r[3].exp()])
            .collect();
        Self {
            start,
            end: (start + len as i64).max(0) as u64,
            exclusive,
        }
    }
}

/// Frame weights for speaker-conditioned CAM++ windows (the analysis thread's side of [`SegLocals`]).
///
/// For a window over samples [s, e) it takes the newest segmentation window that ends inside it (end in
/// (s, e]; later windows may already have arrived, since the segmentation thread runs ahead, but are never
/// used, so the weights do not depend on thread timing), picks that window's dominant local speaker over the
/// fbank frames it covers, and weights each fbank frame by the probability that this speaker speaks alone there:
/// overlapped speech, the other speaker's speech and pauses barely count. Frames newer than the segmentation
/// window (up to one segmentation step at the live edge) keep weight 1. Without such a window, or when the
/// dominant speaker's weights add up to less than [`LocalWeights::MIN_WEIGHT`] frames, the window is embedded
/// unweighted.
#[derive(Debug, Default)]
pub struct LocalWeights {
    windows: VecDeque<SegLocals>,
}

impl LocalWeights {
    /// Least total weight (in fbank frames) for a weighted embedding.
    pub const MIN_WEIGHT: f32 = 20.0;
    /// Lowest frame weight (keeps the pooling statistics finite when a speaker is absent from a stretch).
    const FLOOR: f32 = 1e-3;
    /// Adds a segmentation window (in stream order).
    pub fn add(&mut self, w: SegLocals) {
        self.windows.push_back(w);
    }

    /// Segmentation windows held (those that later embedding windows may still need).
    pub fn held(&self) -> usize {
        self.windows.len()
    }

    /// Weights for the `n` fbank frames `first..first + n` of the window [start, end) (samples), written to
    /// `out`; false (and `out` empty) when the window is to be embedded unweighted. Windows must be asked for
    /// in order of `end` (as the scheduler emits them): segmentation windows older than the one chosen are
    /// dropped.
    pub fn weights(
        &mut self,
        start: u64,
        end: u64,
        first: u64,
        n: usize,
        out: &mut Vec<f32>,
    ) -> bool {
        out.clear();
        while self.windows.len() >= 2 && self.windows[1].end <= end {
            self.windows.pop_front();
        }
        let Some(seg) = self
            .windows
            .front()
            .filter(|w| w.end <= end && w.end > start && !w.exclusive.is_empty())
        else {
            return false;
        };
        let frames = seg.exclusive.len();
        let seg_frame = |k: u64| -> Option<usize> {
            let centre = (k * FRAME_SHIFT as u64 + FRAME_LENGTH as u64 / 2) as f64;
            if centre >= seg.end as f64 {
                return None;
            }
            let i = ((centre - seg.start as f64 - crate::segment::FRAME_SIZE as f64 / 2.0)
                / crate::segment::FRAME_STEP as f64)
                .round()
                .clamp(0.0, (frames - 1) as f64);
            Some(i as usize)
        };
        let mut mass = [0.0f32; crate::segment::NUM_LOCAL];
        let mut covered = 0usize;
        for k in first..first + n as u64 {
            if let Some(i) = seg_frame(k) {
                covered += 1;
                for (m, p) in mass.iter_mut().zip(seg.exclusive[i]) {
                    *m += p;
                }
            }
        }
        if covered == 0 {
            return false;
        }
        let dom = (0..mass.len())
            .max_by(|&a, &b| mass[a].total_cmp(&mass[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        let mut total = 0.0f32;
        for k in first..first + n as u64 {
            let w = match seg_frame(k) {
                Some(i) => seg.exclusive[i][dom].clamp(Self::FLOOR, 1.0),
                None => 1.0,
            };
            total += w;
            out.push(w);
        }
        if total < Self::MIN_WEIGHT {
            out.clear();
            return false;
        }
        true
    }
}

/// Per-tick speech / overlap probabilities averaged over every segmentation window covering the
/// tick; a tick is released once `latency` samples of later audio have been segmented.
#[derive(Debug)]
pub struct SegActivity {
    /// (sum of P(speech), sum of P(overlap), windows) per tick from `first_tick`.
    acc: VecDeque<(f32, f32, u32)>,
    first_tick: u64,
    latency: u64,
}

/// Samples per tick (10 ms), as in the turn stage.
const TICK: u64 = crate::turns::TICK;

impl SegActivity {
    /// Ticks are released `latency` samples after their end has been segmented.
    pub fn new(latency: u64) -> Self {
        Self {
            acc: VecDeque::new(),
            first_tick: 0,
            latency,
        }
    }

    /// Adds one window's powerset log-probabilities [F, 7] starting at stream sample `start`
    /// (negative = zero padding before the stream), then returns the released ticks as
    /// `(first_tick, [(p_speech, p_overlap)])`.
    pub fn add_window(
        &mut self,
        start: i64,
        len: usize,
        log_probs: ndarray::ArrayView2<f32>,
    ) -> Option<(u64, Vec<(f32, f32)>)> {
        let frames = log_probs.nrows();
        if frames == 0 {
            return None;
        }
        let end = start + len as i64;
        let t0 = (start.max(0) as u64).div_ceil(TICK).max(self.first_tick);
        let t1 = (end.max(0) as u64) / TICK;
        for t in t0..t1 {
            let c = (t * TICK + TICK / 2) as f64 - start as f64;
            let i = ((c - crate::segment::FRAME_SIZE as f64 / 2.0)
                / crate::segment::FRAME_STEP as f64)
                .round()
                .clamp(0.0, (frames - 1) as f64) as usize;
            let row = log_probs.row(i);
            let p = |k: usize| row[k].exp();
            let speech = 1.0 - p(0);
            let overlap = p(4) + p(5) + p(6);
            let idx = (t - self.first_tick) as usize;
            while self.acc.len() <= idx {
                self.acc.push_back((0.0, 0.0, 0));
            }
            let a = &mut self.acc[idx];
            a.0 += speech;
            a.1 += overlap;
            a.2 += 1;
        }
        let release_upto = (end.max(0) as u64).saturating_sub(self.latency) / TICK;
        self.release(release_upto)
    }

    /// Releases every tick before `upto`.
    pub fn release(&mut self, upto: u64) -> Option<(u64, Vec<(f32, f32)>)> {
        if upto <= self.first_tick || self.acc.is_empty() {
            return None;
        }
        let n = ((upto - self.first_tick) as usize).min(self.acc.len());
        let first = self.first_tick;
        let out: Vec<(f32, f32)> = self
            .acc
            .drain(..n)
            .map(|(s, o, k)| {
                let k = k.max(1) as f32;
                (s / k, o / k)
            })
            .collect();
        self.first_tick += n as u64;
        Some((first, out))
    }

    /// Releases everything (end of stream).
    pub fn finish(&mut self) -> Option<(u64, Vec<(f32, f32)>)> {
        let upto = self.first_tick + self.acc.len() as u64;
        self.release(upto)
    }
}

#[cfg(test)]
mod seg_tests {
    use super::*;

    #[test]
    fn seg_activity_averages_windows_and_releases_after_latency() {
        // Window of 1 s at stream start 0 with constant class probabilities.
        let frames = crate::segment::frame_count(16000);
        let mut lp = ndarray::Array2::<f32>::from_elem((frames, 7), f32::ln(1e-6));
        for mut r in lp.rows_mut() {
            r[1] = f32::ln(0.6); // {A}
            r[4] = f32::ln(0.4); // {A,B}
        }
        let mut act = SegActivity::new(8000); // 0.5 s latency
        let rel = act.add_window(0, 16000, lp.view()).unwrap();
        assert_eq!(rel.0, 0);
        assert_eq!(rel.1.len(), 50, "ticks of the first 0.5 s released");
        let (sp, ov) = rel.1[10];
        assert!((sp - 1.0).abs() < 1e-3 && (ov - 0.4).abs() < 1e-3);
        // A second window over [0.5 s, 1.5 s) of silence: averages with the first where they overlap.
        let mut lp2 = ndarray::Array2::<f32>::from_elem((frames, 7), f32::ln(1e-6));
        for mut r in lp2.rows_mut() {
            r[0] = 0.0;
        }
        let rel = act.add_window(8000, 16000, lp2.view()).unwrap();
        assert_eq!(rel.0, 50);
        assert_eq!(rel.1.len(), 50);
        assert!((rel.1[20].0 - 0.5).abs() < 1e-3, "{:?}", rel.1[20]);
        let rest = act.finish().unwrap();
        assert_eq!(rest.0, 100);
        assert!(rest.1.iter().all(|v| v.0 < 1e-3));
    }

    /// A segmentation window starting at stream sample `start` whose local speaker A speaks alone in the
    /// first half and B alone in the second half.
    fn two_halves(start: i64, len: usize) -> SegLocals {
        let frames = crate::segment::frame_count(len);
        SegLocals {
            start,
            end: (start + len as i64) as u64,
            exclusive: (0..frames)
                .map(|i| {
                    if i < frames / 2 {
                        [0.9, 0.05, 0.0]
                    } else {
                        [0.05, 0.9, 0.0]
                    }
                })
                .collect(),
        }
    }

    fn fbank_range(start: u64, end: u64) -> (u64, usize) {
        let first = start.div_ceil(FRAME_SHIFT as u64);
        let last = (end - FRAME_LENGTH as u64) / FRAME_SHIFT as u64 + 1;
        (first, (last - first) as usize)
    }

    #[test]
    fn local_weights_follow_the_dominant_speaker_and_keep_the_live_edge() {
        let mut lw = LocalWeights::default();
        // Window [0, 5 s): A alone in [0, 2.5 s), B alone in [2.5 s, 5 s).
        lw.add(two_halves(0, 80_000));
        let mut w = Vec::new();
        // Embedding window [1.5 s, 3 s): A holds 1 s of it, B 0.5 s: A dominates.
        let (first, n) = fbank_range(24_000, 48_000);
        assert!(
            !lw.weights(24_000, 48_000, first, n, &mut w),
            "no segmentation window ends inside it yet"
        );
        // Embedding window [4 s, 5.5 s): the segmentation window ends at 5 s, inside it.
        let (first, n) = fbank_range(64_000, 88_000);
        assert!(lw.weights(64_000, 88_000, first, n, &mut w));
        assert_eq!(w.len(), n);
        // B dominates [4 s, 5 s): weight 0.9 there; frames whose centre is past 5 s keep weight 1.
        let k_at = |sample: u64| ((sample - 200) / 160 - first) as usize;
        assert!((w[k_at(72_000)] - 0.9).abs() < 1e-6, "{}", w[k_at(72_000)]);
        assert_eq!(w[n - 1], 1.0);
        // A window in which A dominates gets A's weights: high in A's half, low in B's.
        lw.add(two_halves(16_000, 80_000)); // [1 s, 6 s), A alone in [1 s, 3.5 s)
        let (first, n) = fbank_range(40_000, 96_000);
        assert!(lw.weights(40_000, 96_000, first, n, &mut w));
        let k_at = |sample: u64| ((sample - 200) / 160 - first) as usize;
        // [2.5 s, 6 s) of which A alone until 3.5 s, B after: B dominates (2.5 s against 1 s).
        assert!(w[k_at(48_000)] < 0.1 && w[k_at(80_000)] > 0.85, "{w:?}");
    }

    #[test]
    fn local_weights_ignore_windows_ending_after_the_embedding_window() {
        // Only windows ending inside (start, end] count, however early later ones arrive, and the older one
        // is dropped once a newer one qualifies.
        let mut lw = LocalWeights::default();
        lw.add(two_halves(0, 80_000)); // ends at 5 s
        lw.add(two_halves(16_000, 80_000)); // ends at 6 s
        let mut w = Vec::new();
        let (first, n) = fbank_range(56_000, 80_000); // [3.5 s, 5 s)
        assert!(lw.weights(56_000, 80_000, first, n, &mut w));
        // The 5 s window: B alone from 2.5 s.
        assert!(w.iter().all(|&x| (x - 0.9).abs() < 1e-6), "{w:?}");
        assert_eq!(lw.held(), 2);
        let (first, n) = fbank_range(72_000, 96_000); // [4.5 s, 6 s): the 6 s window now
        assert!(lw.weights(72_000, 96_000, first, n, &mut w));
        assert_eq!(lw.held(), 1, "the older window can no longer be needed");
    }

    #[test]
    fn local_weights_fall_back_when_the_speaker_barely_speaks() {
        let mut lw = LocalWeights::default();
        let frames = crate::segment::frame_count(80_000);
        lw.add(SegLocals {
            start: 0,
            end: 80_000,
            exclusive: vec![[0.01, 0.0, 0.0]; frames],
        });
        let mut w = vec![5.0];
        let (first, n) = fbank_range(56_000, 80_000);
        assert!(
            !lw.weights(56_000, 80_000, first, n, &mut w),
            "overlap or silence only: unweighted"
        );
        assert!(w.is_empty());
    }
}
