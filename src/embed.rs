//! CAM++ speaker embeddings through ONNX Runtime.
//!
//! Input: raw Kaldi log-mel fbank frames [T, 80] from [`crate::fbank`]; the per-bin mean over exactly those T
//! frames is subtracted here (what CAM++ was trained with). Output: a 192-d embedding, not normalised.

use std::collections::VecDeque;
use std::path::Path;

use ndarray::{ArrayView1, ArrayView2};
use ort::session::Session;
use ort::value::TensorRef;

use crate::fbank::NUM_BINS;
use crate::{Error, Result};

/// Dimension of a CAM++ embedding.
pub const EMBEDDING_DIM: usize = 192;
/// Fewest fbank frames [`Embedder::embed`] accepts (statistics pooling is meaningless below this; ~1 s is better).
pub const MIN_FRAMES: usize = 10;

/// A CAM++ ONNX session plus reusable input buffers. One per thread.
pub struct Embedder {
    session: Session,
    /// Speaker-conditioned mode: the session is the trunk (`campplus_trunk.onnx`, frames out) and this head
    /// does the frame-weighted statistics pooling, dense layer and batch norm (`campplus_head.bin`).
    head: Option<Head>,
    /// `head.is_some()`.
    weighted: bool,
    /// Mean-normalised features, row-major [T, 80]; grows to the largest T seen, never shrinks.
    feats: Vec<f32>,
    /// Pooled frame weights (weighted mode), reused.
    pooled: Vec<f64>,
    /// Per-bin mean accumulator.
    mean: Vec<f64>,
    /// Mean-normalised features of a batch, row-major [N, T, 80]; reused.
    batch: Vec<f32>,
    /// The session takes one window of exactly this many frames ([`Embedder::new_weighted_fixed`]).
    fixed: Option<usize>,
    /// Trunk output [N, channels, T'] of the last call, reused.
    trunk_out: Vec<f32>,
}

impl Embedder {
    /// Loads CAM++ ONNX (runtime::init_onnxruntime must have succeeded). `threads` = ORT intra-op threads.
    pub fn new(model: &Path, threads: usize) -> Result<Self> {
        Self::load(model, threads, false, None)
    }

    /// Loads CAM++ for speaker-conditioned embeddings: the trunk `models/campplus_trunk.onnx` and the head
    /// `models/campplus_head.bin` (see [`crate::runtime::ModelPaths::campplus_trunk`], models/README.md); enables
    /// [`Embedder::embed_weighted`] and [`Embedder::embed_batch_weighted`]. [`Embedder::embed`] also works (all-ones
    /// weights: the plain model's result to ~1e-6). The pooling runs here, in f64, so a window's embedding is bit
    /// for bit the same alone or in a batch (the trunk is batch-invariant; an in-graph weighted pooling is not).
    pub fn new_weighted(trunk: &Path, head: &Path, threads: usize) -> Result<Self> {
        let head = Head::load(head)?;
        let mut e = Self::load(trunk, threads, true, None)?;
        e.head = Some(head);
        Ok(e)
    }

    /// As [`Embedder::new_weighted`], for windows of exactly `frames` fbank frames, one per call: the session's
    /// shapes are fixed, so it is built faster (start-up) and runs no shape arithmetic. The analysis thread gives
    /// a shorter window the audio before it as context, with weight 0 (`WindowBatcher`).
    pub fn new_weighted_fixed(
        trunk: &Path,
        head: &Path,
        threads: usize,
        frames: usize,
    ) -> Result<Self> {
        let head = Head::load(head)?;
        let mut e = Self::load(trunk, threads, true, Some(frames))?;
        e.head = Some(head);
        Ok(e)
    }

    /// The one window length a fixed-shape embedder takes (None: any length, batches of equal lengths).
    pub fn fixed_frames(&self) -> Option<usize> {
        self.fixed
    }

    fn load(model: &Path, threads: usize, weighted: bool, fixed: Option<usize>) -> Result<Self> {
        let merr = |why: String| Error::Model {
            path: model.to_path_buf(),
            why,
        };
        let session = match fixed {
            Some(f) => crate::runtime::load_session_shaped(
                model,
                threads,
                &[("batch", 1), ("frames", f as i64)],
            )?,
            None => crate::runtime::load_session(model, threads)?,
        };
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let output = if weighted { "frames" } else { "embedding" };
        if inputs != ["feats"] || outputs != [output] {
            return Err(merr(format!(
                "not a {} model: inputs {inputs:?} (expected [\"feats\"]), outputs {outputs:?} \
                 (expected [\"{output}\"])",
                if weighted { "CAM++ trunk" } else { "CAM++" }
            )));
        }
        tracing::debug!(model = %model.display(), threads, weighted, "CAM++ loaded");
        Ok(Self {
            session,
            head: None,
            weighted,
            feats: Vec::new(),
            pooled: Vec::new(),
            mean: vec![0.0; NUM_BINS],
            batch: Vec::new(),
            fixed,
            trunk_out: Vec::new(),
        })
    }

    /// True if this embedder was loaded with [`Embedder::new_weighted`].
    pub fn is_weighted(&self) -> bool {
        self.weighted
    }

    /// Raw fbank [T, 80] (T >= 10) -> 192-d embedding (not normalised). Subtracts the per-bin mean over these T frames.
    pub fn embed(&mut self, fbank_raw: ArrayView2<f32>) -> Result<Vec<f32>> {
        if self.weighted {
            let ones = vec![1.0f32; fbank_raw.nrows()];
            return self.one_weighted(fbank_raw, &ones);
        }
        let t = self.prepare(fbank_raw)?;
        self.run(t)
    }

    /// Like [`Embedder::embed`] but statistics pooling weights frame i by `weights[i]` (in [0, 1], e.g. the
    /// probability that only the target speaker is active). Needs [`Embedder::new_weighted`]. The weights must sum
    /// to at least 1; values outside [0, 1] are clamped.
    pub fn embed_weighted(
        &mut self,
        fbank_raw: ArrayView2<f32>,
        weights: ArrayView1<f32>,
    ) -> Result<Vec<f32>> {
        let w: Vec<f32> = weights.iter().copied().collect();
        self.one_weighted(fbank_raw, &w)
    }

    fn one_weighted(&mut self, fbank_raw: ArrayView2<f32>, weights: &[f32]) -> Result<Vec<f32>> {
        let mut out = self.embed_batch_weighted(&[fbank_raw], &[weights])?;
        out.pop()
            .ok_or_else(|| Error::Inference("CAM++ returned no embedding".into()))
    }

    /// Embeds several windows of the same length in one model call: `windows[i]` is a raw fbank [T, 80], every
    /// one with the same T (>= 10). Each result is bit-for-bit what [`Embedder::embed`] returns for that window
    /// alone (the model treats the items of a batch independently; `tests/embedding_parity.rs` checks it), so
    /// batching never changes a label; it saves about a fifth of the CPU time per window at 4 windows a call.
    pub fn embed_batch(&mut self, windows: &[ArrayView2<f32>]) -> Result<Vec<Vec<f32>>> {
        let Some(first) = windows.first() else {
            return Ok(Vec::new());
        };
        if self.weighted {
            let ones = vec![1.0f32; first.nrows()];
            let weights = vec![&ones[..]; windows.len()];
            return self.embed_batch_weighted(windows, &weights);
        }
        if windows.len() == 1 {
            return self.embed(*first).map(|e| vec![e]);
        }
        let t = first.nrows();
        if let Some(w) = windows.iter().find(|w| w.nrows() != t) {
            return Err(Error::Inference(format!(
                "CAM++ batch: windows of {t} and {} frames (one batch needs one length)",
                w.nrows()
            )));
        }
        let mut all = std::mem::take(&mut self.batch);
        all.clear();
        for w in windows {
            self.prepare(*w)?;
            all.extend_from_slice(&self.feats);
        }
        let n = windows.len();
        let ierr = |e: ort::Error| Error::Inference(format!("CAM++: {e}"));
        let result = (|| {
            let feats = TensorRef::from_array_view(([n, t, NUM_BINS], &all[..])).map_err(ierr)?;
            let outputs = self
                .session
                .run(ort::inputs!["feats" => feats])
                .map_err(ierr)?;
            let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(ierr)?;
            check_output(data, n)?;
            Ok(data.chunks(EMBEDDING_DIM).map(<[f32]>::to_vec).collect())
        })();
        self.batch = all;
        result
    }

    /// Embeds several windows of the same length with their own frame weights in one trunk call: `windows[i]` is
    /// a raw fbank [T, 80] (one T for all, >= 10), `weights[i]` its T frame weights (as
    /// [`Embedder::embed_weighted`]). Each result is bit for bit what that window gives alone. Needs
    /// [`Embedder::new_weighted`].
    pub fn embed_batch_weighted(
        &mut self,
        windows: &[ArrayView2<f32>],
        weights: &[&[f32]],
    ) -> Result<Vec<Vec<f32>>> {
        let Some(head) = self.head.take() else {
            return Err(Error::Inference(
                "weighted embeddings need the CAM++ trunk and head (Embedder::new_weighted)".into(),
            ));
        };
        let result = self.batch_weighted(&head, windows, weights);
        self.head = Some(head);
        result
    }

    fn batch_weighted(
        &mut self,
        head: &Head,
        windows: &[ArrayView2<f32>],
        weights: &[&[f32]],
    ) -> Result<Vec<Vec<f32>>> {
        if windows.len() != weights.len() {
            return Err(Error::Inference(format!(
                "CAM++ batch: {} windows but {} weight vectors",
                windows.len(),
                weights.len()
            )));
        }
        let Some(first) = windows.first() else {
            return Ok(Vec::new());
        };
        let t = first.nrows();
        if let Some(f) = self.fixed {
            if t != f {
                return Err(Error::Inference(format!(
                    "CAM++ trunk: a window of {t} frames for a session fixed at {f}"
                )));
            }
            if windows.len() > 1 {
                let mut out = Vec::with_capacity(windows.len());
                for (w, wt) in windows.iter().zip(weights) {
                    out.extend(self.batch_weighted(head, &[*w], &[*wt])?);
                }
                return Ok(out);
            }
        }
        for (w, wt) in windows.iter().zip(weights) {
            if w.nrows() != t {
                return Err(Error::Inference(format!(
                    "CAM++ batch: windows of {t} and {} frames (one batch needs one length)",
                    w.nrows()
                )));
            }
            if wt.len() != t {
                return Err(Error::Inference(format!(
                    "CAM++: {} weights for {t} fbank frames",
                    wt.len()
                )));
            }
            let mut sum = 0.0f64;
            for &x in wt.iter() {
                if !x.is_finite() {
                    return Err(Error::Inference("CAM++: non-finite frame weight".into()));
                }
                sum += f64::from(x.clamp(0.0, 1.0));
            }
            if sum < 1.0 {
                return Err(Error::Inference(format!(
                    "CAM++: frame weights sum to {sum:.3} (< 1): nothing to embed"
                )));
            }
        }
        let mut frames = std::mem::take(&mut self.trunk_out);
        let result = self
            .run_trunk(windows, head.channels(), &mut frames)
            .and_then(|pooled| {
                let per = head.channels() * pooled;
                let mut out = Vec::with_capacity(windows.len());
                for (f, wt) in frames.chunks(per).zip(weights) {
                    let e = head.apply(f, pooled, wt, &mut self.pooled);
                    check_output(&e, 1)?;
                    out.push(e);
                }
                Ok(out)
            });
        self.trunk_out = frames;
        result
    }

    /// Mean-normalises `windows` (equal lengths), runs the trunk on them in one call and writes its frames
    /// [n, channels, T'] into `out`; returns T'.
    fn run_trunk(
        &mut self,
        windows: &[ArrayView2<f32>],
        channels: usize,
        out: &mut Vec<f32>,
    ) -> Result<usize> {
        let n = windows.len();
        let t = windows.first().map_or(0, |w| w.nrows());
        let mut all = std::mem::take(&mut self.batch);
        all.clear();
        let result = (|| {
            for w in windows {
                self.prepare(*w)?;
                all.extend_from_slice(&self.feats);
            }
            let ierr = |e: ort::Error| Error::Inference(format!("CAM++ trunk: {e}"));
            let feats = TensorRef::from_array_view(([n, t, NUM_BINS], &all[..])).map_err(ierr)?;
            let outputs = self
                .session
                .run(ort::inputs!["feats" => feats])
                .map_err(ierr)?;
            let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(ierr)?;
            let dims: Vec<i64> = shape.iter().copied().collect();
            let pooled = pooled_len(t);
            if dims != [n as i64, channels as i64, pooled as i64] {
                return Err(Error::Inference(format!(
                    "CAM++ trunk returned shape {dims:?}, expected [{n}, {channels}, {pooled}]"
                )));
            }
            out.clear();
            out.extend_from_slice(data);
            Ok(pooled)
        })();
        self.batch = all;
        result
    }

    /// Runs the trunk alone on chunks of equal length (shared-trunk embeddings, [`TrunkFrames`]): `chunks[i]`
    /// is a raw fbank [T, 80] (T >= 10), mean-normalised over its own frames as a window is. Writes the trunk's
    /// frames [n, channels, T'] into `out` (row-major) and returns T' ([`pooled_len`]). Needs
    /// [`Embedder::new_weighted`]. Batch-invariant like [`Embedder::embed_batch_weighted`].
    pub fn trunk_batch(&mut self, chunks: &[ArrayView2<f32>], out: &mut Vec<f32>) -> Result<usize> {
        let Some(channels) = self.head.as_ref().map(Head::channels) else {
            return Err(Error::Inference(
                "shared-trunk embeddings need the CAM++ trunk and head (Embedder::new_weighted)"
                    .into(),
            ));
        };
        let Some(first) = chunks.first() else {
            out.clear();
            return Ok(0);
        };
        let t = first.nrows();
        if let Some(c) = chunks.iter().find(|c| c.nrows() != t) {
            return Err(Error::Inference(format!(
                "CAM++ trunk batch: chunks of {t} and {} frames (one batch needs one length)",
                c.nrows()
            )));
        }
        let pooled = self.run_trunk(chunks, channels, out)?;
        if out.iter().any(|x| !x.is_finite()) {
            return Err(Error::Inference("CAM++ trunk returned NaN/inf".into()));
        }
        Ok(pooled)
    }

    /// The head (pooling, dense layer, batch norm) of a weighted embedder.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// Checks the shape and writes the mean-normalised features into `self.feats`; returns T.
    fn prepare(&mut self, fbank_raw: ArrayView2<f32>) -> Result<usize> {
        let (t, bins) = fbank_raw.dim();
        if bins != NUM_BINS {
            return Err(Error::Inference(format!(
                "CAM++ expects {NUM_BINS} fbank bins per frame, got {bins}"
            )));
        }
        if t < MIN_FRAMES {
            return Err(Error::Inference(format!(
                "CAM++ needs at least {MIN_FRAMES} fbank frames, got {t}"
            )));
        }
        self.mean.iter_mut().for_each(|m| *m = 0.0);
        for row in fbank_raw.rows() {
            for (m, &x) in self.mean.iter_mut().zip(row.iter()) {
                *m += f64::from(x);
            }
        }
        let inv = 1.0 / t as f64;
        self.mean.iter_mut().for_each(|m| *m *= inv);
        self.feats.clear();
        for row in fbank_raw.rows() {
            self.feats.extend(
                row.iter()
                    .zip(&self.mean)
                    .map(|(&x, &m)| (f64::from(x) - m) as f32),
            );
        }
        Ok(t)
    }

    fn run(&mut self, t: usize) -> Result<Vec<f32>> {
        let ierr = |e: ort::Error| Error::Inference(format!("CAM++: {e}"));
        let feats =
            TensorRef::from_array_view(([1usize, t, NUM_BINS], &self.feats[..])).map_err(ierr)?;
        let outputs = self
            .session
            .run(ort::inputs!["feats" => feats])
            .map_err(ierr)?;
        let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(ierr)?;
        check_output(data, 1)?;
        Ok(data.to_vec())
    }
}

/// Frames after the trunk's one stride-2 convolution (kernel 5, padding 2): T' = floor((T - 1) / 2) + 1.
fn pooled_len(t: usize) -> usize {
    t.saturating_sub(1) / 2 + 1
}

/// The end of CAM++ after its trunk, run here: frame-weighted statistics pooling, then the dense layer and the
/// batch norm (affine=False) read from `campplus_head.bin` (layout in models/README.md and
/// models/export_campplus_trunk.py). Everything in f64.
pub struct Head {
    /// Dense weight [out][in], in = 2 x channels (mean, then std).
    w: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    eps: f64,
    inputs: usize,
}

impl Head {
    const MAGIC: &'static [u8; 8] = b"WSCAMHD1";

    /// Reads a head file (the caller verifies its checksum first: [`crate::runtime::verify_model`]).
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::Model {
            path: path.to_path_buf(),
            why,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read ({e})")))?;
        if bytes.len() < 20 || &bytes[..8] != Self::MAGIC {
            return Err(bad("not a CAM++ head file (bad magic)".into()));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (outs, ins) = (u32_at(8) as usize, u32_at(12) as usize);
        let eps = f64::from(f32::from_le_bytes([
            bytes[16], bytes[17], bytes[18], bytes[19],
        ]));
        if outs != EMBEDDING_DIM || ins == 0 || ins % 2 != 0 || eps.is_nan() || eps <= 0.0 {
            return Err(bad(format!(
                "unexpected head geometry {outs} x {ins}, eps {eps}"
            )));
        }
        let floats: Vec<f32> = bytes[20..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if floats.len() != outs * ins + 2 * outs || bytes[20..].len() % 4 != 0 {
            return Err(bad(format!(
                "head file holds {} values, expected {}",
                floats.len(),
                outs * ins + 2 * outs
            )));
        }
        let (w, rest) = floats.split_at(outs * ins);
        let (mean, var) = rest.split_at(outs);
        Ok(Self {
            w: w.to_vec(),
            mean: mean.to_vec(),
            var: var.to_vec(),
            eps,
            inputs: ins,
        })
    }

    /// Trunk channels (the pooling gives their mean and std).
    pub fn channels(&self) -> usize {
        self.inputs / 2
    }

    /// One window: `frames` [channels, pooled] (row-major trunk output), `weights` the T fbank frame weights.
    /// The weights are brought to the trunk's frame rate as the trunk's stride-2 convolution sees its input
    /// (mean over fbank frames 2j-2 ..= 2j+2 inside the window); mean = sum w x / V1, variance = sum w (x - mean)^2
    /// / (V1 - V2 / V1) (reliability weights: the plain unbiased std when every weight is 1).
    fn apply(&self, frames: &[f32], pooled: usize, weights: &[f32], wp: &mut Vec<f64>) -> Vec<f32> {
        let t = weights.len();
        wp.clear();
        for j in 0..pooled {
            let (a, b) = ((2 * j).saturating_sub(2), (2 * j + 3).min(t));
            let s: f64 = weights[a..b]
                .iter()
                .map(|&x| f64::from(x.clamp(0.0, 1.0)))
                .sum();
            wp.push(s / (b - a).max(1) as f64);
        }
        self.pool(frames, pooled, wp)
    }

    /// Statistics pooling of `frames` [channels, pooled] (row-major) with one weight per pooled frame, then
    /// the dense layer and the batch norm: mean = sum w x / V1, variance = sum w (x - mean)^2 / (V1 - V2 / V1).
    pub fn pool(&self, frames: &[f32], pooled: usize, wp: &[f64]) -> Vec<f32> {
        let v1 = wp.iter().sum::<f64>().max(1e-6);
        let v2 = wp.iter().map(|x| x * x).sum::<f64>();
        let denom = (v1 - v2 / v1).max(1e-6);
        let c = self.channels();
        let mut stats = vec![0.0f64; 2 * c];
        for ch in 0..c {
            let row = &frames[ch * pooled..(ch + 1) * pooled];
            let mean = row
                .iter()
                .zip(wp.iter())
                .map(|(&x, &w)| w * f64::from(x))
                .sum::<f64>()
                / v1;
            let var = row
                .iter()
                .zip(wp.iter())
                .map(|(&x, &w)| {
                    let d = f64::from(x) - mean;
                    w * d * d
                })
                .sum::<f64>()
                / denom;
            stats[ch] = mean;
            stats[c + ch] = var.sqrt();
        }
        (0..EMBEDDING_DIM)
            .map(|o| {
                let row = &self.w[o * self.inputs..(o + 1) * self.inputs];
                let y: f64 = row
                    .iter()
                    .zip(&stats)
                    .map(|(&w, &x)| f64::from(w) * x)
                    .sum();
                ((y - f64::from(self.mean[o])) / (f64::from(self.var[o]) + self.eps).sqrt()) as f32
            })
            .collect()
    }
}

/// Trunk frames of the recent stream for shared-trunk embeddings: the trunk runs once over consecutive
/// chunks of speech (each with a little context on both sides, [`crate::analysis::TrunkTiling`]) instead of
/// once per overlapping window, and each window's embedding pools the stored frames it covers. A trunk
/// frame is keyed by the stream index of the fbank frame at its centre (the trunk halves time: output j of a
/// chunk starting at fbank frame a sits at a + 2j).
#[derive(Debug, Default)]
pub struct TrunkFrames {
    /// (centre fbank index, channel values), centres increasing.
    frames: VecDeque<(u64, Vec<f32>)>,
    spare: Vec<Vec<f32>>,
    /// Gathered window frames [channels, P] and their pooled weights, reused.
    gathered: Vec<f32>,
    wp: Vec<f64>,
}

impl TrunkFrames {
    /// Stores the frames of one chunk's trunk output `data` [channels, pooled] (row-major) whose centres lie in
    /// fbank frames [valid_from, valid_to); the chunk's input started at fbank frame `chunk_start`.
    pub fn store(
        &mut self,
        data: &[f32],
        channels: usize,
        pooled: usize,
        chunk_start: u64,
        valid_from: u64,
        valid_to: u64,
    ) {
        for j in 0..pooled {
            let centre = chunk_start + 2 * j as u64;
            if centre < valid_from || centre >= valid_to {
                continue;
            }
            if self.frames.back().is_some_and(|(c, _)| *c >= centre) {
                continue;
            }
            let mut v = self.spare.pop().unwrap_or_default();
            v.clear();
            v.extend((0..channels).map(|ch| data[ch * pooled + j]));
            self.frames.push_back((centre, v));
        }
    }

    /// Forgets frames centred before fbank frame `index`.
    pub fn forget_before(&mut self, index: u64) {
        while self.frames.front().is_some_and(|(c, _)| *c < index) {
            if let Some((_, v)) = self.frames.pop_front() {
                self.spare.push(v);
            }
        }
    }

    /// Frames stored.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Embedding of the window over fbank frames [first, first + weights.len()): the stored trunk frames
    /// centred inside it, each weighted by the mean of the window's fbank weights over fbank frames
    /// centre-2 ..= centre+2 inside the window (as [`Head`] weights a window's own trunk output).
    pub fn embed(&mut self, head: &Head, first: u64, weights: &[f32]) -> Result<Vec<f32>> {
        let end = first + weights.len() as u64;
        let c = head.channels();
        let lo = self.frames.partition_point(|(k, _)| *k < first);
        let hi = self.frames.partition_point(|(k, _)| *k < end);
        let p = hi.saturating_sub(lo);
        if p < 2 {
            return Err(Error::Inference(format!(
                "shared trunk: {p} trunk frames for fbank frames {first}..{end}"
            )));
        }
        self.gathered.clear();
        self.gathered.resize(c * p, 0.0);
        self.wp.clear();
        for (k, (centre, v)) in self.frames.range(lo..hi).enumerate() {
            for (ch, &x) in v.iter().enumerate().take(c) {
                self.gathered[ch * p + k] = x;
            }
            let a = centre.saturating_sub(2).max(first);
            let b = (centre + 3).min(end);
            let s: f64 = (a..b)
                .map(|i| f64::from(weights[(i - first) as usize].clamp(0.0, 1.0)))
                .sum();
            self.wp.push(s / (b - a).max(1) as f64);
        }
        let e = head.pool(&self.gathered, p, &self.wp);
        check_output(&e, 1)?;
        Ok(e)
    }
}

/// The model's output holds `n` finite embeddings.
fn check_output(data: &[f32], n: usize) -> Result<()> {
    if data.len() != n * EMBEDDING_DIM {
        return Err(Error::Inference(format!(
            "CAM++ returned {} values, expected {}",
            data.len(),
            n * EMBEDDING_DIM
        )));
    }
    if data.iter().any(|x| !x.is_finite()) {
        return Err(Error::Inference(
            "CAM++ returned NaN/inf (input too short or not finite?)".into(),
        ));
    }
    Ok(())
}
