//! Live microphone capture through `cpal`.
//!
//! The device is opened at its default input config (native rate, channel count and sample format), or, when it is
//! reopened after a loss, at the rate and channel count it had ([`open_microphone_ring`] with `want`). The audio
//! callback only converts samples to f32 and pushes whole interleaved frames into a lock-free ring; it never
//! blocks, locks, allocates or does I/O. Counters live in [`CaptureStats`] (atomics), stream errors are counted there
//! and reported through a bounded channel ([`Microphone::errors`]) with `try_send`. A lost stream is given up with
//! [`Microphone::retire`] (its callback goes quiet at once; the stream is dropped on a detached thread, since
//! dropping it can block when the sound server died). Watching for loss, reopening and filling the gap is
//! `pipeline::mic_thread`'s job.
//!
//! On Linux, alsa-lib prints "ALSA lib ..." lines (and libjack "Cannot connect to server ..." lines) to stderr while
//! devices are enumerated and opened; in a TUI they would draw over the screen. They are silenced here: alsa-lib's
//! messages go to a thread-local handler and are logged at debug level, and stderr is pointed at /dev/null for the
//! duration of enumeration/opening (see [`QuietAudioLib`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};
use crossbeam_channel::{Receiver, Sender};
use ringbuf::traits::{Observer, Producer, Split};

use crate::decode::InputFormat;
use crate::{Error, Result};

/// An input device as listed by [`list_input_devices`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What to pass to `--device` (ALSA: the PCM name, e.g. `default`, `testmic`, `hw:CARD=0,DEV=0`), followed by
    /// the device's description in parentheses when it has one.
    pub name: String,
    pub is_default: bool,
    /// Default input config: rate in Hz and channel count.
    pub sample_rate: u32,
    pub channels: u16,
}

/// Counters shared with the callback (atomics only).
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Frames delivered by the device (including dropped ones).
    pub frames_in: AtomicU64,
    /// Frames that did not fit into the ring (consumer too slow) and were discarded.
    pub dropped: AtomicU64,
    /// Stream errors reported by the audio backend.
    pub errors: AtomicU64,
    /// Frames of silence inserted while the device was lost (also counted in `frames_in`, so that
    /// `frames_in - dropped` is what entered the input ring).
    pub gap_frames: AtomicU64,
}

/// An open, running microphone stream. Dropping it stops the capture.
pub struct Microphone {
    /// Name of the opened device (as in [`DeviceInfo::name`], without the description).
    pub name: String,
    /// Native format of the interleaved samples pushed into the ring.
    pub format: InputFormat,
    /// Sample format the device delivers (converted to f32 in the callback).
    pub sample_format: SampleFormat,
    stream: cpal::Stream,
    errors: Receiver<String>,
    lost: Arc<AtomicBool>,
    /// Cleared by [`Microphone::retire`]: the callback then ignores whatever the stream still delivers.
    live: Arc<AtomicBool>,
}

impl Microphone {
    /// Stream errors reported by the backend since the last call (bounded: excess ones are only counted in
    /// [`CaptureStats::errors`]).
    pub fn errors(&self) -> &Receiver<String> {
        &self.errors
    }

    /// True once the backend reported the device as gone (unplugged, server stopped): no more audio will arrive.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Gives up on a lost stream without waiting for it: the callback stops counting and pushing at once, and the
    /// stream is dropped on a detached thread. (With the ALSA pulse plugin, a stream whose server died can block
    /// in its worker thread forever, and dropping a cpal stream joins that thread.)
    pub fn retire(self) {
        self.live.store(false, Ordering::SeqCst);
        let name = self.name.clone();
        let spawned = std::thread::Builder::new()
            .name("mic-retire".into())
            .spawn(move || drop(self));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread to close {name}: {e}; leaving it open");
        }
    }

    /// Pauses the stream (best effort; dropping the `Microphone` stops it for good).
    pub fn pause(&self) -> Result<()> {
        self.stream
            .pause()
            .map_err(|e| Error::Device(format!("cannot pause {}: {e}", self.name)))
    }
}

impl std::fmt::Debug for Microphone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Microphone")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("sample_format", &self.sample_format)
            .finish_non_exhaustive()
    }
}

/// Silences alsa-lib's (and libjack's) stderr chatter while alive. On other platforms it does nothing.
///
/// alsa-lib messages are captured by a thread-local error handler and logged at debug level on drop. libjack
/// prints directly to stderr, so stderr (fd 2) is redirected to /dev/null while the guard lives; this is process
/// wide, so keep the guard's scope short (enumeration, opening a device). Set `WHOSPOKE_AUDIO_STDERR=1` to keep
/// stderr (debugging).
pub struct QuietAudioLib {
    #[cfg(target_os = "linux")]
    alsa_output: Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>,
    #[cfg(target_os = "linux")]
    saved_stderr: Option<libc::c_int>,
}

impl QuietAudioLib {
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            let alsa_output = alsa::Output::local_error_handler().ok();
            let keep = std::env::var_os("WHOSPOKE_AUDIO_STDERR").is_some_and(|v| v != "0");
            let saved_stderr = if keep { None } else { redirect_stderr() };
            QuietAudioLib {
                alsa_output,
                saved_stderr,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            QuietAudioLib {}
        }
    }
}

impl Default for QuietAudioLib {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(target_os = "linux")]
fn redirect_stderr() -> Option<libc::c_int> {
    // SAFETY: plain fd operations on fd 2 and a freshly opened /dev/null; every result is checked.
    unsafe {
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if devnull < 0 {
            return None;
        }
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            libc::close(devnull);
            return None;
        }
        if libc::dup2(devnull, 2) < 0 {
            libc::close(devnull);
            libc::close(saved);
            return None;
        }
        libc::close(devnull);
        Some(saved)
    }
}

impl Drop for QuietAudioLib {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            if let Some(saved) = self.saved_stderr.take() {
                // SAFETY: `saved` is the fd duplicated from the original stderr in `redirect_stderr`.
                unsafe {
                    libc::dup2(saved, 2);
                    libc::close(saved);
                }
            }
            if let Some(out) = self.alsa_output.take() {
                let text = out.borrow().to_string();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::debug!("alsa-lib: {line}");
                }
                // Start a fresh (empty) buffer so captured messages do not accumulate on this thread.
                let _ = alsa::Output::local_error_handler();
            }
        }
    }
}

/// A candidate device with the strings it can be selected by.
struct Candidate {
    device: cpal::Device,
    /// Backend identifier (ALSA PCM name).
    id: String,
    /// Full cpal id, e.g. `alsa:testmic`.
    full_id: String,
    /// Human description (first line), may equal `id`.
    description: String,
}

impl Candidate {
    fn new(device: cpal::Device) -> Self {
        let (id, full_id) = match device.id() {
            Ok(id) => (id.id().to_string(), id.to_string()),
            Err(_) => (String::new(), String::new()),
        };
        let description = device
            .description()
            .map(|d| d.name().to_string())
            .unwrap_or_default();
        let id = if id.is_empty() {
            description.clone()
        } else {
            id
        };
        Candidate {
            device,
            id,
            full_id,
            description,
        }
    }

    fn display_name(&self) -> String {
        if self.description.is_empty() || self.description == self.id {
            self.id.clone()
        } else {
            format!("{} ({})", self.id, self.description)
        }
    }

    fn keys(&self) -> [&str; 3] {
        [&self.id, &self.full_id, &self.description]
    }
}

fn input_candidates(host: &cpal::Host) -> Result<Vec<Candidate>> {
    let devices = host
        .input_devices()
        .map_err(|e| Error::Device(format!("cannot list input devices ({}): {e}", host.id())))?;
    Ok(devices.map(Candidate::new).collect())
}

fn default_id(host: &cpal::Host) -> Option<String> {
    host.default_input_device()
        .and_then(|d| d.id().ok())
        .map(|id| id.id().to_string())
}

/// Lists the input devices of the default host with their default input config. Devices that cannot be opened for
/// capture (busy, output-only plugins, no server) are left out.
pub fn list_input_devices() -> Result<Vec<DeviceInfo>> {
    let _quiet = QuietAudioLib::new();
    let host = cpal::default_host();
    let default = default_id(&host);
    let mut out = Vec::new();
    let mut have_default = false;
    for c in input_candidates(&host)? {
        match c.device.default_input_config() {
            Ok(cfg) => {
                let is_default = default.as_deref() == Some(c.id.as_str());
                have_default |= is_default;
                out.push(DeviceInfo {
                    name: c.display_name(),
                    is_default,
                    sample_rate: cfg.sample_rate(),
                    channels: cfg.channels(),
                })
            }
            Err(e) => tracing::debug!("input device {} skipped: {e}", c.display_name()),
        }
    }
    if !have_default {
        if let Some(dev) = host.default_input_device() {
            if let Ok(cfg) = dev.default_input_config() {
                let c = Candidate::new(dev);
                out.insert(
                    0,
                    DeviceInfo {
                        name: c.display_name(),
                        is_default: true,
                        sample_rate: cfg.sample_rate(),
                        channels: cfg.channels(),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Finds the device called `name`: a cpal id (`alsa:testmic`), then an exact name/id/description, then a
/// case-insensitive substring of any of them.
fn find_device(host: &cpal::Host, name: &str) -> Result<(cpal::Device, String)> {
    if let Ok(id) = name.parse::<cpal::DeviceId>() {
        if id.host() == host.id() {
            if let Some(dev) = host.device_by_id(&id) {
                return Ok((dev, id.id().to_string()));
            }
        } else if let Ok(other) = cpal::host_from_id(id.host()) {
            if let Some(dev) = other.device_by_id(&id) {
                return Ok((dev, id.to_string()));
            }
        }
    }
    let candidates = input_candidates(host)?;
    let pick = candidates
        .iter()
        .position(|c| c.keys().iter().any(|k| !k.is_empty() && *k == name))
        .or_else(|| {
            let lower = name.to_lowercase();
            let matches: Vec<usize> = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    c.keys()
                        .iter()
                        .any(|k| !k.is_empty() && k.to_lowercase().contains(&lower))
                })
                .map(|(i, _)| i)
                .collect();
            if matches.len() > 1 {
                tracing::info!(
                    "--device {name:?} matches {} devices ({}); using the first",
                    matches.len(),
                    matches
                        .iter()
                        .map(|&i| candidates[i].display_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            matches.first().copied()
        });
    match pick {
        Some(i) => {
            let c = candidates.into_iter().nth(i).ok_or_else(|| {
                Error::Device(format!("input device {name:?} disappeared while opening"))
            })?;
            let id = c.id.clone();
            Ok((c.device, id))
        }
        None => {
            let names: Vec<String> = candidates
                .iter()
                .filter(|c| c.device.default_input_config().is_ok())
                .map(|c| c.display_name())
                .collect();
            Err(Error::Device(format!(
                "no input device matches {name:?}; available input devices: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )))
        }
    }
}

/// Opens `name` (None = default input) at its native rate/channels; the callback converts to f32 and pushes into
/// `producer` (interleaved, whole frames only); frames that do not fit are counted in `stats.dropped`. The callback
/// never blocks, locks, allocates or does I/O. The stream is running when this returns.
pub fn open_microphone(
    name: Option<&str>,
    producer: ringbuf::HeapProd<f32>,
    stats: Arc<CaptureStats>,
) -> Result<Microphone> {
    open_with(name, None, |_| producer, stats)
}

/// Opens `name` (None = default input) with a ring of its own holding `seconds` of its audio, and returns the
/// ring's consumer. With `want`, the stream is opened at that rate and channel count (reopening a device after a
/// loss: the pipeline downstream was built for it); without, at the device's native config.
pub fn open_microphone_ring(
    name: Option<&str>,
    want: Option<InputFormat>,
    seconds: f64,
    stats: Arc<CaptureStats>,
) -> Result<(Microphone, ringbuf::HeapCons<f32>)> {
    let mut cons = None;
    let mic = open_with(
        name,
        want,
        |f| {
            let cap =
                ((f.sample_rate as f64 * f.channels as f64 * seconds.max(0.5)) as usize).max(8192);
            let (p, c) = ringbuf::HeapRb::<f32>::new(cap).split();
            cons = Some(c);
            p
        },
        stats,
    )?;
    let cons =
        cons.ok_or_else(|| Error::Device(format!("{}: no capture ring was made", mic.name)))?;
    Ok((mic, cons))
}

fn open_with(
    name: Option<&str>,
    want: Option<InputFormat>,
    make_producer: impl FnOnce(InputFormat) -> ringbuf::HeapProd<f32>,
    stats: Arc<CaptureStats>,
) -> Result<Microphone> {
    let quiet = QuietAudioLib::new();
    let host = cpal::default_host();
    let (device, dev_name) = match name {
        Some(n) => find_device(&host, n)?,
        None => {
            let dev = host.default_input_device().ok_or_else(|| {
                Error::Device(format!(
                    "no default input device ({}); name one with --device (see --list-devices)",
                    host.id()
                ))
            })?;
            let c = Candidate::new(dev);
            let id = c.id.clone();
            (c.device, id)
        }
    };
    let config = device.default_input_config().map_err(|e| {
        Error::Device(format!(
            "cannot open input device {dev_name} for capture: {e}"
        ))
    })?;
    let sample_format = config.sample_format();
    let mut stream_config: cpal::StreamConfig = config.config();
    if let Some(w) = want {
        if (w.sample_rate, w.channels) != (config.sample_rate(), config.channels()) {
            tracing::info!(
                "{dev_name} now defaults to {} Hz, {} ch; opening it at {} Hz, {} ch as before",
                config.sample_rate(),
                config.channels(),
                w.sample_rate,
                w.channels
            );
            stream_config.sample_rate = w.sample_rate;
            stream_config.channels = w.channels;
        }
    }
    let format = InputFormat {
        sample_rate: stream_config.sample_rate,
        channels: stream_config.channels,
    };
    format
        .validate(&dev_name)
        .map_err(|e| Error::Device(e.to_string()))?;

    let (err_tx, err_rx) = crossbeam_channel::bounded::<String>(16);
    let lost = Arc::new(AtomicBool::new(false));
    let live = Arc::new(AtomicBool::new(true));
    let ctx = Ctx {
        producer: make_producer(format),
        stats,
        channels: format.channels as usize,
        err_tx,
        lost: lost.clone(),
        live: live.clone(),
    };
    let stream = match sample_format {
        SampleFormat::I8 => build::<i8>(&device, stream_config, ctx),
        SampleFormat::I16 => build::<i16>(&device, stream_config, ctx),
        SampleFormat::I24 => build::<cpal::I24>(&device, stream_config, ctx),
        SampleFormat::I32 => build::<i32>(&device, stream_config, ctx),
        SampleFormat::I64 => build::<i64>(&device, stream_config, ctx),
        SampleFormat::U8 => build::<u8>(&device, stream_config, ctx),
        SampleFormat::U16 => build::<u16>(&device, stream_config, ctx),
        SampleFormat::U24 => build::<cpal::U24>(&device, stream_config, ctx),
        SampleFormat::U32 => build::<u32>(&device, stream_config, ctx),
        SampleFormat::U64 => build::<u64>(&device, stream_config, ctx),
        SampleFormat::F32 => build::<f32>(&device, stream_config, ctx),
        SampleFormat::F64 => build::<f64>(&device, stream_config, ctx),
        other => {
            return Err(Error::Device(format!(
                "input device {dev_name} delivers sample format {other}, which is not supported"
            )))
        }
    }
    .map_err(|e| Error::Device(format!("cannot open input stream on {dev_name}: {e}")))?;
    stream
        .play()
        .map_err(|e| Error::Device(format!("cannot start input stream on {dev_name}: {e}")))?;
    drop(quiet);
    tracing::info!(
        "capturing from {dev_name}: {} Hz, {} ch, {sample_format}",
        format.sample_rate,
        format.channels
    );
    Ok(Microphone {
        name: dev_name,
        format,
        sample_format,
        stream,
        errors: err_rx,
        lost,
        live,
    })
}

/// Everything the callbacks own.
struct Ctx {
    producer: ringbuf::HeapProd<f32>,
    stats: Arc<CaptureStats>,
    channels: usize,
    err_tx: Sender<String>,
    lost: Arc<AtomicBool>,
    live: Arc<AtomicBool>,
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    ctx: Ctx,
) -> std::result::Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let Ctx {
        mut producer,
        stats,
        channels,
        err_tx,
        lost,
        live,
    } = ctx;
    let channels = channels.max(1);
    let err_stats = stats.clone();
    let err_live = live.clone();
    let data_cb = move |data: &[T], _: &cpal::InputCallbackInfo| {
        if !live.load(Ordering::Relaxed) {
            return;
        }
        let frames = data.len() / channels;
        let fit = (producer.vacant_len() / channels).min(frames);
        if fit > 0 {
            producer.push_iter(
                data[..fit * channels]
                    .iter()
                    .map(|&s| <f32 as FromSample<T>>::from_sample_(s)),
            );
        }
        stats.frames_in.fetch_add(frames as u64, Ordering::Relaxed);
        if fit < frames {
            stats
                .dropped
                .fetch_add((frames - fit) as u64, Ordering::Relaxed);
        }
    };
    let err_cb = move |e: cpal::Error| {
        if !err_live.load(Ordering::Relaxed) {
            return;
        }
        err_stats.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(
            e.kind(),
            cpal::ErrorKind::DeviceNotAvailable
                | cpal::ErrorKind::HostUnavailable
                | cpal::ErrorKind::StreamInvalidated
        ) {
            lost.store(true, Ordering::Relaxed);
        }
        let _ = err_tx.try_send(e.to_string());
    };
    device.build_input_stream::<T, _, _>(config, data_cb, err_cb, Some(Duration::from_secs(5)))
}
