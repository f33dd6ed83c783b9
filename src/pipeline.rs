//! Wires the stages into threads:
//!
//! ```text
//! source thread / cpal callback --ring A (f32, input rate, interleaved)--> vad thread
//!   (resample to 16 kHz mono, webrtc-vad + smoothing) --ring B (VadFrame)--> analysis thread
//!   (incremental fbank, sliding-window CAM++ embeddings) --channel (Analysis)--> turns thread
//!   (online clustering, tentative/final turns) --channel (Event)--> sinks
//! ```
//!
//! Stopping: raise [`Running::stop`] (signals, the dashboard's quit key, end of input). The source
//! closes ring A; each stage drains what it has, closes its output and ends; the turns thread
//! finalises every pending turn and sends [`Event::End`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringbuf::{HeapCons, HeapProd};

use crate::analysis::{FeatureTracker, SegActivity, SegConfig, WindowConfig};
use crate::capture::{CaptureStats, Microphone};
use crate::cluster::ClusterConfig;
use crate::decode::{AudioSource, InputFormat};
use crate::embed::Embedder;
use crate::events::{Control, Event};
use crate::resample::Resampler;
use crate::ring::{self, RingSignal};
use crate::runtime::ModelPaths;
use crate::segment::{Segmenter, SlidingConfig, SlidingSegmentation};
use crate::turns::{Analysis, TurnConfig, TurnTracker};
use crate::vad::{VadConfig, VadFrame, VadGate};
use crate::{Error, Result, SAMPLE_RATE};

/// Everything that shapes the pipeline.
#[derive(Debug, Clone)]
pub struct Config {
    pub vad: VadConfig,
    pub windows: WindowConfig,
    pub seg: SegConfig,
    pub cluster: ClusterConfig,
    pub turns: TurnConfig,
    /// ONNX Runtime intra-op threads for the embedding model.
    pub threads: usize,
    /// Seconds of input audio ring A holds before the microphone drops samples.
    pub ring_seconds: f64,
    /// Voice profiles that may name speakers (empty = none), and how they are matched.
    pub profiles: Vec<crate::profiles::KnownSpeaker>,
    pub matching: crate::profiles::MatchConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vad: VadConfig::default(),
            windows: WindowConfig::default(),
            seg: SegConfig::default(),
            cluster: ClusterConfig::default(),
            turns: TurnConfig::default(),
            threads: 1,
            ring_seconds: 4.0,
            profiles: Vec::new(),
            matching: crate::profiles::MatchConfig::default(),
        }
    }
}

impl Config {
    /// Checks every stage's settings before anything starts.
    pub fn validate(&self) -> Result<()> {
        self.vad.validate()?;
        self.windows.validate()?;
        if self.seg.enabled {
            self.seg.validate()?;
        }
        self.cluster.validate()?;
        if !(self.turns.final_delay >= 0.0 && self.turns.final_delay <= 60.0) {
            return Err(Error::Config(format!(
                "final delay must be 0..=60 s, not {}",
                self.turns.final_delay
            )));
        }
        if self.threads == 0 || self.threads > 64 {
            return Err(Error::Config(format!(
                "threads must be 1..=64, not {}",
                self.threads
            )));
        }
        Ok(())
    }
}

/// Where audio comes from.
pub enum Source {
    /// A file or stdin, read by a source thread. `realtime` paces it like a microphone.
    Stream {
        source: Box<dyn AudioSource>,
        realtime: bool,
    },
    /// A live device (None = default input).
    Microphone { device: Option<String> },
}

/// A running pipeline.
pub struct Running {
    /// Events for the sinks, in order.
    pub events: Receiver<Event>,
    /// Requests to the pipeline (rename, stop).
    pub controls: Sender<Control>,
    /// Raise to stop (finalise and end).
    pub stop: Arc<AtomicBool>,
    /// Input name and format as opened.
    pub input_name: String,
    pub format: InputFormat,
    /// Capture counters (dropped samples).
    pub stats: Arc<CaptureStats>,
    handles: Vec<(&'static str, JoinHandle<Result<()>>)>,
}

impl Running {
    /// Asks the pipeline to stop; it finalises and then ends the event stream.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for every thread; the first error (or a panic) is returned.
    pub fn join(self) -> Result<()> {
        let mut first: Option<Error> = None;
        for (name, h) in self.handles {
            let r = match h.join() {
                Ok(r) => r,
                Err(p) => {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(Error::Inference(format!(
                        "the {name} thread panicked: {msg}"
                    )))
                }
            };
            if let Err(e) = r {
                tracing::error!("{name} thread: {e}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn spawn(
    name: &'static str,
    f: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<(&'static str, JoinHandle<Result<()>>)> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(|h| (name, h))
        .map_err(|e| Error::Config(format!("cannot start the {name} thread: {e}")))
}

/// Starts the pipeline. Models are loaded (and checked) before any audio flows.
pub fn start(source: Source, cfg: Config, models: &ModelPaths) -> Result<Running> {
    cfg.validate()?;
    crate::runtime::init_onnxruntime()?;
    let embedder = Embedder::new(&models.campplus, cfg.threads)?;
    let segmentation = if cfg.seg.enabled {
        let sr = SAMPLE_RATE as f64;
        let sliding = SlidingConfig {
            window: (cfg.seg.window * sr).round() as usize,
            step: (cfg.seg.step * sr).round() as usize,
            pad_start: true,
        };
        let seg =
            SlidingSegmentation::new(Segmenter::new(&models.segmentation, cfg.threads)?, sliding)?;
        // A tick's probabilities must reach the turn stage before its label becomes final.
        let latency = ((cfg.turns.final_delay - cfg.seg.step).max(0.0) * sr) as u64;
        Some((seg, SegActivity::new(latency)))
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(CaptureStats::default());
    let mut handles = Vec::new();

    // Source -> ring A.
    let (input_name, format, cons_a, sig_a) = match source {
        Source::Stream { source, realtime } => {
            let format = source.format();
            let name = source.name().to_string();
            let cap = ring_capacity(format, cfg.ring_seconds);
            let (prod, cons, sig) = ring::ring::<f32>(cap);
            let (s2, st2) = (sig.clone(), stop.clone());
            handles.push(spawn("source", move || {
                source_thread(source, prod, &s2, &st2, realtime)
            })?);
            (name, format, cons, sig)
        }
        Source::Microphone { device } => {
            // The format is known only once the device is open; size the ring for 192 kHz x 8 ch.
            let cap = ring_capacity(
                InputFormat {
                    sample_rate: 192_000,
                    channels: 8,
                },
                cfg.ring_seconds,
            );
            let (prod, cons, sig) = ring::ring::<f32>(cap);
            let mic = crate::capture::open_microphone(device.as_deref(), prod, stats.clone())?;
            let (name, format) = (mic.name.clone(), mic.format);
            let (s2, st2) = (sig.clone(), stop.clone());
            handles.push(spawn("microphone", move || mic_thread(mic, &s2, &st2))?);
            (name, format, cons, sig)
        }
    };

    // ring B: VAD frames, 20 s worth.
    let frames_b = (20 * 1000 / cfg.vad.frame_ms.max(10)) as usize;
    let (prod_b, cons_b, sig_b) = ring::ring::<VadFrame>(frames_b);
    let (tx_an, rx_an) = crossbeam_channel::bounded::<Analysis>(4096);
    let (tx_ev, rx_ev) = crossbeam_channel::unbounded::<Event>();
    let (tx_ctl, rx_ctl) = crossbeam_channel::unbounded::<Control>();

    let _ = tx_ev.send(Event::Start {
        time: 0.0,
        input: input_name.clone(),
        sample_rate: format.sample_rate,
        channels: format.channels,
    });

    {
        let (vcfg, stats) = (cfg.vad.clone(), stats.clone());
        let (sa, sb) = (sig_a, sig_b.clone());
        handles.push(spawn("vad", move || {
            sa.register_consumer();
            vad_thread(vcfg, format, cons_a, &sa, prod_b, &sb, &stats)
        })?);
    }
    {
        let wcfg = cfg.windows.clone();
        let (sb, st) = (sig_b, stop.clone());
        handles.push(spawn("analysis", move || {
            sb.register_consumer();
            analysis_thread(wcfg, embedder, segmentation, cons_b, &sb, tx_an, &st)
        })?);
    }
    {
        let (tcfg, ccfg, st) = (cfg.turns.clone(), cfg.cluster.clone(), stop.clone());
        let profiles = (cfg.profiles.clone(), cfg.matching.clone());
        handles.push(spawn("turns", move || {
            turns_thread(tcfg, ccfg, profiles, rx_an, rx_ctl, tx_ev, &st)
        })?);
    }
    Ok(Running {
        events: rx_ev,
        controls: tx_ctl,
        stop,
        input_name,
        format,
        stats,
        handles,
    })
}

fn ring_capacity(f: InputFormat, seconds: f64) -> usize {
    ((f.sample_rate as f64 * f.channels as f64 * seconds.max(0.5)) as usize).max(8192)
}

/// Reads a file/stdin source into ring A; never drops (waits while the ring is full).
fn source_thread(
    mut source: Box<dyn AudioSource>,
    mut prod: HeapProd<f32>,
    sig: &RingSignal,
    stop: &AtomicBool,
    realtime: bool,
) -> Result<()> {
    let format = source.format();
    let mut buf: Vec<f32> = Vec::with_capacity(8192 * format.channels as usize);
    let started = Instant::now();
    let mut frames: u64 = 0;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        buf.clear();
        let n = match source.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        if realtime {
            // Pace: the audio may not run ahead of the wall clock.
            let due = Duration::from_secs_f64(frames as f64 / format.sample_rate as f64);
            let el = started.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
        frames += n as u64;
        if !ring::push_all_blocking(&mut prod, &buf, sig, stop) {
            break Ok(());
        }
    };
    sig.close();
    result
}

/// Keeps the microphone stream alive until stop (or until the device is lost).
fn mic_thread(mic: Microphone, sig: &RingSignal, stop: &AtomicBool) -> Result<()> {
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        while let Ok(e) = mic.errors().try_recv() {
            tracing::warn!("audio device {}: {e}", mic.name);
        }
        if mic.is_lost() {
            result = Err(Error::Device(format!(
                "{} stopped delivering audio (unplugged or the sound server went away)",
                mic.name
            )));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(mic);
    sig.close();
    result
}

#[allow(clippy::too_many_arguments)]
fn vad_thread(
    cfg: VadConfig,
    format: InputFormat,
    mut cons: HeapCons<f32>,
    sig_a: &RingSignal,
    mut prod: HeapProd<VadFrame>,
    sig_b: &RingSignal,
    stats: &CaptureStats,
) -> Result<()> {
    let result = (|| {
        let mut gate = VadGate::new(&cfg)?;
        let mut resampler = Resampler::new(format.sample_rate, format.channels)?;
        let flen = gate.frame_len();
        let ch = format.channels as usize;
        let mut inbuf = vec![0.0f32; 4096 * ch];
        let mut mono: Vec<f32> = Vec::with_capacity(4 * 4096);
        let mut held: VecDeque<VadFrame> = VecDeque::with_capacity(64);
        let mut pos: u64 = 0;
        let mut dropped_seen: u64 = 0;
        let mut pending_drop: u64 = 0;
        let never = AtomicBool::new(false);
        let emit = |f: VadFrame, prod: &mut HeapProd<VadFrame>| {
            ring::push_all_blocking(prod, &[f], sig_b, &never);
        };
        let frame_out = |mono: &[f32],
                         gate: &mut VadGate,
                         held: &mut VecDeque<VadFrame>,
                         pos: &mut u64,
                         dropped: u64,
                         prod: &mut HeapProd<VadFrame>| {
            let mut f = VadFrame {
                start: *pos,
                len: mono.len() as u16,
                dropped,
                ..VadFrame::default()
            };
            f.samples[..mono.len()].copy_from_slice(mono);
            f.power = mono.iter().map(|x| x * x).sum::<f32>() / mono.len().max(1) as f32;
            let voiced = mono.len() == flen && gate.classify(mono);
            *pos += mono.len() as u64;
            held.push_back(f);
            if let Some(d) = gate.smoother().push(voiced) {
                if let Some(mut out) = held.pop_front() {
                    out.speech = d;
                    emit(out, prod);
                }
            }
        };
        while let Some(n) = ring::pop_wait(&mut cons, &mut inbuf, sig_a) {
            // Dropped input: insert the same duration of silence so stream time stays true.
            let d = stats.dropped.load(Ordering::Relaxed);
            if d > dropped_seen {
                let lost = d - dropped_seen;
                dropped_seen = d;
                pending_drop += lost;
                let out_len = lost * SAMPLE_RATE as u64 / format.sample_rate as u64;
                mono.extend(std::iter::repeat_n(0.0, out_len as usize));
                tracing::warn!("{lost} input frames dropped (consumer fell behind)");
            }
            resampler.process(&inbuf[..n], &mut mono);
            let mut k = 0;
            while mono.len() - k >= flen {
                let dropped = std::mem::take(&mut pending_drop);
                frame_out(
                    &mono[k..k + flen],
                    &mut gate,
                    &mut held,
                    &mut pos,
                    dropped,
                    &mut prod,
                );
                k += flen;
            }
            mono.drain(..k);
        }
        resampler.finish(&mut mono);
        let mut k = 0;
        while k < mono.len() {
            let e = (k + flen).min(mono.len());
            let dropped = std::mem::take(&mut pending_drop);
            frame_out(
                &mono[k..e],
                &mut gate,
                &mut held,
                &mut pos,
                dropped,
                &mut prod,
            );
            k = e;
        }
        let decisions: Vec<bool> = gate.smoother().drain().collect();
        for (mut f, d) in held.drain(..).zip(decisions) {
            f.speech = d;
            emit(f, &mut prod);
        }
        Ok(())
    })();
    sig_b.close();
    result
}

#[allow(clippy::too_many_arguments)]
fn analysis_thread(
    cfg: WindowConfig,
    mut embedder: Embedder,
    mut segmentation: Option<(SlidingSegmentation, SegActivity)>,
    mut cons: HeapCons<VadFrame>,
    sig: &RingSignal,
    tx: Sender<Analysis>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut tracker = FeatureTracker::new(&cfg)?;
    let mut frames = vec![VadFrame::default(); 32];
    let mut end: u64 = 0;
    let mut dropped_total: u64 = 0;
    let mut busy = Duration::ZERO;
    let mut audio_since: u64 = 0;
    let mut result = Ok(());
    let mut embed = |tracker: &mut FeatureTracker, span| -> Result<Option<Analysis>> {
        let (feats, trusted) = tracker.features(span)?;
        if feats.nrows() < 10 {
            return Ok(None);
        }
        let embedding = embedder.embed(feats)?;
        Ok(Some(Analysis::Window {
            start: span.start,
            end: span.end,
            embedding,
            trusted,
        }))
    };
    'outer: while let Some(n) = ring::pop_wait(&mut cons, &mut frames, sig) {
        let t0 = Instant::now();
        for f in &frames[..n] {
            if f.dropped > 0 {
                dropped_total += f.dropped;
                let msg = Analysis::Dropped {
                    at: f.start,
                    samples: f.dropped,
                    total: dropped_total,
                    reason: "input ring overflow: processing fell behind the audio".into(),
                };
                if tx.send(msg).is_err() {
                    break 'outer;
                }
            }
            if let Some((seg, act)) = segmentation.as_mut() {
                match seg.push(f.audio()) {
                    Ok(windows) => {
                        for w in windows {
                            if let Some((first_tick, values)) =
                                act.add_window(w.start, w.len, w.log_probs.view())
                            {
                                if tx.send(Analysis::Activity { first_tick, values }).is_err() {
                                    break 'outer;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break 'outer;
                    }
                }
            }
            let msg = Analysis::Frame {
                start: f.start,
                end: f.end(),
                speech: f.speech,
                power: f.power,
            };
            if tx.send(msg).is_err() {
                break 'outer;
            }
            end = f.end();
            audio_since += f.len as u64;
            if let Some(span) = tracker.push(f.start, f.audio(), f.speech) {
                match embed(&mut tracker, span) {
                    Ok(Some(m)) => {
                        if tx.send(m).is_err() {
                            break 'outer;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        result = Err(e);
                        break 'outer;
                    }
                }
            }
        }
        busy += t0.elapsed();
        if audio_since >= SAMPLE_RATE as u64 {
            let _ = tx.send(Analysis::Load {
                audio: audio_since as f64 / SAMPLE_RATE as f64,
                busy: busy.as_secs_f64(),
            });
            audio_since = 0;
            busy = Duration::ZERO;
        }
    }
    if result.is_ok() {
        if let Some((seg, act)) = segmentation.as_mut() {
            match seg.finish() {
                Ok(w) => {
                    let mut released =
                        w.and_then(|w| act.add_window(w.start, w.len, w.log_probs.view()));
                    if let Some((first_tick, values)) = released.take() {
                        let _ = tx.send(Analysis::Activity { first_tick, values });
                    }
                    if let Some((first_tick, values)) = act.finish() {
                        let _ = tx.send(Analysis::Activity { first_tick, values });
                    }
                }
                Err(e) => result = Err(e),
            }
        }
    }
    if result.is_ok() {
        if let Some(span) = tracker.finish(end) {
            match embed(&mut tracker, span) {
                Ok(Some(m)) => {
                    let _ = tx.send(m);
                }
                Ok(None) => {}
                Err(e) => result = Err(e),
            }
        }
    }
    let _ = tx.send(Analysis::End { at: end });
    if result.is_err() {
        // Failed mid-stream: stop the source and keep draining so the upstream threads can end.
        stop.store(true, Ordering::SeqCst);
        while ring::pop_wait(&mut cons, &mut frames, sig).is_some() {}
    }
    result
}

fn turns_thread(
    tcfg: TurnConfig,
    ccfg: ClusterConfig,
    profiles: (
        Vec<crate::profiles::KnownSpeaker>,
        crate::profiles::MatchConfig,
    ),
    rx: Receiver<Analysis>,
    controls: Receiver<Control>,
    tx: Sender<Event>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut tracker = TurnTracker::new(tcfg, ccfg)?;
    tracker.set_profiles(profiles.0, profiles.1);
    let mut out = Vec::with_capacity(64);
    let mut controls_open = true;
    loop {
        let msg = if controls_open {
            crossbeam_channel::select! {
                recv(rx) -> m => m.ok(),
                recv(controls) -> c => {
                    match c {
                        Ok(Control::Rename { speaker, name }) => {
                            out.extend(tracker.rename(&speaker, &name));
                        }
                        Ok(Control::Stop) => stop.store(true, Ordering::SeqCst),
                        Err(_) => controls_open = false,
                    }
                    for e in out.drain(..) {
                        let _ = tx.send(e);
                    }
                    continue;
                }
            }
        } else {
            rx.recv().ok()
        };
        let Some(msg) = msg else { break };
        let end = matches!(msg, Analysis::End { .. });
        tracker.process(msg, &mut out);
        for e in out.drain(..) {
            // A closed event channel means every sink is gone: keep draining so upstream ends.
            let _ = tx.send(e);
        }
        if end {
            break;
        }
    }
    Ok(())
}
