//! A second CAM++ session on a thread of its own, for input that runs ahead of real time (files, stdin).
//!
//! The analysis thread embeds the windows of a popped chunk one model call each; with a backlog a chunk
//! holds several windows, and on two cores the analysis thread is the pipeline's critical path while the
//! segmentation thread waits part of the time. The analysis thread hands every other window of such a
//! chunk to this worker and embeds the rest itself. Both sessions load the same model with the same fixed
//! input shape and thread count, and every call embeds one window, so a window's embedding has the same
//! bits whichever session computes it: the labels do not depend on the split or on thread timing
//! (`tests/embed_worker.rs` checks this end to end).
//!
//! [`LazyWorker`] starts the worker only once the input has run ahead for a while (not for a short file, not
//! live); it loads its session on its own thread and is used once that is ready; if loading fails, it logs
//! why and the analysis thread embeds everything itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::embed::Embedder;
use crate::{Error, Result};

/// One window for the worker: raw fbank [t, 80] (row-major), its frame weights (empty: all ones), and an
/// index the caller uses to put the embedding back.
pub struct EmbedJob {
    pub feats: Vec<f32>,
    pub frames: usize,
    pub weights: Vec<f32>,
    pub index: usize,
}

/// A job back from the worker, its buffers returned for reuse.
pub struct EmbedDone {
    pub job: EmbedJob,
    pub embedding: Result<Vec<f32>>,
}

/// The analysis thread's end of the worker.
pub struct EmbedWorker {
    jobs: Sender<EmbedJob>,
    done: Receiver<EmbedDone>,
    ready: Arc<AtomicBool>,
    /// Jobs sent and not yet received.
    pending: usize,
    /// Windows the worker embedded (debug log).
    pub embedded: u64,
}

/// Embeds one window (weighted when the embedder is).
pub fn embed_one(
    embedder: &mut Embedder,
    feats: &[f32],
    frames: usize,
    weights: &[f32],
) -> Result<Vec<f32>> {
    let view = ndarray::ArrayView2::from_shape((frames, crate::fbank::NUM_BINS), feats)
        .map_err(|e| Error::Inference(format!("window shape: {e}")))?;
    let mut out = if embedder.is_weighted() {
        let ones;
        let w = if weights.is_empty() {
            ones = vec![1.0f32; frames];
            &ones[..]
        } else {
            weights
        };
        embedder.embed_batch_weighted(&[view], &[w])?
    } else {
        embedder.embed_batch(&[view])?
    };
    out.pop()
        .ok_or_else(|| Error::Inference("the embedder returned no embedding".into()))
}

impl EmbedWorker {
    /// Starts the worker thread; `load` builds its session on that thread.
    pub fn spawn(load: LoadEmbedder) -> Result<(Self, std::thread::JoinHandle<Result<()>>)> {
        let (tx_jobs, rx_jobs) = crossbeam_channel::unbounded::<EmbedJob>();
        let (tx_done, rx_done) = crossbeam_channel::unbounded::<EmbedDone>();
        let ready = Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        let handle = std::thread::Builder::new()
            .name("embedding-2".into())
            .spawn(move || {
                let r = worker_thread(load, &r, rx_jobs, tx_done);
                crate::pipeline::log_thread_cpu("embedding-2");
                r
            })
            .map_err(|e| Error::Config(format!("cannot start the embedding-2 thread: {e}")))?;
        Ok((
            Self {
                jobs: tx_jobs,
                done: rx_done,
                ready,
                pending: 0,
                embedded: 0,
            },
            handle,
        ))
    }

    /// True once the worker's session is loaded and it takes jobs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Hands `job` to the worker; gives it back if the worker is gone.
    pub fn send(&mut self, job: EmbedJob) -> std::result::Result<(), EmbedJob> {
        match self.jobs.send(job) {
            Ok(()) => {
                self.pending += 1;
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }

    /// Waits for the next finished job (in the order sent); None when nothing is pending.
    pub fn recv(&mut self) -> Option<Result<EmbedDone>> {
        if self.pending == 0 {
            return None;
        }
        self.pending -= 1;
        Some(match self.done.recv() {
            Ok(d) => {
                self.embedded += 1;
                Ok(d)
            }
            Err(_) => Err(Error::Inference(
                "the second embedding thread stopped with windows in hand".into(),
            )),
        })
    }
}

fn worker_thread(
    load: LoadEmbedder,
    ready: &AtomicBool,
    jobs: Receiver<EmbedJob>,
    done: Sender<EmbedDone>,
) -> Result<()> {
    let mut embedder = match load() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(
                "the second embedding session did not load ({e}); the analysis thread embeds every window"
            );
            return Ok(());
        }
    };
    ready.store(true, Ordering::Release);
    for job in jobs {
        let embedding = embed_one(&mut embedder, &job.feats, job.frames, &job.weights);
        if done.send(EmbedDone { job, embedding }).is_err() {
            break;
        }
    }
    Ok(())
}

/// Loads an [`Embedder`] for the worker (on the worker's thread).
pub type LoadEmbedder = Box<dyn FnOnce() -> Result<Embedder> + Send>;

/// An [`EmbedWorker`] started on demand: once the stream is `after` samples in and a chunk holds two windows
/// or more, i.e. the input runs ahead of the analysis thread for a while. A short file (or a live-paced
/// stream) never starts it, so it costs neither start-up nor memory there, and the process never waits at
/// the end for a session it did not use.
pub struct LazyWorker {
    load: Option<LoadEmbedder>,
    after: u64,
    worker: Option<EmbedWorker>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

impl LazyWorker {
    pub fn new(load: LoadEmbedder, after: u64) -> Self {
        Self {
            load: Some(load),
            after,
            worker: None,
            handle: None,
        }
    }

    /// The worker, if started and ready; starts it when the stream is at `position` (samples) with
    /// `backlog` windows waiting in one chunk.
    pub fn get(&mut self, position: u64, backlog: usize) -> Option<&mut EmbedWorker> {
        if self.worker.is_none() && position >= self.after && backlog >= 2 {
            if let Some(load) = self.load.take() {
                match EmbedWorker::spawn(load) {
                    Ok((w, h)) => {
                        tracing::debug!(
                            at_s = position as f64 / crate::SAMPLE_RATE as f64,
                            "second CAM++ session starting"
                        );
                        self.worker = Some(w);
                        self.handle = Some(h);
                    }
                    Err(e) => tracing::warn!("{e}; the analysis thread embeds every window"),
                }
            }
        }
        self.worker.as_mut().filter(|w| w.is_ready())
    }

    /// Windows the worker embedded.
    pub fn embedded(&self) -> u64 {
        self.worker.as_ref().map_or(0, |w| w.embedded)
    }

    /// Stops the worker and waits for its thread (which may still be loading its session).
    pub fn finish(&mut self) {
        self.worker = None;
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("second CAM++ session: {e}"),
                Err(_) => tracing::warn!("second CAM++ session: the thread panicked"),
            }
        }
    }
}
