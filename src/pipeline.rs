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
use ringbuf::traits::{Consumer, Observer, Producer};
use ringbuf::{HeapCons, HeapProd};

use crate::analysis::{
    FeatureTracker, LocalWeights, SegActivity, SegConfig, SegLocals, TrunkChunk, TrunkTiling,
    WindowConfig, WindowSpan,
};
use crate::capture::{CaptureStats, Microphone};
use crate::cluster::ClusterConfig;
use crate::decode::{AudioSource, InputFormat};
use crate::embed::{Embedder, TrunkFrames};
use crate::embed_worker::{EmbedJob, EmbedWorker, LazyWorker};
use crate::events::{Control, Event};
use crate::level::Leveler;
use crate::resample::Resampler;
use crate::ring::{self, RingSignal};
use crate::runtime::ModelPaths;
use crate::segment::{Segmenter, SlidingConfig, SlidingSegmentation};
use crate::turns::{Analysis, Stage, TurnConfig, TurnTracker};
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
    /// CAM++ sessions embedding windows in parallel (1 or 2); None: 2 for a source that runs ahead of real
    /// time (file, stdin) on a machine with two or more cores and `threads` 1, else 1. On two cores the
    /// second session shares the cores with the segmentation thread and still shortens a file's run, for
    /// more CPU and ~35 MB more memory (docs/performance.md: the default row against `--embed-sessions 1`).
    pub embed_sessions: Option<usize>,
    /// Seconds of input audio ring A holds before the microphone drops samples.
    pub ring_seconds: f64,
    /// Voice profiles that may name speakers (empty = none), and how they are matched.
    pub profiles: Vec<crate::profiles::KnownSpeaker>,
    pub matching: crate::profiles::MatchConfig,
    /// Where "remember this voice" (`Control::Remember`) saves profiles (None: the default profile
    /// directory).
    pub profile_dir: Option<std::path::PathBuf>,
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
            embed_sessions: None,
            ring_seconds: 4.0,
            profiles: Vec::new(),
            matching: crate::profiles::MatchConfig::default(),
            profile_dir: None,
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
        self.turns.validate()?;
        if !(self.turns.final_delay >= 0.0 && self.turns.final_delay <= 60.0) {
            return Err(Error::Config(format!(
                "final delay must be 0..=60 s, not {}",
                self.turns.final_delay
            )));
        }
        if !(self.turns.min_pause >= 0.0 && self.turns.min_pause <= 5.0) {
            return Err(Error::Config(format!(
                "minimum pause must be 0..=5 s, not {}",
                self.turns.min_pause
            )));
        }
        if let Some(n) = self.embed_sessions.filter(|n| !(1..=2).contains(n)) {
            return Err(Error::Config(format!(
                "embedding sessions must be 1 or 2, not {n}"
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

    /// CAM++ sessions to run for a source that is `live` (delivers audio in real time) or not.
    pub fn embed_sessions(&self, live: bool) -> usize {
        self.embed_sessions.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if !live && cores >= 2 && self.threads == 1 {
                2
            } else {
                1
            }
        })
    }
}

/// Where audio comes from.
pub enum Source {
    /// A file or stdin, read by a source thread. `realtime` paces it like a microphone.
    Stream {
        source: Box<dyn AudioSource>,
        realtime: bool,
    },
    /// A live device (None = default input). A lost device is reopened for up to `reopen_timeout`
    /// (zero: give up at once).
    Microphone {
        device: Option<String>,
        reopen_timeout: Duration,
    },
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
                    Err(Error::Panic {
                        stage: name.to_string(),
                        message: msg,
                    })
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
        .spawn(move || {
            let r = f();
            log_thread_cpu(name);
            r
        })
        .map(|h| (name, h))
        .map_err(|e| Error::Config(format!("cannot start the {name} thread: {e}")))
}

/// Logs the CPU time the calling thread has used (target `whospoke::timing`, debug), as each pipeline thread
/// ends: scripts/bench.sh reads these lines to measure, within the runs it times, the busiest thread (the
/// wall-time floor on two cores). Linux: `/proc/thread-self/schedstat`, whose first field is the time spent
/// on a CPU in nanoseconds; elsewhere, or when unreadable, nothing is logged.
pub(crate) fn log_thread_cpu(thread: &str) {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok());
    if let Some(ns) = ns {
        let cpu = ns as f64 / 1e9;
        tracing::debug!(target: "whospoke::timing", thread, cpu_s = cpu, "thread CPU time");
    }
}

/// Starts the pipeline. Models are loaded (and checked) before any audio flows.
pub fn start(source: Source, cfg: Config, models: &ModelPaths) -> Result<Running> {
    cfg.validate()?;
    crate::runtime::init_onnxruntime()?;
    // The two ONNX sessions are built at the same time (start-up time).
    let (embedder, segmenter) = std::thread::scope(|s| {
        let seg = cfg.seg.enabled.then(|| {
            s.spawn(|| {
                if cfg.seg.int8 {
                    // The 8-bit model split at its first convolution, which overlapping windows share.
                    models
                        .segmentation_split()
                        .and_then(|(front, rest)| Segmenter::new_split(&front, &rest, cfg.threads))
                } else {
                    models
                        .segmentation_in(false)
                        .and_then(|p| Segmenter::new(&p, cfg.threads))
                }
            })
        });
        let embedder = if cfg.seg.enabled && cfg.seg.weighted_embeddings {
            let w = &cfg.windows;
            models
                .campplus_trunk_and_head_in(w.trunk_int8)
                .and_then(|(trunk, head)| match w.trunk_margin {
                    // Shared trunk: chunks of any length.
                    Some(_) => Embedder::new_weighted(&trunk, &head, cfg.threads),
                    None => {
                        Embedder::new_weighted_fixed(&trunk, &head, cfg.threads, w.window_frames())
                    }
                })
        } else {
            models
                .campplus_verified()
                .and_then(|p| Embedder::new(&p, cfg.threads))
        };
        let segmenter = seg
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Config(
                        "loading the segmentation model panicked".into(),
                    ))
                })
            })
            .transpose();
        (embedder, segmenter)
    });
    let (embedder, segmenter) = (embedder?, segmenter?);
    let segmentation = if let Some(segmenter) = segmenter {
        let sr = SAMPLE_RATE as f64;
        let sliding = SlidingConfig {
            window: (cfg.seg.window * sr).round() as usize,
            step: (cfg.seg.step * sr).round() as usize,
            pad_start: true,
        };
        let seg = SlidingSegmentation::new(segmenter, sliding)?;
        // A tick's probabilities must reach the turn stage before its label becomes final.
        let latency = ((cfg.turns.final_delay - cfg.seg.step).max(0.0) * sr) as u64;
        Some((seg, SegActivity::new(latency)))
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(CaptureStats::default());
    let mut handles = Vec::new();

    // A live source delivers audio in real time (for the processing-latency stamps).
    let live = match &source {
        Source::Stream { realtime, .. } => *realtime,
        Source::Microphone { .. } => true,
    };
    // Device lost/resumed/gone events from the microphone thread to the turn stage.
    let (tx_dev, rx_dev) = crossbeam_channel::unbounded::<Event>();
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
        Source::Microphone {
            device,
            reopen_timeout,
        } => {
            // The device gets a ring of its own (filled by the audio callback); the microphone thread
            // relays it into ring A, and fills ring A with silence while the device is lost.
            let (mic, mic_cons) = crate::capture::open_microphone_ring(
                device.as_deref(),
                None,
                cfg.ring_seconds,
                stats.clone(),
            )?;
            let (name, format) = (mic.name.clone(), mic.format);
            let (prod, cons, sig) = ring::ring::<f32>(ring_capacity(format, cfg.ring_seconds));
            let (s2, st2, stats2) = (sig.clone(), stop.clone(), stats.clone());
            let settings = MicSettings {
                requested: device,
                ring_seconds: cfg.ring_seconds,
                reopen_timeout,
            };
            let tx = tx_dev.clone();
            handles.push(spawn("microphone", move || {
                mic_thread(mic, mic_cons, prod, &s2, &st2, &stats2, settings, tx)
            })?);
            (name, format, cons, sig)
        }
    };
    drop(tx_dev);

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
            vad_thread(vcfg, format, cons_a, &sa, prod_b, &sb, &stats, live)
        })?);
    }
    // With segmentation on: ring B -> segmentation thread -> ring C -> analysis.
    // Segmentation thread -> analysis thread: every window's local speakers (speaker-conditioned embeddings).
    let (locals_tx, locals_rx) = if embedder.is_weighted() {
        let (t, r) = crossbeam_channel::unbounded::<SegLocals>();
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let (cons_an, sig_an) = match segmentation {
        Some((seg, act)) => {
            let (prod_c, cons_c, sig_c) = ring::ring::<VadFrame>(frames_b);
            let (sb, sc, st, tx) = (sig_b, sig_c.clone(), stop.clone(), tx_an.clone());
            handles.push(spawn("segmentation", move || {
                sb.register_consumer();
                segmentation_thread(seg, act, cons_b, &sb, prod_c, &sc, tx, locals_tx, &st)
            })?);
            (cons_c, sig_c)
        }
        None => (cons_b, sig_b),
    };
    // Files and stdin run ahead of real time: a second CAM++ session embeds every other window of a backlog
    // (the same bits as the first would: the labels do not change), started by the analysis thread once the
    // input has run ahead for WORKER_AFTER_S.
    let worker = if cfg.embed_sessions(live) >= 2 && embedder.fixed_frames().is_some() {
        let paths = models.campplus_trunk_and_head_in(cfg.windows.trunk_int8)?;
        let (threads, frames) = (cfg.threads, cfg.windows.window_frames());
        let load: crate::embed_worker::LoadEmbedder =
            Box::new(move || Embedder::new_weighted_fixed(&paths.0, &paths.1, threads, frames));
        Some(LazyWorker::new(
            load,
            (WORKER_AFTER_S * SAMPLE_RATE as f64) as u64,
        ))
    } else {
        None
    };
    {
        let mut wcfg = cfg.windows.clone();
        if !cfg.profiles.is_empty() {
            // Known voices can be named from a window this long: embed one when a region reaches it.
            wcfg.naming_window = Some(
                cfg.matching
                    .naming_window
                    .clamp(wcfg.min_window, wcfg.window),
            );
        }
        let st = stop.clone();
        handles.push(spawn("analysis", move || {
            sig_an.register_consumer();
            analysis_thread(
                wcfg, embedder, worker, cons_an, &sig_an, tx_an, locals_rx, &st,
            )
        })?);
    }
    {
        let (tcfg, ccfg, st) = (cfg.turns.clone(), cfg.cluster.clone(), stop.clone());
        let profiles = (
            cfg.profiles.clone(),
            cfg.matching.clone(),
            cfg.profile_dir.clone(),
        );
        handles.push(spawn("turns", move || {
            turns_thread(tcfg, ccfg, profiles, rx_an, rx_ctl, rx_dev, tx_ev, &st)
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
            // Pace like a sound card: 10 ms pieces, none before its last sample is due.
            let ch = format.channels.max(1) as usize;
            let piece = (format.sample_rate as usize / 100).max(1) * ch;
            for chunk in buf.chunks(piece) {
                frames += (chunk.len() / ch) as u64;
                let due = Duration::from_secs_f64(frames as f64 / format.sample_rate as f64);
                let el = started.elapsed();
                if due > el {
                    std::thread::sleep(due - el);
                }
                if !ring::push_all_blocking(&mut prod, chunk, sig, stop) {
                    break;
                }
            }
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            continue;
        }
        frames += n as u64;
        if !ring::push_all_blocking(&mut prod, &buf, sig, stop) {
            break Ok(());
        }
    };
    sig.close();
    result
}

/// A stream that delivered audio and then none for this long is taken as lost (callbacks come every
/// ~40 ms; some backends, like ALSA's pulse plugin when the server dies, just stop without an error).
const MIC_STALL: Duration = Duration::from_millis(2500);
/// A (re)opened stream that delivers nothing for this long is taken as lost (first callbacks were seen
/// 0.5-1.7 s after opening).
const MIC_FIRST_AUDIO: Duration = Duration::from_secs(6);
/// Reopen attempts: the first this long after the loss, then doubling up to `MIC_BACKOFF_MAX`.
const MIC_BACKOFF_FIRST: Duration = Duration::from_millis(250);
const MIC_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The microphone as the pipeline sees it.
struct MicSettings {
    /// `--device` as given (None: the default input), what a reopen asks for.
    requested: Option<String>,
    ring_seconds: f64,
    /// How long to retry opening a lost device before giving up (0: give up at once).
    reopen_timeout: Duration,
}

/// A device outage in progress.
struct Outage {
    /// Stream position (input frames) where the device's audio stopped.
    start: u64,
    /// `gap_frames` when it started.
    gap_before: u64,
    /// Wall-clock time the last audio arrived (stream position `start`).
    since: Instant,
    detected: Instant,
    next_try: Instant,
    backoff: Duration,
    reason: String,
}

/// Relays the microphone's own ring into ring A and watches the device. When the device is lost (a
/// stream error saying so, or no audio for [`MIC_STALL`]), it is reported (`Event::Device` lost),
/// reopened with exponential backoff for `reopen_timeout`, and meanwhile silence is pushed into ring
/// A at the wall-clock rate, so that stream time keeps running (the gap; VAD hears no speech in it).
/// When the device delivers again it is reported (`resumed`, with the gap) and relaying goes on. If
/// it does not come back in time: `gone`, ring A is closed (the pipeline finalises and flushes) and
/// the thread returns an error naming the device.
#[allow(clippy::too_many_arguments)]
fn mic_thread(
    mic: Microphone,
    cons: HeapCons<f32>,
    mut prod: HeapProd<f32>,
    sig: &RingSignal,
    stop: &AtomicBool,
    stats: &Arc<CaptureStats>,
    settings: MicSettings,
    devices: Sender<Event>,
) -> Result<()> {
    let name = mic.name.clone();
    let format = mic.format;
    let ch = format.channels.max(1) as usize;
    let rate = format.sample_rate as f64;
    let mut buf = vec![0.0f32; 4096 * ch];
    let device_frames =
        || stats.frames_in.load(Ordering::Relaxed) - stats.gap_frames.load(Ordering::Relaxed);
    let secs = |frames: u64| frames as f64 / rate;
    let send = |state, o: &Outage, gap: f64, reason: &str| {
        let gap_start = secs(o.start);
        let msg = crate::events::device_message(&name, state, gap_start, gap, reason);
        match state {
            crate::events::DeviceState::Resumed => tracing::info!("{msg}"),
            _ => tracing::warn!("{msg}"),
        }
        let _ = devices.send(Event::Device {
            time: 0.0,
            device: name.clone(),
            state,
            gap_start,
            gap,
            reason: reason.to_string(),
        });
    };
    let mut current = Some((mic, cons));
    let mut opened_at = Instant::now();
    let mut got_audio = false;
    let mut seen = device_frames();
    let mut last_audio = opened_at;
    let mut last_error: Option<String> = None;
    let mut outage: Option<Outage> = None;
    let result = 'run: loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let now = Instant::now();
        if let Some((mic, cons)) = current.as_mut() {
            while let Ok(e) = mic.errors().try_recv() {
                tracing::warn!("audio device {name}: {e}");
                last_error = Some(e);
            }
            if relay(cons, &mut prod, &mut buf, ch) > 0 {
                sig.wake();
            }
            let d = device_frames();
            if d != seen {
                seen = d;
                last_audio = now;
                got_audio = true;
                if let Some(o) = outage.take() {
                    let gap = secs(stats.gap_frames.load(Ordering::Relaxed) - o.gap_before);
                    send(crate::events::DeviceState::Resumed, &o, gap, &o.reason);
                }
            }
            let reason = if mic.is_lost() {
                Some(
                    last_error
                        .take()
                        .unwrap_or_else(|| "the device went away".into()),
                )
            } else if got_audio && now - last_audio > MIC_STALL {
                Some(format!(
                    "no audio for {:.1} s",
                    (now - last_audio).as_secs_f64()
                ))
            } else if !got_audio && now - opened_at > MIC_FIRST_AUDIO {
                Some(format!(
                    "no audio within {:.0} s of opening it",
                    MIC_FIRST_AUDIO.as_secs_f64()
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                // Whatever it delivered before going away goes first.
                while cons.occupied_len() >= ch && !stop.load(Ordering::Relaxed) {
                    if relay(cons, &mut prod, &mut buf, ch) > 0 {
                        sig.wake();
                    } else {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                if let Some((mic, _)) = current.take() {
                    mic.retire();
                }
                if outage.is_none() {
                    let o = Outage {
                        start: stats.frames_in.load(Ordering::Relaxed),
                        gap_before: stats.gap_frames.load(Ordering::Relaxed),
                        since: if got_audio { last_audio } else { opened_at },
                        detected: now,
                        next_try: now + MIC_BACKOFF_FIRST,
                        backoff: MIC_BACKOFF_FIRST,
                        reason,
                    };
                    send(crate::events::DeviceState::Lost, &o, 0.0, &o.reason);
                    outage = Some(o);
                } else {
                    tracing::info!("reopened {name} but it does not deliver audio ({reason})");
                }
            }
        }
        if let Some(o) = outage.as_mut() {
            // Silence up to the wall clock, until the device delivers again.
            let due =
                o.start + (now.saturating_duration_since(o.since).as_secs_f64() * rate) as u64;
            let have = stats.frames_in.load(Ordering::Relaxed);
            if (!got_audio || current.is_none())
                && due > have
                && push_silence(&mut prod, due - have, ch, stats) > 0
            {
                sig.wake();
            }
            if now.saturating_duration_since(o.detected) >= settings.reopen_timeout {
                if let Some((mic, _)) = current.take() {
                    mic.retire();
                }
                let gap = secs(stats.gap_frames.load(Ordering::Relaxed) - o.gap_before);
                let why = format!(
                    "retried for {:.0} s; last: {}",
                    settings.reopen_timeout.as_secs_f64(),
                    o.reason
                );
                send(crate::events::DeviceState::Gone, o, gap, &why);
                break 'run Err(Error::Device(format!(
                    "input device {name:?} lost at {:.1} s and did not come back within {} s ({})",
                    secs(o.start),
                    settings.reopen_timeout.as_secs_f64(),
                    o.reason
                )));
            }
            if current.is_none() && now >= o.next_try {
                match crate::capture::open_microphone_ring(
                    settings.requested.as_deref(),
                    Some(format),
                    settings.ring_seconds,
                    stats.clone(),
                ) {
                    Ok((m, c)) if m.format == format => {
                        tracing::info!("reopened input device {}", m.name);
                        current = Some((m, c));
                        opened_at = Instant::now();
                        got_audio = false;
                        seen = device_frames();
                    }
                    Ok((m, _)) => {
                        tracing::info!(
                            "{} reopened at {} Hz, {} ch instead of {} Hz, {} ch; retrying",
                            m.name,
                            m.format.sample_rate,
                            m.format.channels,
                            format.sample_rate,
                            format.channels
                        );
                        m.retire();
                    }
                    Err(e) => tracing::debug!("reopening {name}: {e}"),
                }
                if current.is_none() {
                    o.next_try = Instant::now() + o.backoff;
                    o.backoff = (o.backoff * 2).min(MIC_BACKOFF_MAX);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some((mic, mut cons)) = current.take() {
        // Stopped (signal, quit key): what the device already delivered is still labelled.
        relay(&mut cons, &mut prod, &mut buf, ch);
        drop(mic);
    }
    sig.close();
    result
}

/// Moves whole frames from a device's ring into ring A, as many as fit; returns the samples moved.
fn relay(cons: &mut HeapCons<f32>, prod: &mut HeapProd<f32>, buf: &mut [f32], ch: usize) -> usize {
    let mut moved = 0;
    loop {
        let room = prod.vacant_len().min(buf.len()).min(cons.occupied_len());
        let room = room - room % ch;
        if room == 0 {
            return moved;
        }
        let n = cons.pop_slice(&mut buf[..room]);
        prod.push_slice(&buf[..n]);
        moved += n;
    }
}

/// Pushes up to `frames` frames of silence into ring A (as many as fit), counted as gap frames;
/// returns the frames pushed.
fn push_silence(prod: &mut HeapProd<f32>, frames: u64, ch: usize, stats: &CaptureStats) -> u64 {
    let fit = ((prod.vacant_len() / ch) as u64).min(frames);
    if fit > 0 {
        prod.push_iter(std::iter::repeat_n(0.0f32, fit as usize * ch));
        stats.gap_frames.fetch_add(fit, Ordering::Relaxed);
        stats.frames_in.fetch_add(fit, Ordering::Relaxed);
    }
    fit
}

/// `Event::Device` messages from the microphone thread, released into the event stream when the
/// turn stage reaches their stream position (so event times never go backwards).
#[derive(Default)]
struct DeviceEvents {
    pending: VecDeque<Event>,
    /// Stream time of the last frame the turn stage saw, seconds.
    now: f64,
}

impl DeviceEvents {
    /// Before the turn stage handles `msg`: moves the device events whose position it reaches into `out`.
    fn release(&mut self, rx: &Receiver<Event>, msg: &Analysis, out: &mut Vec<Event>) {
        let sr = SAMPLE_RATE as f64;
        let (upto, cap) = match msg {
            Analysis::Frame { end, .. } => (*end as f64 / sr, f64::INFINITY),
            Analysis::End { at } => (f64::INFINITY, (*at as f64 / sr).max(self.now)),
            _ => return,
        };
        self.pending.extend(rx.try_iter());
        while let Some(Event::Device {
            state,
            gap_start,
            gap,
            ..
        }) = self.pending.front()
        {
            let at = match state {
                crate::events::DeviceState::Lost => *gap_start,
                _ => gap_start + gap,
            };
            if at > upto {
                break;
            }
            if let Some(mut e) = self.pending.pop_front() {
                if let Event::Device { time, .. } = &mut e {
                    *time = at.max(self.now).min(cap);
                }
                out.push(e);
            }
        }
        if upto.is_finite() {
            self.now = upto;
        }
    }
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
    live: bool,
) -> Result<()> {
    let result = (|| {
        let mut gate = VadGate::new(&cfg)?;
        let mut leveler = Leveler::new(&cfg.level, cfg.frame_ms);
        let mut resampler = Resampler::new(format.sample_rate, format.channels)?;
        let flen = gate.frame_len();
        let ch = format.channels as usize;
        let mut inbuf = vec![0.0f32; 4096 * ch];
        let mut mono: Vec<f32> = Vec::with_capacity(4 * 4096);
        let mut held: VecDeque<VadFrame> = VecDeque::with_capacity(64);
        let mut pos: u64 = 0;
        let mut dropped_seen: u64 = 0;
        let mut pending_drop: u64 = 0;
        // Input samples popped so far, and where (in input samples) dropped frames belong.
        let mut consumed: u64 = 0;
        let mut gaps: VecDeque<(u64, u64)> = VecDeque::new();
        let never = AtomicBool::new(false);
        let emit = |f: VadFrame, prod: &mut HeapProd<VadFrame>| {
            ring::push_all_blocking(prod, &[f], sig_b, &never);
        };
        let frame_out = |mono: &[f32],
                         gate: &mut VadGate,
                         leveler: &mut Leveler,
                         held: &mut VecDeque<VadFrame>,
                         pos: &mut u64,
                         dropped: u64,
                         arrived: Option<Instant>,
                         prod: &mut HeapProd<VadFrame>| {
            let mut f = VadFrame {
                start: *pos,
                len: mono.len() as u16,
                dropped,
                ..VadFrame::default()
            };
            f.samples[..mono.len()].copy_from_slice(mono);
            let samples = &mut f.samples[..mono.len()];
            // The input level shown is the level received, before the automatic gain.
            f.power = leveler.process(samples);
            f.gain_db = leveler.gain_db();
            let voiced = mono.len() == flen && gate.classify(samples);
            *pos += mono.len() as u64;
            held.push_back(f);
            if let Some(d) = gate.smoother().push(voiced) {
                if let Some(mut out) = held.pop_front() {
                    out.speech = d;
                    // Stamped with the input that released it: the smoother's look-ahead is
                    // algorithmic latency, not processing time.
                    out.arrived = arrived;
                    emit(out, prod);
                }
            }
        };
        let mut arrived = None;
        while let Some(n) = ring::pop_wait(&mut cons, &mut inbuf, sig_a) {
            // When the newest popped sample entered whospoke: now, less the audio queued behind it
            // (a live source delivers in real time; a file reader runs ahead, so not for files).
            let mut at = Instant::now();
            if live {
                let queued = ring::backlog(&cons) as f64 / (format.sample_rate as f64 * ch as f64);
                at = at
                    .checked_sub(Duration::from_secs_f64(queued))
                    .unwrap_or(at);
            }
            arrived = Some(at);
            crate::fault::hit(crate::fault::Stage::Vad, pos as f64 / SAMPLE_RATE as f64);
            // Dropped input: the frames that did not fit were lost after everything ring A held
            // then (`frames_in - dropped` frames kept so far). Insert the same duration of silence
            // at that point, not before the backlog, so stream time and the labels of the backlog
            // stay true to the audio clock.
            let d = stats.dropped.load(Ordering::Relaxed);
            if d > dropped_seen {
                let lost = d - dropped_seen;
                dropped_seen = d;
                let kept = stats.frames_in.load(Ordering::Relaxed).saturating_sub(d);
                gaps.push_back(((kept * ch as u64).max(consumed), lost));
                tracing::warn!("{lost} input frames dropped (consumer fell behind)");
            }
            let mut chunk = &inbuf[..n];
            while let Some(&(at, lost)) = gaps.front() {
                if at >= consumed + chunk.len() as u64 {
                    break;
                }
                let k = (at - consumed) as usize;
                resampler.process(&chunk[..k], &mut mono);
                consumed += k as u64;
                chunk = &chunk[k..];
                gaps.pop_front();
                pending_drop += lost;
                let out_len = lost * SAMPLE_RATE as u64 / format.sample_rate as u64;
                mono.extend(std::iter::repeat_n(0.0, out_len as usize));
            }
            resampler.process(chunk, &mut mono);
            consumed += chunk.len() as u64;
            let mut k = 0;
            while mono.len() - k >= flen {
                let dropped = std::mem::take(&mut pending_drop);
                frame_out(
                    &mono[k..k + flen],
                    &mut gate,
                    &mut leveler,
                    &mut held,
                    &mut pos,
                    dropped,
                    arrived,
                    &mut prod,
                );
                k += flen;
            }
            mono.drain(..k);
        }
        resampler.finish(&mut mono);
        for (_, lost) in gaps.drain(..) {
            pending_drop += lost;
            let out_len = lost * SAMPLE_RATE as u64 / format.sample_rate as u64;
            mono.extend(std::iter::repeat_n(0.0, out_len as usize));
        }
        let mut k = 0;
        while k < mono.len() {
            let e = (k + flen).min(mono.len());
            let dropped = std::mem::take(&mut pending_drop);
            frame_out(
                &mono[k..e],
                &mut gate,
                &mut leveler,
                &mut held,
                &mut pos,
                dropped,
                arrived,
                &mut prod,
            );
            k = e;
        }
        let decisions: Vec<bool> = gate.smoother().drain().collect();
        for (mut f, d) in held.drain(..).zip(decisions) {
            f.speech = d;
            f.arrived = arrived;
            emit(f, &mut prod);
        }
        Ok(())
    })();
    sig_b.close();
    result
}

/// Busy time of one compute thread per second of audio, reported as `Analysis::Load` about once a
/// second of audio.
struct LoadMeter {
    stage: Stage,
    /// 16 kHz samples handled since the last report.
    audio: u64,
    busy: Duration,
}

impl LoadMeter {
    fn new(stage: Stage) -> Self {
        Self {
            stage,
            audio: 0,
            busy: Duration::ZERO,
        }
    }

    /// Adds `busy` time; reports once a second of audio has been handled.
    fn add(&mut self, busy: Duration, tx: &Sender<Analysis>) {
        self.busy += busy;
        if self.audio >= SAMPLE_RATE as u64 {
            let _ = tx.send(Analysis::Load {
                stage: self.stage,
                audio: self.audio as f64 / SAMPLE_RATE as f64,
                busy: self.busy.as_secs_f64(),
            });
            self.audio = 0;
            self.busy = Duration::ZERO;
        }
    }
}

/// Runs segmentation-3.0 over the stream between the VAD and analysis stages, on its own thread so
/// that it overlaps with the embedding model on another core. Each frame's segmentation results
/// (if it completes a window) are sent to the turn stage *before* the frame is passed on, so the
/// turn stage sees them no later than it would if both models ran on one thread: the labels do
/// not depend on thread timing.
#[allow(clippy::too_many_arguments)]
fn segmentation_thread(
    mut seg: SlidingSegmentation,
    mut act: SegActivity,
    mut cons: HeapCons<VadFrame>,
    sig_in: &RingSignal,
    mut prod: HeapProd<VadFrame>,
    sig_out: &RingSignal,
    tx: Sender<Analysis>,
    locals_tx: Option<Sender<SegLocals>>,
    stop: &AtomicBool,
) -> Result<()> {
    // Up to SEG_POP_FRAMES frames at a time: live, one frame is waiting; a file read ahead of the model
    // fills the pop, and its windows run batched (`SlidingSegmentation::push`).
    let mut frames = vec![VadFrame::default(); SEG_POP_FRAMES];
    let mut audio: Vec<f32> = Vec::new();
    let never = AtomicBool::new(false);
    let mut load = LoadMeter::new(Stage::Segmentation);
    let mut result = Ok(());
    let mut failed = false;
    // `visible_at`: the end of the frame that completed the window (see `Analysis::Activity`).
    let send = |released: Option<(u64, Vec<(f32, f32)>)>, visible_at: u64| {
        if let Some((first_tick, values)) = released {
            // A closed channel means the turn stage is gone; the frames still flow so upstream ends.
            let _ = tx.send(Analysis::Activity {
                first_tick,
                values,
                visible_at,
            });
        }
    };
    while let Some(n) = ring::pop_wait(&mut cons, &mut frames, sig_in) {
        let t0 = Instant::now();
        if !failed {
            audio.clear();
            for f in &frames[..n] {
                crate::fault::hit(
                    crate::fault::Stage::Segmentation,
                    f.start as f64 / SAMPLE_RATE as f64,
                );
                audio.extend_from_slice(f.audio());
                load.audio += f.len as u64;
            }
            match seg.push(&audio) {
                Ok(windows) => {
                    for w in windows {
                        if let Some(ltx) = &locals_tx {
                            // The analysis thread may be gone (it ended on an error); frames still flow.
                            let _ = ltx.send(SegLocals::from_log_probs(
                                w.start,
                                w.len,
                                w.log_probs.view(),
                            ));
                        }
                        // Visible from the end of the frame that completed the window, as if the frames
                        // had come one by one.
                        let done = frames[..n]
                            .iter()
                            .map(|f| f.end())
                            .find(|&e| e as i64 >= w.end())
                            .unwrap_or_else(|| frames[n - 1].end());
                        send(act.add_window(w.start, w.len, w.log_probs.view()), done);
                    }
                }
                Err(e) => {
                    // Stop the source; keep passing frames on so every stage can end.
                    result = Err(e);
                    failed = true;
                    stop.store(true, Ordering::SeqCst);
                }
            }
        }
        load.add(t0.elapsed(), &tx);
        ring::push_all_blocking(&mut prod, &frames[..n], sig_out, &never);
    }
    if !failed {
        match seg.finish() {
            Ok(w) => {
                let tail = w.and_then(|w| act.add_window(w.start, w.len, w.log_probs.view()));
                send(tail, u64::MAX);
                send(act.finish(), u64::MAX);
            }
            Err(e) => result = Err(e),
        }
    }
    sig_out.close();
    result
}

/// Most windows one CAM++ call embeds (see [`Embedder::embed_batch`]); 4 saves about a fifth of the time
/// per window on this model, more saves little.
const MAX_BATCH: usize = 4;
/// VAD frames taken from the ring at once; with a backlog (files, or after a stall) this many frames hold
/// several windows, which are then embedded in batches.
const POP_FRAMES: usize = 256;
/// Frames the segmentation thread takes at once: 4 s of 30 ms frames, four 1 s steps (batched by
/// `segment::MAX_BATCH` windows per model call when a file runs ahead).
const SEG_POP_FRAMES: usize = 134;

/// Stream seconds after which a backlog starts the second CAM++ session ([`LazyWorker`]): a shorter file is done
/// before the session would be loaded (~0.15 s of CPU).
const WORKER_AFTER_S: f64 = 10.0;

/// Messages of one popped chunk, held back in stream order until the chunk's windows are embedded.
#[derive(Default)]
struct WindowBatcher {
    /// Every window is embedded at exactly this many fbank frames (`Embedder::fixed_frames`): a shorter one
    /// takes the frames before it as context, with weight 0.
    fixed: Option<usize>,
    /// Outgoing messages in stream order; a window's `embedding` is empty until embedded.
    out: Vec<Analysis>,
    /// Raw fbank [T, 80] of each pending window (row-major), its T, its index in `out`, and its frame
    /// weights (empty: unweighted).
    jobs: Vec<(Vec<f32>, usize, usize, Vec<f32>)>,
    /// Spent feature buffers for reuse.
    spare: Vec<Vec<f32>>,
    /// Spent weight buffers for reuse.
    spare_weights: Vec<Vec<f32>>,
    /// Windows embedded with speaker-conditioned weights (for the debug log).
    weighted: u64,
    /// Model calls by batch size (index = size - 1), for the debug log.
    calls: [u64; MAX_BATCH],
}

impl WindowBatcher {
    /// Queues `msg` behind any pending window, or returns it for sending now.
    fn pass(&mut self, msg: Analysis) -> Option<Analysis> {
        if self.jobs.is_empty() {
            Some(msg)
        } else {
            self.out.push(msg);
            None
        }
    }

    /// Queues the window `span` (its features copied now, while the fbank history holds them), with its
    /// speaker-conditioned frame weights when `locals` has them.
    fn window(
        &mut self,
        tracker: &mut FeatureTracker,
        span: WindowSpan,
        locals: Option<&mut LocalWeights>,
    ) -> Result<()> {
        let (feats, trusted, first) = tracker.features_from(span)?;
        let t = feats.nrows();
        if t < crate::embed::MIN_FRAMES {
            return Ok(());
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend(feats.iter());
        let mut weights = self.spare_weights.pop().unwrap_or_default();
        match locals {
            Some(l) => {
                if l.weights(span.start, span.end, first, t, &mut weights) {
                    self.weighted += 1;
                }
            }
            None => weights.clear(),
        }
        let t = match self.fixed {
            Some(f) if t < f => {
                with_context(tracker, first, t, f, &mut buf, &mut weights);
                f
            }
            _ => t,
        };
        self.jobs.push((buf, t, self.out.len(), weights));
        self.out.push(Analysis::Window {
            start: span.start,
            end: span.end,
            embedding: Vec::new(),
            trusted,
        });
        Ok(())
    }

    /// Embeds the pending windows, equal lengths together in batches of at most [`MAX_BATCH`], and sends
    /// everything held in stream order. Err(None) = the receiver is gone.
    fn flush(
        &mut self,
        embedder: &mut Embedder,
        worker: Option<&mut EmbedWorker>,
        tx: &Sender<Analysis>,
    ) -> std::result::Result<(), Option<crate::Error>> {
        let mut jobs = std::mem::take(&mut self.jobs);
        if let Some(w) = worker.filter(|w| self.fixed.is_some() && jobs.len() >= 2 && w.is_ready())
        {
            return self.flush_shared(embedder, w, jobs, tx);
        }
        // Stable: windows of one length keep their order.
        jobs.sort_by_key(|j| j.1);
        let max_batch = if self.fixed.is_some() { 1 } else { MAX_BATCH };
        for group in jobs.chunk_by(|a, b| a.1 == b.1) {
            for batch in group.chunks(max_batch) {
                let views = batch
                    .iter()
                    .map(|(buf, t, _, _)| {
                        ndarray::ArrayView2::from_shape((*t, crate::fbank::NUM_BINS), &buf[..])
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Some(crate::Error::Inference(format!("window shape: {e}"))))?;
                let embeddings = if embedder.is_weighted() {
                    // Unweighted windows of a weighted batch: all-ones weights (the plain model's pooling).
                    let ones: Vec<f32> = vec![1.0; batch[0].1];
                    let weights: Vec<&[f32]> = batch
                        .iter()
                        .map(|(_, _, _, w)| if w.is_empty() { &ones[..] } else { &w[..] })
                        .collect();
                    embedder.embed_batch_weighted(&views, &weights)
                } else {
                    embedder.embed_batch(&views)
                }
                .map_err(Some)?;
                self.calls[batch.len() - 1] += 1;
                for ((_, _, at, _), e) in batch.iter().zip(embeddings) {
                    if let Some(Analysis::Window { embedding, .. }) = self.out.get_mut(*at) {
                        *embedding = e;
                    }
                }
            }
        }
        for (buf, _, _, w) in jobs {
            self.spare.push(buf);
            self.spare_weights.push(w);
        }
        self.send_out(tx)
    }

    /// As [`WindowBatcher::flush`] for a fixed-shape embedder with a ready [`EmbedWorker`]: every other
    /// window goes to the worker's session, the rest are embedded here at the same time, one per call.
    fn flush_shared(
        &mut self,
        embedder: &mut Embedder,
        worker: &mut EmbedWorker,
        jobs: Vec<(Vec<f32>, usize, usize, Vec<f32>)>,
        tx: &Sender<Analysis>,
    ) -> std::result::Result<(), Option<crate::Error>> {
        let mut local = Vec::with_capacity(jobs.len());
        for (k, (feats, frames, index, weights)) in jobs.into_iter().enumerate() {
            let job = EmbedJob {
                feats,
                frames,
                weights,
                index,
            };
            if k % 2 == 1 {
                match worker.send(job) {
                    Ok(()) => continue,
                    // The worker is gone: embed it here.
                    Err(job) => local.push(job),
                }
            } else {
                local.push(job);
            }
        }
        let mut result = Ok(());
        for job in local {
            if result.is_ok() {
                result =
                    crate::embed_worker::embed_one(embedder, &job.feats, job.frames, &job.weights)
                        .map(|e| self.set_embedding(job.index, e));
                self.calls[0] += 1;
            }
            self.spare.push(job.feats);
            self.spare_weights.push(job.weights);
        }
        // Every job sent is received, even after an error, so none is left for the next flush; the first
        // error is the one reported (`and` keeps it).
        while let Some(done) = worker.recv() {
            let d = match done {
                Ok(d) => d,
                Err(e) => {
                    result = result.and(Err(e));
                    continue;
                }
            };
            match d.embedding {
                Ok(e) if result.is_ok() => self.set_embedding(d.job.index, e),
                Ok(_) => {}
                Err(e) => result = result.and(Err(e)),
            }
            self.calls[0] += 1;
            self.spare.push(d.job.feats);
            self.spare_weights.push(d.job.weights);
        }
        result.map_err(Some)?;
        self.send_out(tx)
    }

    fn set_embedding(&mut self, index: usize, e: Vec<f32>) {
        if let Some(Analysis::Window { embedding, .. }) = self.out.get_mut(index) {
            *embedding = e;
        }
    }

    /// Sends everything held, in stream order.
    fn send_out(&mut self, tx: &Sender<Analysis>) -> std::result::Result<(), Option<crate::Error>> {
        for msg in self.out.drain(..) {
            tx.send(msg).map_err(|_| None)?;
        }
        Ok(())
    }
}

/// Makes the window of `t` fbank frames starting at `first` (its raw fbank in `buf`, its weights in `weights`,
/// empty = unweighted) `f` frames long for a fixed-shape embedder: the `f - t` frames before it go in front as
/// context with weight 0, so the pooling counts only the window, as before. At the start of the stream,
/// where there is not enough audio before the window, the window's own frames are repeated in front instead
/// (also with weight 0).
fn with_context(
    tracker: &FeatureTracker,
    first: u64,
    t: usize,
    f: usize,
    buf: &mut Vec<f32>,
    weights: &mut Vec<f32>,
) {
    let nb = crate::fbank::NUM_BINS;
    let need = f - t;
    let mut ctx = Vec::with_capacity(need * nb);
    let (from, n) = tracker.copy_frames(first.saturating_sub(need as u64), first, &mut ctx);
    if n < need || from + n as u64 != first {
        // Not enough audio before the window: repeat the window itself, ending where it starts.
        ctx.clear();
        let own = buf.clone();
        while ctx.len() < need * nb {
            ctx.extend_from_slice(&own);
        }
        let extra = ctx.len() - need * nb;
        ctx.drain(..extra);
    }
    ctx.extend_from_slice(buf);
    *buf = ctx;
    if weights.is_empty() {
        weights.resize(t, 1.0);
    }
    let mut w = vec![0.0f32; need];
    w.extend_from_slice(weights);
    *weights = w;
}

/// A window of the shared-trunk path waiting for the right context of its chunk.
struct WaitingWindow {
    span: WindowSpan,
    trusted: bool,
    /// Its fbank frames: [first, first + weights.len()).
    first: u64,
    /// Speaker-conditioned fbank frame weights (all ones when there are none).
    weights: Vec<f32>,
    /// The chunk it adds (None: earlier chunks cover it).
    chunk: Option<TrunkChunk>,
    /// Fbank frames that must exist before it is embedded (its chunk's end, or the previous window's).
    needs: u64,
}

/// Shared-trunk embeddings for the analysis thread (`WindowConfig::trunk_margin`; mode seg): the CAM++
/// trunk runs once per [`TrunkChunk`] (about a window step of new speech plus a margin of context on each
/// side), its frames go to [`TrunkFrames`], and each window's embedding pools the frames it covers with its
/// speaker-conditioned weights. A window is embedded once its chunk's right context has arrived, so its
/// message comes `margin` after its end in stream order (a fixed place: the labels do not depend on thread
/// timing). Chunks of equal length that are ready in one pop run in one model call.
struct SharedTrunkBatcher {
    tiling: TrunkTiling,
    frames: TrunkFrames,
    waiting: VecDeque<WaitingWindow>,
    /// Messages of this pop in stream order, held behind the first window to embed.
    out: Vec<Analysis>,
    /// Chunks ready to run: raw fbank (row-major), frames, the chunk.
    jobs: Vec<(Vec<f32>, usize, TrunkChunk)>,
    /// Windows to embed at the flush: index in `out`, first fbank frame, weights.
    ready: Vec<(usize, u64, Vec<f32>)>,
    spare: Vec<Vec<f32>>,
    trunk_out: Vec<f32>,
    /// Fbank frames of the longest window (what the trunk frames must reach back to).
    window_frames: u64,
    /// Model calls by batch size and windows embedded with weights (debug log).
    calls: [u64; MAX_BATCH],
    weighted: u64,
}

impl SharedTrunkBatcher {
    fn new(cfg: &WindowConfig, margin: f64) -> Self {
        let m = (margin * 100.0).round() as u64;
        Self {
            tiling: TrunkTiling::new(m + m % 2),
            frames: TrunkFrames::default(),
            waiting: VecDeque::new(),
            out: Vec::new(),
            jobs: Vec::new(),
            ready: Vec::new(),
            spare: Vec::new(),
            trunk_out: Vec::new(),
            window_frames: (cfg.window * 100.0).ceil() as u64,
            calls: [0; MAX_BATCH],
            weighted: 0,
        }
    }

    /// Queues `msg` behind a window to embed, or returns it for sending now.
    fn pass(&mut self, msg: Analysis) -> Option<Analysis> {
        if self.ready.is_empty() {
            Some(msg)
        } else {
            self.out.push(msg);
            None
        }
    }

    /// Schedules the window `span`: its weights now (the segmentation windows that end inside it are all
    /// here), its chunk once the chunk's context has arrived ([`SharedTrunkBatcher::release`]).
    fn window(
        &mut self,
        tracker: &FeatureTracker,
        span: WindowSpan,
        locals: Option<&mut LocalWeights>,
    ) {
        let (first, t) = fbank_span(span);
        if t < crate::embed::MIN_FRAMES {
            return;
        }
        let mut weights = self.spare.pop().unwrap_or_default();
        weights.clear();
        let conditioned =
            locals.is_some_and(|l| l.weights(span.start, span.end, first, t, &mut weights));
        if conditioned {
            self.weighted += 1;
        } else {
            weights.clear();
            weights.resize(t, 1.0);
        }
        let chunk = self.tiling.plan(first, first + t as u64);
        let before = self.waiting.back().map_or(0, |w| w.needs);
        let needs = chunk.map_or(before, |c| c.end.max(before));
        self.waiting.push_back(WaitingWindow {
            span,
            trusted: tracker.trusted(span),
            first,
            weights,
            chunk,
            needs,
        });
    }

    /// Moves the waiting windows whose context has arrived (all of them at the end of the stream, their
    /// chunks cut at the last frame) into this pop's messages and their chunks into the jobs.
    fn release(&mut self, tracker: &FeatureTracker, at_end: bool) {
        let available = tracker.frames_available();
        while let Some(w) = self.waiting.front() {
            if !at_end && w.needs > available {
                break;
            }
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            if let Some(mut c) = w.chunk {
                c.end = c.end.min(available);
                // The trunk needs a few frames; a short tail chunk takes more context on the left.
                let min = crate::embed::MIN_FRAMES as u64 + 1;
                if c.end - c.start.min(c.end) < min {
                    let s = c.end.saturating_sub(min);
                    c.start = s - s % 2;
                }
                let mut buf = self.spare.pop().unwrap_or_default();
                let (from, n) = tracker.copy_frames(c.start, c.end, &mut buf);
                if n >= crate::embed::MIN_FRAMES && from == c.start {
                    self.jobs.push((buf, n, c));
                } else {
                    self.spare.push(buf);
                }
            }
            self.ready.push((self.out.len(), w.first, w.weights));
            self.out.push(Analysis::Window {
                start: w.span.start,
                end: w.span.end,
                embedding: Vec::new(),
                trusted: w.trusted,
            });
        }
    }

    /// Runs the ready chunks (equal lengths together, at most [`MAX_BATCH`] a call), stores their frames in
    /// stream order, embeds the ready windows and sends everything held. Err(None) = the receiver is gone.
    fn flush(
        &mut self,
        embedder: &mut Embedder,
        tx: &Sender<Analysis>,
        available: u64,
    ) -> std::result::Result<(), Option<crate::Error>> {
        let jobs = std::mem::take(&mut self.jobs);
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        // Stable: chunks of one length keep their order.
        order.sort_by_key(|&i| jobs[i].1);
        let mut outputs: Vec<Option<(Vec<f32>, usize)>> = vec![None; jobs.len()];
        let channels = embedder.head().map_or(0, crate::embed::Head::channels);
        for group in order.chunk_by(|&a, &b| jobs[a].1 == jobs[b].1) {
            for batch in group.chunks(MAX_BATCH) {
                let views = batch
                    .iter()
                    .map(|&i| {
                        ndarray::ArrayView2::from_shape(
                            (jobs[i].1, crate::fbank::NUM_BINS),
                            &jobs[i].0[..],
                        )
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Some(crate::Error::Inference(format!("chunk shape: {e}"))))?;
                let pooled = embedder
                    .trunk_batch(&views, &mut self.trunk_out)
                    .map_err(Some)?;
                self.calls[batch.len() - 1] += 1;
                let per = channels * pooled;
                for (k, &i) in batch.iter().enumerate() {
                    outputs[i] = Some((self.trunk_out[k * per..(k + 1) * per].to_vec(), pooled));
                }
            }
        }
        for ((buf, _, c), o) in jobs.into_iter().zip(outputs) {
            if let Some((data, pooled)) = o {
                self.frames
                    .store(&data, channels, pooled, c.start, c.valid_from, c.valid_to);
            }
            self.spare.push(buf);
        }
        let head = embedder.head().ok_or_else(|| {
            Some(crate::Error::Inference(
                "shared trunk without a head".into(),
            ))
        })?;
        for (at, first, weights) in self.ready.drain(..) {
            let sum: f32 = weights.iter().map(|w| w.clamp(0.0, 1.0)).sum();
            let e = if sum >= 1.0 {
                self.frames.embed(head, first, &weights)
            } else {
                let ones = vec![1.0; weights.len()];
                self.frames.embed(head, first, &ones)
            }
            .map_err(Some)?;
            if let Some(Analysis::Window { embedding, .. }) = self.out.get_mut(at) {
                *embedding = e;
            }
            self.spare.push(weights);
        }
        for msg in self.out.drain(..) {
            tx.send(msg).map_err(|_| None)?;
        }
        // Later windows start at most one window before the newest frame (and never before a waiting one).
        let keep = self
            .waiting
            .front()
            .map_or(u64::MAX, |w| w.first)
            .min(available.saturating_sub(self.window_frames + 20));
        self.frames.forget_before(keep);
        Ok(())
    }
}

/// The fbank frames fully inside samples [start, end): (first index, count).
fn fbank_span(span: WindowSpan) -> (u64, usize) {
    let shift = crate::fbank::FRAME_SHIFT as u64;
    let len = crate::fbank::FRAME_LENGTH as u64;
    let first = span.start.div_ceil(shift);
    if span.end < len {
        return (first, 0);
    }
    let last_excl = (span.end - len) / shift + 1;
    (first, last_excl.saturating_sub(first) as usize)
}

#[allow(clippy::too_many_arguments)]
fn analysis_thread(
    cfg: WindowConfig,
    mut embedder: Embedder,
    mut worker: Option<LazyWorker>,
    mut cons: HeapCons<VadFrame>,
    sig: &RingSignal,
    tx: Sender<Analysis>,
    locals_rx: Option<Receiver<SegLocals>>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut tracker = FeatureTracker::new(&cfg)?;
    // Speaker-conditioned weights: the segmentation thread sends every window's local speakers before it
    // passes on the frame that completed the window, so all windows ending before a frame are here by then.
    let mut locals = locals_rx.as_ref().map(|_| LocalWeights::default());
    let drain = |l: &mut Option<LocalWeights>| {
        if let (Some(l), Some(rx)) = (l.as_mut(), locals_rx.as_ref()) {
            for w in rx.try_iter() {
                l.add(w);
            }
        }
    };
    let mut frames = vec![VadFrame::default(); POP_FRAMES];
    let mut end: u64 = 0;
    let mut dropped_total: u64 = 0;
    let mut load = LoadMeter::new(Stage::Embedding);
    // Standalone windows (each through the whole network) or the shared trunk.
    let mut batcher = WindowBatcher {
        fixed: embedder.fixed_frames(),
        ..WindowBatcher::default()
    };
    let mut shared = cfg
        .trunk_margin
        .filter(|_| embedder.is_weighted())
        .map(|m| SharedTrunkBatcher::new(&cfg, m));
    let mut result = Ok(());
    // Sends now, or holds behind a pending window; false = the receiver is gone.
    let send = |b: &mut WindowBatcher, sh: &mut Option<SharedTrunkBatcher>, msg| {
        let held = match sh.as_mut() {
            Some(sh) => sh.pass(msg),
            None => b.pass(msg),
        };
        held.is_none_or(|m| tx.send(m).is_ok())
    };
    'outer: while let Some(n) = ring::pop_wait(&mut cons, &mut frames, sig) {
        let t0 = Instant::now();
        for f in &frames[..n] {
            crate::fault::hit(
                crate::fault::Stage::Analysis,
                f.start as f64 / SAMPLE_RATE as f64,
            );
            if f.dropped > 0 {
                dropped_total += f.dropped;
                let msg = Analysis::Dropped {
                    at: f.start,
                    samples: f.dropped,
                    total: dropped_total,
                    reason: "input ring overflow: processing fell behind the audio".into(),
                };
                if !send(&mut batcher, &mut shared, msg) {
                    break 'outer;
                }
            }
            let msg = Analysis::Frame {
                start: f.start,
                end: f.end(),
                speech: f.speech,
                power: f.power,
                gain_db: f.gain_db,
                arrived: f.arrived,
            };
            if !send(&mut batcher, &mut shared, msg) {
                break 'outer;
            }
            end = f.end();
            load.audio += f.len as u64;
            let span = tracker.push(f.start, f.audio(), f.speech);
            if span.is_some() {
                drain(&mut locals);
            }
            if let Some(sh) = shared.as_mut() {
                if let Some(span) = span {
                    sh.window(&tracker, span, locals.as_mut());
                }
                sh.release(&tracker, false);
            } else if let Some(span) = span {
                if let Err(e) = batcher.window(&mut tracker, span, locals.as_mut()) {
                    result = Err(e);
                    break 'outer;
                }
            }
        }
        let flushed = match shared.as_mut() {
            Some(sh) => sh.flush(&mut embedder, &tx, tracker.frames_available()),
            None => {
                let w = worker.as_mut().and_then(|l| l.get(end, batcher.jobs.len()));
                batcher.flush(&mut embedder, w, &tx)
            }
        };
        match flushed {
            Ok(()) => {}
            Err(None) => break 'outer,
            Err(Some(e)) => {
                result = Err(e);
                break 'outer;
            }
        }
        load.add(t0.elapsed(), &tx);
    }
    if result.is_ok() {
        let span = tracker.finish(end);
        if span.is_some() {
            drain(&mut locals);
        }
        let flushed = match shared.as_mut() {
            Some(sh) => {
                if let Some(span) = span {
                    sh.window(&tracker, span, locals.as_mut());
                }
                sh.release(&tracker, true);
                sh.flush(&mut embedder, &tx, tracker.frames_available())
            }
            None => {
                if let Some(span) = span {
                    result = batcher.window(&mut tracker, span, locals.as_mut());
                }
                if result.is_ok() {
                    let w = worker.as_mut().and_then(|l| l.get(end, batcher.jobs.len()));
                    batcher.flush(&mut embedder, w, &tx)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(Some(e)) = flushed {
            result = Err(e);
        }
    }
    let _ = tx.send(Analysis::End { at: end });
    match &shared {
        Some(sh) => {
            tracing::debug!(calls_by_batch_size = ?sh.calls, weighted_windows = sh.weighted, "CAM++ trunk calls (shared trunk)")
        }
        None => {
            tracing::debug!(calls_by_batch_size = ?batcher.calls, weighted_windows = batcher.weighted,
                by_second_session = worker.as_ref().map_or(0, |w| w.embedded()), "CAM++ calls")
        }
    }
    if let Some(w) = worker.as_mut() {
        w.finish();
    }
    if result.is_err() {
        // Failed mid-stream: stop the source and keep draining so the upstream threads can end.
        stop.store(true, Ordering::SeqCst);
        while ring::pop_wait(&mut cons, &mut frames, sig).is_some() {}
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn turns_thread(
    tcfg: TurnConfig,
    ccfg: ClusterConfig,
    profiles: (
        Vec<crate::profiles::KnownSpeaker>,
        crate::profiles::MatchConfig,
        Option<std::path::PathBuf>,
    ),
    rx: Receiver<Analysis>,
    controls: Receiver<Control>,
    devices: Receiver<Event>,
    tx: Sender<Event>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut device_events = DeviceEvents::default();
    let mut tracker = TurnTracker::new(tcfg, ccfg)?;
    tracker.set_profiles(profiles.0, profiles.1);
    tracker.set_profile_dir(profiles.2);
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
                        Ok(Control::Remember { speaker, name }) => {
                            out.extend(tracker.remember(&speaker, &name));
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
        if let Analysis::Frame { end: at, .. } = msg {
            crate::fault::hit(crate::fault::Stage::Turns, at as f64 / SAMPLE_RATE as f64);
        }
        device_events.release(&devices, &msg, &mut out);
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

#[cfg(test)]
mod device_event_tests {
    use super::*;
    use crate::events::DeviceState;

    fn device(state: DeviceState, gap_start: f64, gap: f64) -> Event {
        Event::Device {
            time: 0.0,
            device: "mic".into(),
            state,
            gap_start,
            gap,
            reason: "test".into(),
        }
    }

    fn frame(end_s: f64) -> Analysis {
        let end = (end_s * SAMPLE_RATE as f64) as u64;
        Analysis::Frame {
            start: end - 480,
            end,
            speech: false,
            power: 0.0,
            gain_db: 0.0,
            arrived: None,
        }
    }

    fn times(out: &[Event]) -> Vec<f64> {
        out.iter().map(Event::time).collect()
    }

    /// Device events wait for the stream to reach their position, and their times never go back.
    #[test]
    fn device_events_are_released_in_stream_order() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut dev = DeviceEvents::default();
        let mut out = Vec::new();
        tx.send(device(DeviceState::Lost, 2.0, 0.0)).unwrap();
        tx.send(device(DeviceState::Resumed, 2.0, 3.0)).unwrap();
        dev.release(&rx, &frame(1.5), &mut out);
        assert!(out.is_empty(), "released before the stream reached 2 s");
        dev.release(&rx, &frame(2.01), &mut out);
        assert_eq!(times(&out), vec![2.0]);
        dev.release(&rx, &frame(4.5), &mut out);
        assert_eq!(out.len(), 1, "resumed is at 5 s");
        dev.release(&rx, &frame(5.1), &mut out);
        assert_eq!(times(&out), vec![2.0, 5.0]);
        // Reported late (after the stream passed its position): stamped with the newest frame.
        dev.release(&rx, &frame(7.0), &mut out);
        tx.send(device(DeviceState::Lost, 5.5, 0.0)).unwrap();
        dev.release(&rx, &frame(7.5), &mut out);
        assert_eq!(times(&out), vec![2.0, 5.0, 7.0]);
        // At the end everything left goes out, no later than the end.
        tx.send(device(DeviceState::Gone, 5.5, 9.0)).unwrap();
        dev.release(&rx, &Analysis::End { at: 8 * 16000 }, &mut out);
        assert_eq!(times(&out), vec![2.0, 5.0, 7.0, 8.0]);
    }
}

#[cfg(test)]
mod context_tests {
    use super::*;
    use crate::fbank::NUM_BINS;

    /// A tracker that has seen `secs` of a chirp (every fbank frame different).
    fn tracker(secs: f64) -> FeatureTracker {
        let mut t = FeatureTracker::new(&WindowConfig::default()).unwrap();
        let n = (secs * SAMPLE_RATE as f64) as usize;
        let audio: Vec<f32> = (0..n)
            .map(|i| {
                let x = i as f32 / SAMPLE_RATE as f32;
                0.3 * (2.0 * std::f32::consts::PI * (200.0 + 300.0 * x) * x).sin()
            })
            .collect();
        for (k, c) in audio.chunks(480).enumerate() {
            t.push((k * 480) as u64, c, true);
        }
        t
    }

    fn frames(t: &FeatureTracker, a: u64, b: u64) -> Vec<f32> {
        let mut v = Vec::new();
        let (from, n) = t.copy_frames(a, b, &mut v);
        assert_eq!((from, n as u64), (a, b - a));
        v
    }

    /// A short window gets the frames before it as context, weighted 0; its own frames and weights follow.
    #[test]
    fn a_short_window_takes_the_frames_before_it_as_context() {
        let t = tracker(3.0);
        let mut buf = frames(&t, 200, 260);
        let mut weights: Vec<f32> = (0..60).map(|i| i as f32 / 60.0).collect();
        let own = weights.clone();
        with_context(&t, 200, 60, 148, &mut buf, &mut weights);
        assert_eq!(buf, frames(&t, 112, 260));
        assert_eq!(weights.len(), 148);
        assert!(weights[..88].iter().all(|&w| w == 0.0));
        assert_eq!(&weights[88..], &own[..]);
        // Unweighted: ones on the window.
        let mut buf = frames(&t, 200, 260);
        let mut none = Vec::new();
        with_context(&t, 200, 60, 148, &mut buf, &mut none);
        assert_eq!(none.iter().sum::<f32>(), 60.0);
        assert!(none[88..].iter().all(|&w| w == 1.0));
    }

    /// At the start of the stream there is too little audio before the window: its own frames, repeated,
    /// fill the front (weighted 0), and the window ends the buffer.
    #[test]
    fn at_the_stream_start_the_window_repeats_in_front() {
        let t = tracker(1.0);
        let own = frames(&t, 10, 70);
        let mut buf = own.clone();
        let mut weights = Vec::new();
        with_context(&t, 10, 60, 148, &mut buf, &mut weights);
        assert_eq!(buf.len(), 148 * NUM_BINS);
        assert_eq!(&buf[88 * NUM_BINS..], &own[..]);
        // The 88 frames in front are the window's last 88 frames of its repetition: ..., own[32..60].
        assert_eq!(&buf[60 * NUM_BINS..88 * NUM_BINS], &own[32 * NUM_BINS..]);
        assert!(weights[..88].iter().all(|&w| w == 0.0));
        assert!(weights[88..].iter().all(|&w| w == 1.0));
    }
}
