//! Local speaker segmentation with pyannote segmentation-3.0 (ONNX), and the streaming pieces around it.
//!
//! - [`Segmenter`]: one window of 16 kHz audio -> per-frame powerset log-probabilities [F, 7].
//! - [`powerset_to_activity`], [`powerset_hard`], [`powerset_exclusive`]: powerset decoding to the 3 local
//!   speakers of a window.
//! - [`SlidingSegmentation`]: runs the model on the last `window` samples of a stream every `step` samples.
//! - [`Aggregator`]: merges the overlapping windows (their local speakers mapped to global speakers by the
//!   caller, see [`crate::assign`]) into one stream timeline on a fixed frame grid, with a per-frame speaker count,
//!   and says which frames are final ("settled").
//!
//! # Frames
//!
//! The model (SincNet: Conv1d k251 s10, MaxPool 3, Conv1d k5, MaxPool 3, Conv1d k5, MaxPool 3; then BiLSTM)
//! maps N samples to
//!
//! ```text
//! F = floor((N - 721) / 270) = floor((N - 991) / 270) + 1      for N >= 991, else 0
//! ```
//!
//! frames (see [`frame_count`]; the nested floors of the convolution / pooling arithmetic collapse to this exactly,
//! and the integration test checks it against the model's real output for many N). Frame i covers samples
//! `[i * 270, i * 270 + 991)` of the window ([`FRAME_STEP`], [`FRAME_SIZE`]): 16.875 ms step, 61.94 ms receptive
//! field, centre at `i * 270 + 495.5`. F is the number of whole receptive fields that fit: 589 for 10 s, 293 for 5 s.
//!
//! # Streaming and latency
//!
//! [`SlidingSegmentation`] runs window k on stream samples `[e_k - window, e_k)` with `e_k = first_end + k * step`;
//! by default (`pad_start`) `first_end = step` and the missing past of the first windows is zeros, so results
//! start `step` after the stream starts (the alternative, `pad_start = false`, waits for a full window). [`Aggregator`]
//! settles a frame once no future window can cover it: `window - step` samples behind the newest window's end
//! (4.5 s for 5 s / 0.5 s), or earlier with its `latency` knob (later windows then no longer change that frame).
//! Measured from the live edge a frame is final `settle_delay` to `settle_delay + step` after capture, plus the
//! model's run time; [`Aggregator::tentative`] gives the current estimate of the frames not settled yet.

use std::collections::VecDeque;
use std::path::Path;

use ndarray::{Array2, ArrayView2};
use ort::session::Session;
use ort::value::TensorRef;

use crate::{Error, Result};

/// Hop between model frames, in samples at 16 kHz (16.875 ms).
pub const FRAME_STEP: usize = 270;
/// Receptive field of one model frame, in samples at 16 kHz (61.9375 ms).
pub const FRAME_SIZE: usize = 991;
/// Fewest samples the model accepts (one frame).
pub const MIN_SAMPLES: usize = FRAME_SIZE;
/// Number of powerset classes in the model output.
pub const NUM_CLASSES: usize = 7;
/// Number of local speakers per window.
pub const NUM_LOCAL: usize = 3;
/// Powerset class -> which local speakers (A, B, C) it contains: 0 {} 1 {A} 2 {B} 3 {C} 4 {A,B} 5 {A,C} 6 {B,C}.
pub const POWERSET: [[bool; NUM_LOCAL]; NUM_CLASSES] = [
    [false, false, false],
    [true, false, false],
    [false, true, false],
    [false, false, true],
    [true, true, false],
    [true, false, true],
    [false, true, true],
];

/// Number of output frames for a window of `samples` samples: `floor((samples - 721) / 270)` if
/// `samples >= 991`, else 0 (the model rejects windows shorter than one receptive field).
pub fn frame_count(samples: usize) -> usize {
    if samples < FRAME_SIZE {
        0
    } else {
        (samples - FRAME_SIZE) / FRAME_STEP + 1
    }
}

/// First sample (within its window) covered by frame `i`.
pub fn frame_start(i: usize) -> usize {
    i * FRAME_STEP
}

/// Centre of frame `i` within its window, in samples (`i * 270 + 495.5`).
pub fn frame_center(i: usize) -> f64 {
    (i * FRAME_STEP) as f64 + FRAME_SIZE as f64 / 2.0
}

/// Output of one [`Segmenter::run`]: the powerset log-probabilities of one window.
#[derive(Clone, Debug, Default)]
pub struct SegOutput {
    log_probs: Array2<f32>,
}

impl SegOutput {
    /// Per-frame powerset log-probabilities [F, 7] (natural log; each row's exp sums to 1).
    pub fn log_probs(&self) -> ArrayView2<'_, f32> {
        self.log_probs.view()
    }

    /// Number of frames F.
    pub fn frames(&self) -> usize {
        self.log_probs.nrows()
    }

    /// Soft per-local-speaker activity [F, 3] (see [`powerset_to_activity`]).
    pub fn activity(&self) -> Array2<f32> {
        powerset_to_activity(self.log_probs.view())
    }

    /// Hard per-local-speaker activity [F, 3] (see [`powerset_hard`]).
    pub fn hard(&self) -> Array2<u8> {
        powerset_hard(self.log_probs.view())
    }
}

/// Anything that turns a window of 16 kHz samples into powerset log-probabilities [F, 7]. Implemented by
/// [`Segmenter`]; lets [`SlidingSegmentation`] be tested without the model.
pub trait WindowModel {
    /// Log-probabilities [frame_count(window.len()), 7] for `window`.
    fn log_probs(&mut self, window: &[f32]) -> Result<ArrayView2<'_, f32>>;

    /// As [`WindowModel::log_probs`] for the window starting at stream sample `start` (negative: zeros
    /// before the stream), for a model that reuses work between overlapping windows of one stream. Windows
    /// come in stream order.
    fn log_probs_at(&mut self, start: i64, window: &[f32]) -> Result<ArrayView2<'_, f32>> {
        let _ = start;
        self.log_probs(window)
    }

    /// Whether [`WindowModel::log_probs_batch`] may run several windows in one call.
    fn batches(&self) -> bool {
        true
    }

    /// The stream starts again: forget anything kept from its windows.
    fn new_stream(&mut self) {}

    /// Log-probabilities of several windows of one length (`windows` holds them back to back, `len` samples
    /// each), in order. A model that can batch overrides it; the result must equal one call per window.
    fn log_probs_batch(&mut self, windows: &[f32], len: usize) -> Result<Vec<Array2<f32>>> {
        windows
            .chunks_exact(len.max(1))
            .map(|w| self.log_probs(w).map(|lp| lp.to_owned()))
            .collect()
    }
}

/// A segmentation-3.0 ONNX session plus a reusable output buffer. One per thread.
pub struct Segmenter {
    session: Session,
    out: SegOutput,
    /// The model gives a window the same result inside a batch as alone (the float model); the 8-bit one
    /// scales its activations per call, so it runs one window per call.
    batch_invariant: bool,
    /// The 8-bit model split at its first convolution ([`Segmenter::new_split`]); `session` is then the rest.
    split: Option<SincConv>,
}

/// Stride and taps of segmentation-3.0's first convolution (SincNet's 80 band-pass filters).
const CONV_STRIDE: usize = 10;
const CONV_TAPS: usize = 251;

/// The first convolution of segmentation-3.0 run once over the stream (models/split_segmentation.py): its
/// output for the raw samples does not depend on the window (the window's instance norm is an affine map
/// applied after it, in the rest model), so overlapping windows (5 s every 1 s) share it, and each second of
/// audio goes through it once instead of five times.
struct SincConv {
    session: Session,
    /// Output frames of the stream kept for the next windows: row f holds filter f's frames [lo, lo + len).
    rows: Vec<Vec<f32>>,
    /// Stream index of the first kept frame (frame g covers samples [10 g, 10 g + 251); negative before the
    /// stream start, where the samples are the zeros the window is padded with).
    lo: i64,
    /// The window's frames, [filters, F] row-major: the rest model's input.
    input: Vec<f32>,
}

impl SincConv {
    /// Drops the kept frames (a new stream, or a window that shares nothing with them).
    fn forget(&mut self) {
        self.rows.iter_mut().for_each(Vec::clear);
        self.lo = 0;
    }

    fn frames_kept(&self) -> i64 {
        self.rows.first().map_or(0, |r| r.len() as i64)
    }

    /// Runs the convolution on `samples` and appends its frames to the kept ones.
    fn extend(&mut self, samples: &[f32]) -> Result<()> {
        let ierr = |e: ort::Error| Error::Inference(format!("segmentation front end: {e}"));
        let input =
            TensorRef::from_array_view(([1usize, 1, samples.len()], samples)).map_err(ierr)?;
        let outputs = self
            .session
            .run(ort::inputs!["waveform" => input])
            .map_err(ierr)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(ierr)?;
        let expected = (samples.len() - CONV_TAPS) / CONV_STRIDE + 1;
        if shape.len() != 3 || shape[0] != 1 || shape[2] != expected as i64 || shape[1] < 1 {
            return Err(Error::Inference(format!(
                "segmentation front end returned shape {shape:?} for {} samples, expected [1, F, {expected}]",
                samples.len()
            )));
        }
        let filters = shape[1] as usize;
        if self.rows.len() != filters {
            self.rows = vec![Vec::new(); filters];
        }
        for (row, d) in self.rows.iter_mut().zip(data.chunks_exact(expected)) {
            row.extend_from_slice(d);
        }
        Ok(())
    }

    /// The frames of the window of `window.len()` samples starting at stream sample `start` into `self.input`
    /// (filters x F); returns (filters, F). Reuses the kept frames when `start` is on the stride and the window
    /// continues the stream; computes the rest (or, off the stride, everything) from the window's samples.
    fn window(&mut self, start: i64, window: &[f32]) -> Result<(usize, usize)> {
        let f = (window.len() - CONV_TAPS) / CONV_STRIDE + 1;
        if start.rem_euclid(CONV_STRIDE as i64) != 0 {
            // Off the stride (the stream's last window): nothing to share.
            self.forget();
            self.extend(window)?;
            self.copy_input(f);
            self.forget();
            return Ok((self.rows.len(), f));
        }
        let g0 = start.div_euclid(CONV_STRIDE as i64);
        let hi = self.lo + self.frames_kept();
        if self.frames_kept() == 0 || g0 < self.lo || g0 > hi {
            self.forget();
            self.lo = g0;
        } else if g0 > self.lo {
            // Frames before this window are not needed again (windows come in stream order).
            let drop = (g0 - self.lo) as usize;
            self.rows.iter_mut().for_each(|r| {
                r.drain(..drop);
            });
            self.lo = g0;
        }
        let have = self.frames_kept() as usize;
        if have < f {
            // Frames [g0 + have, g0 + f) need samples [10 (g0 + have), 10 (g0 + f - 1) + 251) of the stream.
            let a = have * CONV_STRIDE;
            let b = (f - 1) * CONV_STRIDE + CONV_TAPS;
            self.extend(&window[a..b])?;
        }
        self.copy_input(f);
        Ok((self.rows.len(), f))
    }

    /// The first `f` kept frames of every filter into `input`.
    fn copy_input(&mut self, f: usize) {
        self.input.clear();
        for r in &self.rows {
            self.input.extend_from_slice(&r[..f]);
        }
    }
}

impl Segmenter {
    /// Loads `models/segmentation-3.0.onnx` (runtime::init_onnxruntime must have succeeded; see
    /// [`crate::runtime::ModelPaths::segmentation`]). `threads` = ORT intra-op threads.
    pub fn new(model: &Path, threads: usize) -> Result<Self> {
        let merr = |why: String| Error::Model {
            path: model.to_path_buf(),
            why,
        };
        let session = crate::runtime::load_session(model, threads)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if inputs != ["waveform"] || outputs != ["log_probs"] {
            return Err(merr(format!(
                "not a segmentation-3.0 model: inputs {inputs:?} (expected [\"waveform\"]), outputs {outputs:?} \
                 (expected [\"log_probs\"])"
            )));
        }
        tracing::debug!(model = %model.display(), threads, "segmentation-3.0 loaded");
        let batch_invariant = model
            .file_name()
            .is_none_or(|n| n != crate::runtime::SEGMENTATION_INT8_FILE);
        Ok(Self {
            session,
            out: SegOutput::default(),
            batch_invariant,
            split: None,
        })
    }

    /// The 8-bit model split at its first convolution (models/split_segmentation.py): `front` =
    /// `segmentation-3.0-sincconv.onnx` (raw samples -> that convolution), `rest` =
    /// `segmentation-3.0-int8-rest.onnx` (a window's convolution frames, mean and variance -> log-probs).
    /// Windows given with their stream position ([`WindowModel::log_probs_at`]) share the convolution.
    pub fn new_split(front: &Path, rest: &Path, threads: usize) -> Result<Self> {
        let check = |session: &Session, path: &Path, ins: &[&str]| {
            let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
            let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            let out = if ins == ["waveform"] {
                "conv"
            } else {
                "log_probs"
            };
            if inputs != ins || outputs != [out] {
                return Err(Error::Model {
                    path: path.to_path_buf(),
                    why: format!(
                        "not a split segmentation-3.0 model: inputs {inputs:?} (expected {ins:?}), outputs \
                         {outputs:?} (expected [{out:?}])"
                    ),
                });
            }
            Ok(())
        };
        let front_session = crate::runtime::load_session(front, threads)?;
        check(&front_session, front, &["waveform"])?;
        let session = crate::runtime::load_session(rest, threads)?;
        check(&session, rest, &["conv", "mean", "var"])?;
        tracing::debug!(front = %front.display(), rest = %rest.display(), threads, "segmentation-3.0 loaded (split)");
        Ok(Self {
            session,
            out: SegOutput::default(),
            batch_invariant: false,
            split: Some(SincConv {
                session: front_session,
                rows: Vec::new(),
                lo: 0,
                input: Vec::new(),
            }),
        })
    }

    /// Drops the first convolution's frames kept for the next window of the stream (the split model).
    pub fn forget_stream(&mut self) {
        if let Some(c) = self.split.as_mut() {
            c.forget();
        }
    }

    /// Runs the model on the window starting at stream sample `start` (see [`Segmenter::run`]); the split
    /// model reuses the first convolution's frames of the previous windows.
    pub fn run_at(&mut self, start: i64, window: &[f32]) -> Result<&SegOutput> {
        let Some(conv) = self.split.as_mut() else {
            return self.run(window);
        };
        let n = window.len();
        check_input(window, n)?;
        // The window's instance norm (population variance), in f64.
        let mean = window.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = window
            .iter()
            .map(|&x| (x as f64 - mean) * (x as f64 - mean))
            .sum::<f64>()
            / n as f64;
        let (filters, f) = conv.window(start, window)?;
        let ierr = |e: ort::Error| Error::Inference(format!("segmentation: {e}"));
        let mean = [mean as f32];
        let var = [var as f32];
        let outputs = self
            .session
            .run(ort::inputs![
                "conv" => TensorRef::from_array_view(([1usize, filters, f], &conv.input[..])).map_err(ierr)?,
                "mean" => TensorRef::from_array_view(([1usize], &mean[..])).map_err(ierr)?,
                "var" => TensorRef::from_array_view(([1usize], &var[..])).map_err(ierr)?,
            ])
            .map_err(ierr)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(ierr)?;
        self.out.log_probs = log_probs_of(shape, data, 1, n)?.pop().unwrap_or_default();
        Ok(&self.out)
    }

    /// Runs the model on one window (16 kHz mono in [-1, 1], at least [`MIN_SAMPLES`] samples; 5-10 s is the
    /// intended range, the model was trained on 10 s). The result borrows an internal buffer reused across calls.
    pub fn run(&mut self, window: &[f32]) -> Result<&SegOutput> {
        if self.split.is_some() {
            // A window on its own: nothing shared with a stream, before or after.
            self.forget_stream();
            let r = self.run_at(0, window).map(|_| ());
            self.forget_stream();
            r?;
            return Ok(&self.out);
        }
        let n = window.len();
        let mut out = self.run_batch(window, n)?;
        self.out.log_probs = out.pop().unwrap_or_default();
        Ok(&self.out)
    }

    /// Runs the model on `windows.len() / len` windows of `len` samples each, stored back to back, in one
    /// call (a batch). segmentation-3.0 treats batch items independently and ONNX Runtime's kernels give
    /// each the same result as alone, bit for bit (`tests/segmentation_batch.rs`), so batching changes
    /// nothing but the cost: the LSTMs run a matrix product per step instead of a matrix-vector product
    /// (two 5 s windows in one call cost about 0.7x two calls; `benches/stages.rs`).
    pub fn run_batch(&mut self, windows: &[f32], len: usize) -> Result<Vec<Array2<f32>>> {
        check_input(windows, len)?;
        if windows.is_empty() || !windows.len().is_multiple_of(len) {
            return Err(Error::Inference(format!(
                "segmentation batch of {} samples is not a whole number of {len}-sample windows",
                windows.len()
            )));
        }
        let b = windows.len() / len;
        if self.split.is_some() {
            let mut out = Vec::with_capacity(b);
            for w in windows.chunks_exact(len) {
                out.push(self.run(w)?.log_probs.clone());
            }
            return Ok(out);
        }
        if b > 1 && !self.batch_invariant {
            let mut out = Vec::with_capacity(b);
            for w in windows.chunks_exact(len) {
                out.extend(self.run_batch(w, len)?);
            }
            return Ok(out);
        }
        let ierr = |e: ort::Error| Error::Inference(format!("segmentation: {e}"));
        let input = TensorRef::from_array_view(([b, 1, len], windows)).map_err(ierr)?;
        let outputs = self
            .session
            .run(ort::inputs!["waveform" => input])
            .map_err(ierr)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(ierr)?;
        log_probs_of(shape, data, b, len)
    }
}

/// Refuses a window the model cannot take: shorter than [`MIN_SAMPLES`] (`len`), or with a non-finite sample.
fn check_input(samples: &[f32], len: usize) -> Result<()> {
    if len < MIN_SAMPLES {
        return Err(Error::Inference(format!(
            "segmentation needs at least {MIN_SAMPLES} samples, got {len}"
        )));
    }
    if samples.iter().any(|x| !x.is_finite()) {
        return Err(Error::Inference(
            "segmentation: non-finite sample in the window".into(),
        ));
    }
    Ok(())
}

/// The model's output for `b` windows of `len` samples, checked ([b, frame_count(len), 7], no NaN), one array
/// per window.
fn log_probs_of(shape: &[i64], data: &[f32], b: usize, len: usize) -> Result<Vec<Array2<f32>>> {
    let expected = frame_count(len);
    if shape.len() != 3
        || shape[0] != b as i64
        || shape[2] != NUM_CLASSES as i64
        || shape[1] != expected as i64
    {
        return Err(Error::Inference(format!(
            "segmentation returned shape {shape:?} for {b} window(s) of {len} samples, expected \
             [{b}, {expected}, {NUM_CLASSES}]"
        )));
    }
    if data.iter().any(|x| x.is_nan()) {
        return Err(Error::Inference("segmentation returned NaN".into()));
    }
    Ok(data
        .chunks_exact(expected * NUM_CLASSES)
        .map(|d| {
            Array2::from_shape_vec((expected, NUM_CLASSES), d.to_vec())
                .unwrap_or_else(|_| Array2::zeros((expected, NUM_CLASSES)))
        })
        .collect())
}

impl WindowModel for Segmenter {
    fn log_probs(&mut self, window: &[f32]) -> Result<ArrayView2<'_, f32>> {
        Ok(self.run(window)?.log_probs())
    }

    fn log_probs_at(&mut self, start: i64, window: &[f32]) -> Result<ArrayView2<'_, f32>> {
        Ok(self.run_at(start, window)?.log_probs())
    }

    fn batches(&self) -> bool {
        self.split.is_none()
    }

    fn new_stream(&mut self) {
        self.forget_stream();
    }

    fn log_probs_batch(&mut self, windows: &[f32], len: usize) -> Result<Vec<Array2<f32>>> {
        self.run_batch(windows, len)
    }
}

/// Soft activity [F, 3] of the local speakers A, B, C: for each speaker, the sum of the probabilities
/// (exp of the log-probs) of the powerset classes containing it. Values in [0, 1]; a row sums to the expected
/// number of active speakers.
pub fn powerset_to_activity(log_probs: ArrayView2<f32>) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((log_probs.nrows(), NUM_LOCAL));
    for (row, mut o) in log_probs.rows().into_iter().zip(out.rows_mut()) {
        for (c, &lp) in row.iter().enumerate().take(NUM_CLASSES) {
            let p = lp.exp();
            for (k, &has) in POWERSET[c].iter().enumerate() {
                if has {
                    o[k] += p;
                }
            }
        }
        o.mapv_inplace(|x: f32| x.min(1.0));
    }
    out
}

/// Probability [F, 3] that local speaker k is the *only* active speaker (the single-speaker class {k}). The
/// natural frame weight for a speaker-conditioned embedding: overlapped and doubtful frames get little weight.
pub fn powerset_exclusive(log_probs: ArrayView2<f32>) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((log_probs.nrows(), NUM_LOCAL));
    for (row, mut o) in log_probs.rows().into_iter().zip(out.rows_mut()) {
        for k in 0..NUM_LOCAL {
            o[k] = row[1 + k].exp();
        }
    }
    out
}

/// Most likely powerset class per frame (first one on ties).
pub fn powerset_argmax(log_probs: ArrayView2<f32>) -> Vec<u8> {
    log_probs
        .rows()
        .into_iter()
        .map(|row| {
            let mut best = 0;
            for c in 1..NUM_CLASSES.min(row.len()) {
                if row[c] > row[best] {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
}

/// Hard activity [F, 3]: 1 for the local speakers of each frame's most likely powerset class, else 0.
pub fn powerset_hard(log_probs: ArrayView2<f32>) -> Array2<u8> {
    let classes = powerset_argmax(log_probs);
    let mut out = Array2::zeros((classes.len(), NUM_LOCAL));
    for (c, mut o) in classes.iter().zip(out.rows_mut()) {
        for (k, &has) in POWERSET[*c as usize].iter().enumerate() {
            o[k] = u8::from(has);
        }
    }
    out
}

/// Window geometry of [`SlidingSegmentation`] (all in samples at 16 kHz).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingConfig {
    /// Window length (default 5 s = 80000). At least [`MIN_SAMPLES`].
    pub window: usize,
    /// Hop between consecutive windows (default 0.5 s = 8000). 1 ..= window.
    pub step: usize,
    /// true (default): the first window ends `step` samples into the stream, its missing past filled with zeros
    /// on the left, so output starts after `step` instead of after `window`. false: the first window runs once
    /// `window` samples have arrived. Either way window k ends at `first_end + k * step`.
    pub pad_start: bool,
}

impl Default for SlidingConfig {
    fn default() -> Self {
        Self {
            window: 80_000,
            step: 8_000,
            pad_start: true,
        }
    }
}

impl SlidingConfig {
    /// Checks the geometry.
    pub fn validate(&self) -> Result<()> {
        if self.window < MIN_SAMPLES {
            return Err(Error::Config(format!(
                "segmentation window of {} samples is shorter than the model's minimum ({MIN_SAMPLES} samples, \
                 62 ms); use 5-10 s",
                self.window
            )));
        }
        if self.step == 0 || self.step > self.window {
            return Err(Error::Config(format!(
                "segmentation step must be between 1 sample and the window ({} samples), got {}",
                self.window, self.step
            )));
        }
        Ok(())
    }

    /// End sample (exclusive) of the first window.
    pub fn first_end(&self) -> u64 {
        if self.pad_start {
            self.step as u64
        } else {
            self.window as u64
        }
    }
}

/// One segmented window of the stream.
#[derive(Clone, Debug)]
pub struct WindowResult {
    /// Stream sample index of the window's first sample; negative when the window reaches back before the stream
    /// start (that part was zeros).
    pub start: i64,
    /// Window length in samples (the model input length).
    pub len: usize,
    /// Powerset log-probabilities [F, 7].
    pub log_probs: Array2<f32>,
    /// Soft local-speaker activity [F, 3] ([`powerset_to_activity`]).
    pub activity: Array2<f32>,
}

impl WindowResult {
    /// Stream sample index one past the window's last sample.
    pub fn end(&self) -> i64 {
        self.start + self.len as i64
    }

    /// Stream position (in samples, may be fractional or negative) of the centre of local frame `i`.
    pub fn frame_center(&self, i: usize) -> f64 {
        self.start as f64 + frame_center(i)
    }
}

/// Runs a [`WindowModel`] over a stream fed incrementally: every `step` samples, on the last `window` samples.
pub struct SlidingSegmentation<M: WindowModel = Segmenter> {
    model: M,
    cfg: SlidingConfig,
    /// Retained samples; `buf[0]` is stream sample `buf_start`.
    buf: Vec<f32>,
    buf_start: u64,
    /// Samples received so far.
    pushed: u64,
    /// End (exclusive) of the next window to run.
    next_end: u64,
    /// End of the last window run (0 = none).
    last_end: u64,
    /// Model input scratch.
    scratch: Vec<f32>,
    /// Batched model input scratch ([`MAX_BATCH`] windows back to back).
    batch: Vec<f32>,
}

/// Most windows [`SlidingSegmentation::push`] gives the model in one call. Two already take most of the
/// saving (dev_05, whole process: 16.1 -> 14.3 CPU-s; four: 14.4) for +6 MB of peak RSS (four: +24 MB, the
/// first convolution's output is 2.5 MB per window).
pub const MAX_BATCH: usize = 2;

impl<M: WindowModel> SlidingSegmentation<M> {
    /// A sliding segmentation over `model` with the geometry `cfg`.
    pub fn new(model: M, cfg: SlidingConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            model,
            cfg,
            buf: Vec::new(),
            buf_start: 0,
            pushed: 0,
            next_end: cfg.first_end(),
            last_end: 0,
            scratch: Vec::with_capacity(cfg.window),
            batch: Vec::new(),
        })
    }

    /// The geometry.
    pub fn config(&self) -> SlidingConfig {
        self.cfg
    }

    /// Samples received so far.
    pub fn samples_pushed(&self) -> u64 {
        self.pushed
    }

    /// The wrapped model.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Feeds 16 kHz samples; returns the windows that became complete (in order, possibly none). When
    /// several windows complete in one call (a file read ahead of the model), they run in batches of up to
    /// [`MAX_BATCH`] windows per model call: the same results, for less work.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<WindowResult>> {
        self.buf.extend_from_slice(samples);
        self.pushed += samples.len() as u64;
        let mut out = Vec::new();
        let mut ends = Vec::new();
        while self.next_end <= self.pushed {
            ends.push(self.next_end);
            self.next_end += self.cfg.step as u64;
        }
        let per_call = if self.model.batches() { MAX_BATCH } else { 1 };
        for batch in ends.chunks(per_call) {
            if let [end] = batch {
                out.push(self.run_window(*end)?);
            } else {
                self.run_windows(batch, &mut out)?;
            }
        }
        // Keep the last `window` samples: all the next window (or a finish window) can need.
        let keep_from = self.pushed.saturating_sub(self.cfg.window as u64);
        if keep_from > self.buf_start {
            let drop = ((keep_from - self.buf_start) as usize).min(self.buf.len());
            self.buf.drain(..drop);
            self.buf_start += drop as u64;
        }
        Ok(out)
    }

    /// End of stream: runs one last window ending at the last sample if samples arrived after the last window's
    /// end (so the tail gets covered), and returns it. Afterwards the stream can continue only after [`Self::reset`].
    pub fn finish(&mut self) -> Result<Option<WindowResult>> {
        if self.pushed == 0 || self.pushed <= self.last_end {
            return Ok(None);
        }
        let end = self.pushed;
        let w = self.run_window(end)?;
        self.next_end = u64::MAX;
        Ok(Some(w))
    }

    /// Forgets the stream (keeps the model).
    pub fn reset(&mut self) {
        self.model.new_stream();
        self.buf.clear();
        self.buf_start = 0;
        self.pushed = 0;
        self.next_end = self.cfg.first_end();
        self.last_end = 0;
    }

    /// The windows ending at `ends`, in one model call.
    fn run_windows(&mut self, ends: &[u64], out: &mut Vec<WindowResult>) -> Result<()> {
        let window = self.cfg.window;
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        for &end in ends {
            self.fill_scratch(end);
            batch.extend_from_slice(&self.scratch);
        }
        let result = self.model.log_probs_batch(&batch, window);
        self.batch = batch;
        let lps = result?;
        if lps.len() != ends.len() {
            return Err(Error::Inference(format!(
                "segmentation returned {} results for a batch of {} windows",
                lps.len(),
                ends.len()
            )));
        }
        for (&end, log_probs) in ends.iter().zip(lps) {
            let activity = powerset_to_activity(log_probs.view());
            self.last_end = end;
            out.push(WindowResult {
                start: end as i64 - window as i64,
                len: window,
                log_probs,
                activity,
            });
        }
        Ok(())
    }

    /// The model input of the window ending at `end` into `scratch` (zeros before the stream start).
    fn fill_scratch(&mut self, end: u64) {
        let window = self.cfg.window;
        let start = end as i64 - window as i64;
        self.scratch.clear();
        if start < 0 {
            self.scratch.resize((-start) as usize, 0.0);
        }
        let from = start.max(0) as u64;
        debug_assert!(from >= self.buf_start, "sliding buffer trimmed too far");
        let a = (from - self.buf_start) as usize;
        let b = (end - self.buf_start) as usize;
        self.scratch.extend_from_slice(&self.buf[a..b]);
        debug_assert_eq!(self.scratch.len(), window);
    }

    fn run_window(&mut self, end: u64) -> Result<WindowResult> {
        let window = self.cfg.window;
        let start = end as i64 - window as i64;
        self.fill_scratch(end);
        let lp = self.model.log_probs_at(start, &self.scratch)?;
        let log_probs = lp.to_owned();
        let activity = powerset_to_activity(log_probs.view());
        self.last_end = end;
        Ok(WindowResult {
            start,
            len: window,
            log_probs,
            activity,
        })
    }
}

/// How the windows covering a frame are weighted against each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// Plain average.
    Uniform,
    /// Hamming window over each window's span (0.08 at its edges, 1 at its centre): favours the frames a window
    /// sees with context on both sides.
    Hamming,
}

/// Geometry of the [`Aggregator`] (samples at 16 kHz).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AggregatorConfig {
    /// Window length (as in [`SlidingConfig`]).
    pub window: usize,
    /// Hop between windows (as in [`SlidingConfig`]).
    pub step: usize,
    /// Output frame hop; output frame g covers samples `[g * frame, (g + 1) * frame)` of the stream. Default
    /// [`FRAME_STEP`] (the model's 16.875 ms); 160 gives a 10 ms grid.
    pub frame: usize,
    /// Weighting of the overlapping windows.
    pub weighting: Weighting,
    /// Latency knob, in samples: a frame is settled once the newest window ends at least `latency` samples after
    /// the frame's centre, even if later windows would still cover it (their contributions to settled frames are
    /// dropped). `None` (default) or anything >= `window - step`: settle only when no future window can cover
    /// the frame, i.e. `window - step` behind the newest window's end.
    pub latency: Option<usize>,
}

impl AggregatorConfig {
    /// Aggregation matching a sliding segmentation, Hamming weighting, model frame grid, natural latency.
    pub fn for_sliding(s: &SlidingConfig) -> Self {
        Self {
            window: s.window,
            step: s.step,
            frame: FRAME_STEP,
            weighting: Weighting::Hamming,
            latency: None,
        }
    }

    /// Samples between the newest window's end and the settled boundary: `min(latency, window - step)`. Measured
    /// from the live edge, a frame becomes final between this and this + step after it was captured (windows
    /// arrive every `step`), plus the model's run time.
    pub fn settle_delay(&self) -> usize {
        let natural = self.window.saturating_sub(self.step);
        self.latency.map_or(natural, |l| l.min(natural))
    }
}

#[derive(Clone, Debug, Default)]
struct FrameAcc {
    /// Sum of window weights covering the frame.
    weight: f32,
    /// Weighted sum of per-window speaker counts (sum over all local speakers of their activity).
    count: f32,
    /// Weighted sum of activity per global speaker.
    act: Vec<f32>,
}

/// One output frame of the stream timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct AggFrame {
    /// Frame index on the output grid.
    pub index: u64,
    /// First stream sample of the frame (`index * frame`).
    pub start: u64,
    /// Aggregated activity per global speaker (index = global speaker id, length = number of global speakers
    /// seen so far): weighted average over all windows covering the frame, a window that did not map any local
    /// speaker to that global speaker counting as 0.
    pub activity: Vec<f32>,
    /// Weighted average of the per-window expected number of active speakers (all local speakers, mapped or not).
    pub count_raw: f32,
    /// `round(count_raw)`: the number of speakers active in this frame (pyannote's "speaker count").
    pub count: usize,
    /// Sum of the weights of the windows that covered the frame (0 = never covered).
    pub weight: f32,
    /// True if the frame is final.
    pub settled: bool,
}

impl AggFrame {
    /// The `count` global speakers with the highest aggregated activity (ties: lower id first), leaving out
    /// speakers with zero activity; pyannote's reconstruction rule. Sorted by id.
    pub fn top_speakers(&self) -> Vec<usize> {
        let mut ids: Vec<usize> = (0..self.activity.len())
            .filter(|&k| self.activity[k] > 0.0)
            .collect();
        ids.sort_by(|&a, &b| {
            self.activity[b]
                .partial_cmp(&self.activity[a])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        ids.truncate(self.count);
        ids.sort_unstable();
        ids
    }

    /// Global speakers whose aggregated activity is above `threshold`.
    pub fn active(&self, threshold: f32) -> Vec<usize> {
        (0..self.activity.len())
            .filter(|&k| self.activity[k] > threshold)
            .collect()
    }

    /// Start time in seconds (16 kHz).
    pub fn time(&self) -> f64 {
        self.start as f64 / f64::from(crate::SAMPLE_RATE)
    }
}

/// Merges overlapping windows into a per-frame stream timeline. Feed windows in order of start with
/// [`Aggregator::add_window`]; read final frames with [`Aggregator::pop_settled`] and the current estimate of
/// the others with [`Aggregator::tentative`].
///
/// A window starting at stream sample `s` (length `window`) covers the output frames whose centre
/// `(g + 0.5) * frame` lies in `[s, s + window)`; its value there is its local activity linearly interpolated
/// between local frame centres (`s + i * 270 + 495.5`, clamped at both ends), so any window step and any output
/// grid line up.
pub struct Aggregator {
    cfg: AggregatorConfig,
    /// Frames `first ..` (first = the first frame not yet popped).
    frames: VecDeque<FrameAcc>,
    first: u64,
    /// Frames `< settled` are final.
    settled: u64,
    /// Number of global speakers seen (max mapped id + 1).
    speakers: usize,
    /// End of the newest window added.
    last_end: Option<i64>,
    finished: bool,
}

impl Aggregator {
    /// A new, empty timeline.
    pub fn new(cfg: AggregatorConfig) -> Result<Self> {
        if cfg.frame == 0 {
            return Err(Error::Config(
                "aggregation frame must be >= 1 sample".into(),
            ));
        }
        if cfg.window < MIN_SAMPLES || cfg.step == 0 || cfg.step > cfg.window {
            return Err(Error::Config(format!(
                "aggregation needs window >= {MIN_SAMPLES} and 1 <= step <= window, got window {} step {}",
                cfg.window, cfg.step
            )));
        }
        Ok(Self {
            cfg,
            frames: VecDeque::new(),
            first: 0,
            settled: 0,
            speakers: 0,
            last_end: None,
            finished: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AggregatorConfig {
        &self.cfg
    }

    /// Number of global speakers seen so far.
    pub fn speakers(&self) -> usize {
        self.speakers
    }

    /// Frames with index below this are settled (final).
    pub fn settled_until(&self) -> u64 {
        self.settled
    }

    /// One past the last frame covered by any window so far.
    pub fn covered_until(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    fn center(&self, g: u64) -> f64 {
        (g as f64 + 0.5) * self.cfg.frame as f64
    }

    /// First frame whose centre is >= `pos` (samples).
    fn first_frame_at(&self, pos: f64) -> u64 {
        let f = self.cfg.frame as f64;
        let g = (pos / f - 0.5).ceil();
        if g <= 0.0 {
            0
        } else {
            g as u64
        }
    }

    fn weight(&self, offset: f64) -> f32 {
        match self.cfg.weighting {
            Weighting::Uniform => 1.0,
            Weighting::Hamming => {
                let n = self.cfg.window as f64;
                let u = (offset / n).clamp(0.0, 1.0);
                (0.54 - 0.46 * (2.0 * std::f64::consts::PI * u).cos()) as f32
            }
        }
    }

    /// Adds one window: it starts at stream sample `start` (negative = reaches before the stream start; that part
    /// is ignored) and is `window` samples long, `activity` is its local-speaker activity [F, L] (soft or hard,
    /// F = frame_count(window)), `mapping[l]` the global speaker of local speaker l (`None`: not mapped; it still
    /// counts towards the speaker count). Windows must come in order of start. Contributions to already settled
    /// frames are dropped.
    pub fn add_window(
        &mut self,
        start: i64,
        activity: ArrayView2<f32>,
        mapping: &[Option<usize>],
    ) -> Result<()> {
        if self.finished {
            return Err(Error::Config(
                "aggregator: window added after finish()".into(),
            ));
        }
        let (nf, nl) = activity.dim();
        if nf == 0 {
            return Err(Error::Inference("aggregator: window without frames".into()));
        }
        if mapping.len() != nl {
            return Err(Error::Config(format!(
                "aggregator: {} mapping entries for {nl} local speakers",
                mapping.len()
            )));
        }
        if let Some(prev) = self.last_end {
            if start + (self.cfg.window as i64) < prev {
                return Err(Error::Config(format!(
                    "aggregator: window starting at {start} added after one ending at {prev} (out of order)"
                )));
            }
        }
        if let Some(max) = mapping.iter().flatten().max() {
            self.speakers = self.speakers.max(max + 1);
        }
        let win = self.cfg.window as f64;
        let s = start as f64;
        let g0 = self.first_frame_at(s).max(self.settled);
        let g1 = self.first_frame_at(s + win); // exclusive
        let half = FRAME_SIZE as f64 / 2.0;
        let last = (nf - 1) as f64;
        let mut vals = vec![0.0f32; nl];
        for g in g0..g1 {
            let c = self.center(g);
            let p = ((c - s - half) / FRAME_STEP as f64).clamp(0.0, last);
            let i0 = p.floor() as usize;
            let i1 = (i0 + 1).min(nf - 1);
            let t = (p - i0 as f64) as f32;
            for (l, v) in vals.iter_mut().enumerate() {
                *v = activity[[i0, l]] * (1.0 - t) + activity[[i1, l]] * t;
            }
            let w = self.weight(c - s);
            let idx = (g - self.first) as usize;
            while self.frames.len() <= idx {
                self.frames.push_back(FrameAcc::default());
            }
            let acc = &mut self.frames[idx];
            acc.weight += w;
            acc.count += w * vals.iter().sum::<f32>();
            for (l, m) in mapping.iter().enumerate() {
                if let Some(k) = *m {
                    if acc.act.len() <= k {
                        acc.act.resize(k + 1, 0.0);
                    }
                    acc.act[k] += w * vals[l];
                }
            }
        }
        let end = start + self.cfg.window as i64;
        self.last_end = Some(self.last_end.map_or(end, |e| e.max(end)));
        let boundary = end as f64 - self.cfg.settle_delay() as f64;
        let settled = self.first_frame_at(boundary).min(self.covered_until());
        self.settled = self.settled.max(settled);
        Ok(())
    }

    /// End of stream: every covered frame becomes settled.
    pub fn finish(&mut self) {
        self.finished = true;
        self.settled = self.settled.max(self.covered_until());
    }

    /// Forgets everything (new stream).
    pub fn reset(&mut self) {
        self.frames.clear();
        self.first = 0;
        self.settled = 0;
        self.speakers = 0;
        self.last_end = None;
        self.finished = false;
    }

    fn frame(&self, g: u64) -> AggFrame {
        let acc = &self.frames[(g - self.first) as usize];
        let inv = if acc.weight > 0.0 {
            1.0 / acc.weight
        } else {
            0.0
        };
        let mut activity = vec![0.0; self.speakers];
        for (a, &x) in activity.iter_mut().zip(&acc.act) {
            *a = x * inv;
        }
        let count_raw = acc.count * inv;
        AggFrame {
            index: g,
            start: g * self.cfg.frame as u64,
            activity,
            count_raw,
            count: count_raw.round().max(0.0) as usize,
            weight: acc.weight,
            settled: g < self.settled,
        }
    }

    /// Removes and returns the settled frames not read yet, in order.
    pub fn pop_settled(&mut self) -> Vec<AggFrame> {
        let out: Vec<AggFrame> = (self.first..self.settled).map(|g| self.frame(g)).collect();
        let n = (self.settled - self.first) as usize;
        self.frames.drain(..n);
        self.first = self.settled;
        out
    }

    /// Current (tentative) estimate of the covered frames that are not settled yet, in order.
    pub fn tentative(&self) -> Vec<AggFrame> {
        (self.settled..self.covered_until())
            .map(|g| self.frame(g))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    /// Log-probs with probability `p` on class `c` and the rest spread over the others.
    fn row(c: usize, p: f32) -> [f32; NUM_CLASSES] {
        let mut r = [((1.0 - p) / 6.0).ln(); NUM_CLASSES];
        r[c] = p.ln();
        r
    }

    fn lp(rows: &[[f32; NUM_CLASSES]]) -> Array2<f32> {
        Array2::from_shape_vec(
            (rows.len(), NUM_CLASSES),
            rows.iter().flatten().copied().collect(),
        )
        .unwrap()
    }

    #[test]
    fn frame_count_formula() {
        assert_eq!(frame_count(160_000), 589);
        assert_eq!(frame_count(80_000), 293);
        assert_eq!(frame_count(991), 1);
        assert_eq!(frame_count(990), 0);
        assert_eq!(frame_count(0), 0);
        assert_eq!(frame_count(991 + 269), 1);
        assert_eq!(frame_count(991 + 270), 2);
        // Same as the nested conv / pool arithmetic of SincNet.
        for n in (991..200_000).step_by(97) {
            let n1 = (n - 251) / 10 + 1;
            let n2 = n1 / 3;
            let n4 = (n2 - 4) / 3;
            let n6 = (n4 - 4) / 3;
            assert_eq!(frame_count(n), n6, "n = {n}");
            assert_eq!(frame_count(n), (n - 721) / 270, "n = {n}");
        }
        assert_eq!(frame_center(0), 495.5);
        assert_eq!(frame_start(2), 540);
    }

    #[test]
    fn powerset_soft_sums_classes() {
        let m = lp(&[row(0, 0.9), row(1, 0.7), row(4, 0.6), row(6, 1.0)]);
        let a = powerset_to_activity(m.view());
        assert_eq!(a.dim(), (4, 3));
        let o = 0.1 / 6.0; // frame 0: every other class
        assert!((a[[0, 0]] - 3.0 * o).abs() < 1e-6, "{a}"); // {A} {A,B} {A,C}
        assert!((a[[0, 1]] - 3.0 * o).abs() < 1e-6);
        assert!((a[[0, 2]] - 3.0 * o).abs() < 1e-6);
        let o = 0.3 / 6.0;
        assert!((a[[1, 0]] - (0.7 + 2.0 * o)).abs() < 1e-6);
        assert!((a[[1, 1]] - 3.0 * o).abs() < 1e-6);
        let o = 0.4 / 6.0;
        assert!((a[[2, 0]] - (0.6 + 2.0 * o)).abs() < 1e-6); // {A,B} + {A} + {A,C}
        assert!((a[[2, 1]] - (0.6 + 2.0 * o)).abs() < 1e-6); // {A,B} + {B} + {B,C}
        assert!((a[[2, 2]] - 3.0 * o).abs() < 1e-6);
        assert!((a[[3, 0]]).abs() < 1e-6);
        assert!((a[[3, 1]] - 1.0).abs() < 1e-6);
        assert!((a[[3, 2]] - 1.0).abs() < 1e-6);
        // A row's sum is the expected number of speakers: P(1 spk) + 2 P(2 spk).
        let s: f32 = a.row(2).sum();
        assert!((s - (3.0 * (0.4 / 6.0) + 2.0 * (0.6 + 2.0 * (0.4 / 6.0)))).abs() < 1e-5);
    }

    #[test]
    fn powerset_hard_and_exclusive() {
        let m = lp(&[
            row(0, 0.5),
            row(1, 0.5),
            row(2, 0.5),
            row(3, 0.5),
            row(4, 0.5),
            row(5, 0.5),
            row(6, 0.5),
        ]);
        let h = powerset_hard(m.view());
        let expected: Array2<u8> = array![
            [0, 0, 0],
            [1, 0, 0],
            [0, 1, 0],
            [0, 0, 1],
            [1, 1, 0],
            [1, 0, 1],
            [0, 1, 1]
        ];
        assert_eq!(h, expected);
        assert_eq!(powerset_argmax(m.view()), vec![0, 1, 2, 3, 4, 5, 6]);
        let e = powerset_exclusive(m.view());
        assert!((e[[1, 0]] - 0.5).abs() < 1e-6);
        assert!((e[[4, 0]] - 0.5 / 6.0).abs() < 1e-6); // overlap frame: A alone is unlikely
        assert!((e[[3, 2]] - 0.5).abs() < 1e-6);
        // Soft argmax agrees with hard when the winner is confident.
        let s = powerset_to_activity(m.view());
        for f in 0..7 {
            for k in 0..3 {
                assert_eq!(s[[f, k]] > 0.5, h[[f, k]] == 1, "frame {f} spk {k}");
            }
        }
    }

    /// Fake model: every frame gets the same class, chosen from the window's mean sample value.
    struct Fake {
        out: Array2<f32>,
        calls: Vec<Vec<f32>>,
    }

    impl WindowModel for Fake {
        fn log_probs(&mut self, window: &[f32]) -> Result<ArrayView2<'_, f32>> {
            self.calls.push(window.to_vec());
            let f = frame_count(window.len());
            self.out = Array2::from_elem((f, NUM_CLASSES), (1e-6f32).ln());
            for i in 0..f {
                let c = if window[i * FRAME_STEP] > 0.0 { 1 } else { 0 };
                self.out[[i, c]] = 0.0;
            }
            Ok(self.out.view())
        }
    }

    #[test]
    fn sliding_schedule_padding_and_finish() {
        let fake = Fake {
            out: Array2::zeros((0, 0)),
            calls: Vec::new(),
        };
        let cfg = SlidingConfig {
            window: 4000,
            step: 1000,
            pad_start: true,
        };
        let mut s = SlidingSegmentation::new(fake, cfg).unwrap();
        let audio: Vec<f32> = (0..5500).map(|i| i as f32 + 1.0).collect();
        let mut wins = Vec::new();
        for chunk in audio.chunks(333) {
            wins.extend(s.push(chunk).unwrap());
        }
        // Windows end at 1000, 2000, ..., 5000.
        let starts: Vec<i64> = wins.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![-3000, -2000, -1000, 0, 1000]);
        let calls = &s.model_mut().calls;
        assert_eq!(calls.len(), 5);
        // First window: 3000 zeros then samples 0..1000.
        assert!(calls[0][..3000].iter().all(|&x| x == 0.0));
        assert_eq!(calls[0][3000], 1.0);
        assert_eq!(calls[0][3999], 1000.0);
        // Fifth window: samples 1000..5000 exactly.
        assert_eq!(calls[4][0], 1001.0);
        assert_eq!(calls[4][3999], 5000.0);
        for w in &wins {
            assert_eq!(w.activity.dim(), (frame_count(4000), 3));
            assert_eq!(w.end(), w.start + 4000);
        }
        // Zero-padded frames are silent, real ones speaker A.
        assert!(wins[0].activity[[0, 0]] < 1e-4);
        assert!(wins[3].activity[[0, 0]] > 0.99);
        // finish covers the tail 5000..5500 with a window ending at 5500.
        let last = s.finish().unwrap().unwrap();
        assert_eq!(last.start, 1500);
        assert_eq!(s.model_mut().calls[5][3999], 5500.0);
        assert!(s.finish().unwrap().is_none());

        // Without padding: first window once 4000 samples are in; no finish window if nothing new.
        let fake = Fake {
            out: Array2::zeros((0, 0)),
            calls: Vec::new(),
        };
        let cfg = SlidingConfig {
            pad_start: false,
            ..cfg
        };
        let mut s = SlidingSegmentation::new(fake, cfg).unwrap();
        let wins = s.push(&audio[..6000.min(audio.len())]).unwrap();
        let starts: Vec<i64> = wins.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![0, 1000]);
        let mut s2 = SlidingSegmentation::new(
            Fake {
                out: Array2::zeros((0, 0)),
                calls: Vec::new(),
            },
            cfg,
        )
        .unwrap();
        assert!(s2.push(&audio[..3000]).unwrap().is_empty());
        assert_eq!(s2.finish().unwrap().unwrap().start, -1000);
        assert!(SlidingSegmentation::new(
            Fake {
                out: Array2::zeros((0, 0)),
                calls: Vec::new()
            },
            SlidingConfig {
                window: 500,
                step: 100,
                pad_start: true
            }
        )
        .is_err());
    }

    fn agg(window: usize, step: usize, weighting: Weighting, latency: Option<usize>) -> Aggregator {
        Aggregator::new(AggregatorConfig {
            window,
            step,
            frame: FRAME_STEP,
            weighting,
            latency,
        })
        .unwrap()
    }

    fn constant(window: usize, vals: [f32; 3]) -> Array2<f32> {
        let f = frame_count(window);
        Array2::from_shape_fn((f, 3), |(_, k)| vals[k])
    }

    #[test]
    fn agreeing_windows_keep_their_activity() {
        let (w, st) = (27_000, 5_400);
        let mut a = agg(w, st, Weighting::Hamming, None);
        for k in 0..4 {
            let act = constant(w, [0.8, 0.0, 0.3]);
            a.add_window(k * st as i64, act.view(), &[Some(1), None, Some(0)])
                .unwrap();
        }
        a.finish();
        let frames = a.pop_settled();
        assert_eq!(frames.len() as u64, a.settled_until());
        assert_eq!(a.speakers(), 2);
        for f in &frames {
            assert!((f.activity[1] - 0.8).abs() < 1e-5, "{f:?}");
            assert!((f.activity[0] - 0.3).abs() < 1e-5, "{f:?}");
            assert!((f.count_raw - 1.1).abs() < 1e-5);
            assert_eq!(f.count, 1);
            assert_eq!(f.top_speakers(), vec![1]);
            assert_eq!(f.active(0.5), vec![1]);
            assert!(f.settled);
        }
        // Covers [0, 3 * st + w): frames whose centre is below that.
        let end = 3 * st + w;
        assert_eq!(frames.len(), (end as f64 / 270.0 - 0.5).ceil() as usize);
        assert!(a.tentative().is_empty());
    }

    #[test]
    fn disagreeing_windows_are_averaged() {
        let (w, st) = (27_000, 13_500);
        for weighting in [Weighting::Uniform, Weighting::Hamming] {
            let mut a = agg(w, st, weighting, None);
            a.add_window(
                0,
                constant(w, [1.0, 0.0, 0.0]).view(),
                &[Some(0), None, None],
            )
            .unwrap();
            a.add_window(
                st as i64,
                constant(w, [0.0, 0.0, 0.0]).view(),
                &[Some(0), None, None],
            )
            .unwrap();
            a.finish();
            let frames = a.pop_settled();
            for f in &frames {
                let c = (f.index as f64 + 0.5) * 270.0;
                let in0 = c < w as f64;
                let in1 = c >= st as f64;
                let expect = match (in0, in1) {
                    (true, false) => 1.0,
                    (false, true) => 0.0,
                    (true, true) => match weighting {
                        Weighting::Uniform => 0.5,
                        Weighting::Hamming => {
                            let h = |x: f64| 0.54 - 0.46 * (2.0 * std::f64::consts::PI * x).cos();
                            let w0 = h(c / w as f64);
                            let w1 = h((c - st as f64) / w as f64);
                            (w0 / (w0 + w1)) as f32
                        }
                    },
                    _ => unreachable!(),
                };
                assert!(
                    (f.activity[0] - expect).abs() < 1e-4,
                    "{weighting:?} frame {} centre {c}: {} vs {expect}",
                    f.index,
                    f.activity[0]
                );
            }
            // At the exact centre of the overlap both weights are equal: 0.5 either way.
            let mid = frames
                .iter()
                .min_by(|x, y| {
                    let d = |f: &AggFrame| ((f.index as f64 + 0.5) * 270.0 - 20_250.0).abs();
                    d(x).partial_cmp(&d(y)).unwrap()
                })
                .unwrap();
            assert!((mid.activity[0] - 0.5).abs() < 0.02, "{mid:?}");
        }
    }

    #[test]
    fn settled_boundary_and_latency_knob() {
        let (w, st) = (8_100, 2_700); // 30 and 10 model frames
        let mut a = agg(w, st, Weighting::Uniform, None);
        let act = constant(w, [1.0, 0.0, 0.0]);
        let map = [Some(0), None, None];
        a.add_window(-5_400, act.view(), &map).unwrap(); // ends at 2700
        a.add_window(-2_700, act.view(), &map).unwrap(); // ends at 5400
                                                         // Next window starts at 0 and covers every frame: nothing settled yet.
        assert_eq!(a.settled_until(), 0);
        assert!(a.pop_settled().is_empty());
        assert_eq!(a.tentative().len() as u64, a.covered_until());
        a.add_window(0, act.view(), &map).unwrap(); // ends at 8100; next starts at 2700
                                                    // Settled = frames with centre < 2700 = window end - (window - step).
        assert_eq!(a.settled_until(), 10);
        assert_eq!(a.config().settle_delay(), w - st);
        let s = a.pop_settled();
        assert_eq!(s.len(), 10);
        assert!(s
            .iter()
            .all(|f| f.settled && (f.activity[0] - 1.0).abs() < 1e-6));
        // A later window never touches them.
        let t = a.tentative();
        assert_eq!(t.first().unwrap().index, 10);
        assert!(t.iter().all(|f| !f.settled));
        assert_eq!(a.covered_until(), 30);

        // Latency knob: 1350 samples behind the newest window's end.
        let mut a = agg(w, st, Weighting::Uniform, Some(1_350));
        a.add_window(0, act.view(), &map).unwrap(); // ends at 8100
        let b = a.settled_until();
        assert_eq!(b, ((8_100.0 - 1_350.0) / 270.0 - 0.5f64).ceil() as u64);
        // The next window (covering frames 10..) disagrees: the frames already settled (< b) keep their value
        // (its contribution to them is dropped, even before they are read), the others are averaged.
        let zero = constant(w, [0.0, 0.0, 0.0]);
        a.add_window(st as i64, zero.view(), &map).unwrap();
        let b2 = a.settled_until();
        assert_eq!(b2, ((10_800.0 - 1_350.0) / 270.0 - 0.5f64).ceil() as u64);
        let s = a.pop_settled();
        assert_eq!(s.len() as u64, b2);
        for f in &s {
            // Frames 0..30 have their centre inside the first window, 10.. inside the second.
            let expect = if f.index < b {
                1.0
            } else if f.index < 30 {
                0.5
            } else {
                0.0
            };
            assert!((f.activity[0] - expect).abs() < 1e-6, "{f:?}");
        }
        let t = a.tentative();
        assert_eq!(t[0].index, b2);
        assert!(t.iter().all(|f| f.activity[0].abs() < 1e-6 && !f.settled));
        a.finish();
        let rest = a.pop_settled();
        assert_eq!(rest[0].index, b2);
        assert_eq!(rest.last().unwrap().index + 1, a.covered_until());
        assert!(a.add_window(2 * st as i64, zero.view(), &map).is_err());
    }

    #[test]
    fn count_and_top_speakers_in_overlap() {
        let w = 8_100;
        let mut a = agg(w, 2_700, Weighting::Uniform, None);
        // Two speakers at once in one window, mapped to globals 2 and 0; a third unmapped local (count only).
        a.add_window(
            0,
            constant(w, [0.9, 0.8, 0.0]).view(),
            &[Some(2), Some(0), None],
        )
        .unwrap();
        a.finish();
        let f = &a.pop_settled()[5];
        assert_eq!(f.activity.len(), 3);
        assert_eq!(f.count, 2);
        assert_eq!(f.top_speakers(), vec![0, 2]);
        let mut a = agg(w, 2_700, Weighting::Uniform, None);
        a.add_window(
            0,
            constant(w, [0.9, 0.3, 0.0]).view(),
            &[Some(0), Some(1), None],
        )
        .unwrap();
        a.finish();
        let f = &a.pop_settled()[5];
        assert_eq!(f.count, 1);
        assert_eq!(f.top_speakers(), vec![0]);
        // Frame grid of 10 ms works the same.
        let mut a = Aggregator::new(AggregatorConfig {
            window: w,
            step: 2_700,
            frame: 160,
            weighting: Weighting::Hamming,
            latency: None,
        })
        .unwrap();
        a.add_window(
            0,
            constant(w, [0.5, 0.0, 0.0]).view(),
            &[Some(0), None, None],
        )
        .unwrap();
        a.finish();
        let fr = a.pop_settled();
        assert_eq!(fr.len(), ((w as f64) / 160.0 - 0.5).ceil() as usize);
        assert!(fr.iter().all(|f| (f.activity[0] - 0.5).abs() < 1e-6));
    }

    #[test]
    fn interpolation_between_local_frames() {
        let w = 8_100;
        let f = frame_count(w);
        let mut act = Array2::zeros((f, 3));
        for i in 0..f {
            act[[i, 0]] = i as f32 / (f - 1) as f32;
        }
        let mut a = agg(w, 2_700, Weighting::Uniform, None);
        // Window starting at 135 (half a frame off the grid).
        a.add_window(135, act.view(), &[Some(0), None, None])
            .unwrap();
        a.finish();
        for fr in a.pop_settled() {
            let c = (fr.index as f64 + 0.5) * 270.0;
            if c < 135.0 {
                assert_eq!(fr.weight, 0.0);
                continue;
            }
            let p = ((c - 135.0 - 495.5) / 270.0).clamp(0.0, (f - 1) as f64);
            let expect = p / (f - 1) as f64;
            assert!((f64::from(fr.activity[0]) - expect).abs() < 1e-5);
        }
    }
}
