//! CAM++ speaker embeddings through ONNX Runtime.
//!
//! Input: raw Kaldi log-mel fbank frames [T, 80] from [`crate::fbank`]; the per-bin mean over exactly those T
//! frames is subtracted here (what CAM++ was trained with). Output: a 192-d embedding, not normalised.

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
    /// Model has the `weights` input (campplus_weighted.onnx).
    weighted: bool,
    /// Mean-normalised features, row-major [T, 80]; grows to the largest T seen, never shrinks.
    feats: Vec<f32>,
    /// Per-frame weights [T] (weighted model only).
    weights: Vec<f32>,
    /// Per-bin mean accumulator.
    mean: Vec<f64>,
    /// Mean-normalised features of a batch, row-major [N, T, 80]; reused.
    batch: Vec<f32>,
}

impl Embedder {
    /// Loads CAM++ ONNX (runtime::init_onnxruntime must have succeeded). `threads` = ORT intra-op threads.
    pub fn new(model: &Path, threads: usize) -> Result<Self> {
        Self::load(model, threads, false)
    }

    /// Loads the weighted-pooling CAM++ variant (`models/campplus_weighted.onnx`, see
    /// [`crate::runtime::ModelPaths::campplus_weighted`]); enables [`Embedder::embed_weighted`]. [`Embedder::embed`]
    /// also works on it (all-ones weights, same result as the plain model to ~1e-6).
    pub fn new_weighted(model: &Path, threads: usize) -> Result<Self> {
        Self::load(model, threads, true)
    }

    fn load(model: &Path, threads: usize, weighted: bool) -> Result<Self> {
        let merr = |why: String| Error::Model {
            path: model.to_path_buf(),
            why,
        };
        let session = crate::runtime::load_session(model, threads)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let expected: &[&str] = if weighted {
            &["feats", "weights"]
        } else {
            &["feats"]
        };
        if inputs != expected || outputs != ["embedding"] {
            return Err(merr(format!(
                "not a {} CAM++ model: inputs {inputs:?} (expected {expected:?}), outputs {outputs:?} \
                 (expected [\"embedding\"])",
                if weighted { "weighted" } else { "plain" }
            )));
        }
        tracing::debug!(model = %model.display(), threads, weighted, "CAM++ loaded");
        Ok(Self {
            session,
            weighted,
            feats: Vec::new(),
            weights: Vec::new(),
            mean: vec![0.0; NUM_BINS],
            batch: Vec::new(),
        })
    }

    /// True if this embedder was loaded with [`Embedder::new_weighted`].
    pub fn is_weighted(&self) -> bool {
        self.weighted
    }

    /// Raw fbank [T, 80] (T >= 10) -> 192-d embedding (not normalised). Subtracts the per-bin mean over these T frames.
    pub fn embed(&mut self, fbank_raw: ArrayView2<f32>) -> Result<Vec<f32>> {
        let t = self.prepare(fbank_raw)?;
        if self.weighted {
            self.weights.clear();
            self.weights.resize(t, 1.0);
        }
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
        if !self.weighted {
            return Err(Error::Inference(
                "embed_weighted needs the weighted CAM++ model (Embedder::new_weighted with campplus_weighted.onnx)"
                    .into(),
            ));
        }
        let t = self.prepare(fbank_raw)?;
        if weights.len() != t {
            return Err(Error::Inference(format!(
                "CAM++: {} weights for {t} fbank frames",
                weights.len()
            )));
        }
        self.weights.clear();
        let mut sum = 0.0f64;
        for &w in weights.iter() {
            if !w.is_finite() {
                return Err(Error::Inference("CAM++: non-finite frame weight".into()));
            }
            let w = w.clamp(0.0, 1.0);
            sum += f64::from(w);
            self.weights.push(w);
        }
        if sum < 1.0 {
            return Err(Error::Inference(format!(
                "CAM++: frame weights sum to {sum:.3} (< 1): nothing to embed"
            )));
        }
        self.run(t)
    }

    /// Embeds several windows of the same length in one model call: `windows[i]` is a raw fbank [T, 80], every
    /// one with the same T (>= 10). Each result is bit-for-bit what [`Embedder::embed`] returns for that window
    /// alone (the model treats the items of a batch independently; `tests/embedding_parity.rs` checks it), so
    /// batching never changes a label; it saves about a fifth of the CPU time per window at 4 windows a call.
    pub fn embed_batch(&mut self, windows: &[ArrayView2<f32>]) -> Result<Vec<Vec<f32>>> {
        let Some(first) = windows.first() else {
            return Ok(Vec::new());
        };
        if windows.len() == 1 || self.weighted {
            return windows.iter().map(|w| self.embed(*w)).collect();
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
        let outputs = if self.weighted {
            let weights =
                TensorRef::from_array_view(([1usize, t], &self.weights[..])).map_err(ierr)?;
            self.session
                .run(ort::inputs!["feats" => feats, "weights" => weights])
                .map_err(ierr)?
        } else {
            self.session
                .run(ort::inputs!["feats" => feats])
                .map_err(ierr)?
        };
        let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(ierr)?;
        check_output(data, 1)?;
        Ok(data.to_vec())
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
