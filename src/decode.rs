//! Audio inputs other than a live microphone: files (WAV/FLAC/MP3/OGG Vorbis through `symphonia`) and raw PCM from
//! any reader (stdin `-`).
//!
//! Every source yields interleaved f32 samples in [-1, 1] at its native rate and channel count ([`InputFormat`]);
//! the resampler downstream converts to 16 kHz mono. Damaged input is handled leniently where the audio is still
//! usable (truncated files, corrupt packets, non-finite float samples: decode what is there and warn through
//! `tracing`), and rejected with an error naming the file and the reason where it is not.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use symphonia::core::audio::{SampleBuffer, SignalSpec};
use symphonia::core::codecs::{self, CodecType, Decoder, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::{Error, Result};

/// Highest sample rate accepted from any input.
pub const MAX_SAMPLE_RATE: u32 = 384_000;
/// Highest channel count accepted from any input.
pub const MAX_CHANNELS: u16 = 32;
/// Frames per `read` call of a raw source.
pub const RAW_CHUNK_FRAMES: usize = 4096;
/// Consecutive undecodable packets after which a file is given up as corrupt.
const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 64;

/// Native format of an input: sample rate in Hz and number of interleaved channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputFormat {
    pub sample_rate: u32,
    pub channels: u16,
}

impl InputFormat {
    /// Checks the rate is in 1..=384000 and the channel count in 1..=32. `what` names the input in the error.
    pub fn validate(&self, what: &str) -> Result<()> {
        if self.sample_rate == 0 || self.sample_rate > MAX_SAMPLE_RATE {
            return Err(Error::BadAudio {
                what: what.to_string(),
                why: format!(
                    "unusable sample rate {} Hz (must be 1..={MAX_SAMPLE_RATE})",
                    self.sample_rate
                ),
            });
        }
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return Err(Error::BadAudio {
                what: what.to_string(),
                why: format!(
                    "unusable channel count {} (must be 1..={MAX_CHANNELS})",
                    self.channels
                ),
            });
        }
        Ok(())
    }
}

/// A pull source of interleaved f32 audio.
pub trait AudioSource: Send {
    fn format(&self) -> InputFormat;
    fn name(&self) -> &str;
    /// Appends interleaved f32 samples; returns the number of frames appended; Ok(0) = end of input.
    fn read(&mut self, out: &mut Vec<f32>) -> Result<usize>;
    /// Length of the input in seconds, when its header declares it (files; not stdin).
    fn duration(&self) -> Option<f64> {
        None
    }
}

fn bad(what: &str, why: impl Into<String>) -> Error {
    Error::BadAudio {
        what: what.to_string(),
        why: why.into(),
    }
}

/// Counts non-finite and out-of-range samples, replaces them, warns once per kind.
#[derive(Default)]
struct Sanitizer {
    non_finite: u64,
    clipped: u64,
}

impl Sanitizer {
    /// Replaces NaN/inf by 0 and clamps to [-1, 1].
    fn clean(&mut self, name: &str, samples: &mut [f32]) {
        for s in samples.iter_mut() {
            if !s.is_finite() {
                if self.non_finite == 0 {
                    tracing::warn!("{name}: non-finite (NaN/inf) samples replaced by 0");
                }
                self.non_finite += 1;
                *s = 0.0;
            } else if s.abs() > 1.0 {
                if self.clipped == 0 {
                    tracing::warn!("{name}: float samples outside [-1, 1] clipped");
                }
                self.clipped += 1;
                *s = s.clamp(-1.0, 1.0);
            }
        }
    }

    fn report(&self, name: &str) {
        if self.non_finite > 0 {
            tracing::warn!(
                "{name}: {} non-finite samples were replaced by 0",
                self.non_finite
            );
        }
        if self.clipped > 0 {
            tracing::warn!("{name}: {} samples were clipped to [-1, 1]", self.clipped);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Files

/// Opens an audio file (WAV, FLAC, MP3, OGG Vorbis, and whatever else `symphonia` probes) for streaming decode.
///
/// The first packet is decoded here, so the format is known and a file with no audio fails now, not later.
pub fn open_file(path: &Path) -> Result<Box<dyn AudioSource>> {
    let name = path.display().to_string();
    let io_err = |source: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(bad(&name, "is a directory, not an audio file"));
    }
    let file = File::open(path).map_err(io_err)?;
    if meta.len() == 0 {
        return Err(bad(&name, "empty file (0 bytes), no audio"));
    }

    precheck_wav(&file, &name).map_err(|e| match e {
        PrecheckError::Io(source) => io_err(source),
        PrecheckError::Bad(e) => e,
    })?;

    let mss = MediaSourceStream::new(Box::new(file), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let fmt_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    // symphonia panics on some malformed headers: treat a panic as "malformed" rather than crashing the program.
    let probed = quiet_catch_unwind(|| {
        symphonia::default::get_probe().format(&hint, mss, &fmt_opts, &MetadataOptions::default())
    })
    .map_err(|_| bad(&name, "malformed header (the decoder gave up on it)"))?
    .map_err(|e| match e {
        SymError::IoError(source) if source.kind() != ErrorKind::UnexpectedEof => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        SymError::IoError(_) => bad(
            &name,
            "file ends inside its header (truncated, or not an audio file)",
        ),
        SymError::Unsupported(what) => bad(
            &name,
            format!("not a supported audio file ({what}); supported: WAV, FLAC, MP3, OGG Vorbis"),
        ),
        other => bad(&name, format!("cannot parse audio container: {other}")),
    })?;
    let reader = probed.format;

    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != codecs::CODEC_TYPE_NULL)
        .ok_or_else(|| bad(&name, "contains no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    if let Some(ch) = &params.channels {
        if ch.count() == 0 {
            return Err(bad(&name, "header declares 0 channels"));
        }
    }
    if let Some(rate) = params.sample_rate {
        InputFormat {
            sample_rate: rate,
            channels: params.channels.map_or(1, |c| c.count() as u16).max(1),
        }
        .validate(&name)?;
    }
    let decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| {
            let codec = codec_name(params.codec);
            bad(
                &name,
                format!("unsupported codec {codec} ({e}); supported: PCM WAV, FLAC, MP3, Vorbis"),
            )
        })?;

    let mut src = FileSource {
        name,
        path: path.to_path_buf(),
        reader,
        decoder,
        track_id,
        codec: params.codec,
        expected_frames: params.n_frames,
        format: InputFormat {
            sample_rate: 0,
            channels: 0,
        },
        spec: None,
        buf: None,
        pending: Vec::new(),
        frames_out: 0,
        decode_errors: 0,
        consecutive_errors: 0,
        sanitizer: Sanitizer::default(),
        done: false,
    };
    // Decode up to the first non-empty packet to learn the real format.
    let first = src.next_block()?;
    let Some(spec) = src.spec else {
        return Err(bad(
            &src.name,
            "no audio data (the file has a header but no samples)",
        ));
    };
    if first == 0 {
        return Err(bad(
            &src.name,
            "no audio data (the file has a header but no samples)",
        ));
    }
    if let Some(buf) = &src.buf {
        src.pending.extend_from_slice(buf.samples());
        src.sanitizer.clean(&src.name, &mut src.pending);
    }
    src.format = InputFormat {
        sample_rate: spec.rate,
        channels: spec.channels.count() as u16,
    };
    src.format.validate(&src.name)?;
    tracing::debug!(
        "{}: {} Hz, {} ch, codec {}, {} frames declared",
        src.name,
        src.format.sample_rate,
        src.format.channels,
        codec_name(src.codec),
        src.expected_frames
            .map_or_else(|| "unknown".to_string(), |n| n.to_string())
    );
    Ok(Box::new(src))
}

thread_local! {
    /// Set while this thread runs inside [`quiet_catch_unwind`].
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
static QUIET_HOOK: std::sync::Once = std::sync::Once::new();

/// Whether a panic on the current thread now is one that [`quiet_catch_unwind`] catches and the caller reports
/// (a decoder bug on hostile input): panic hooks print nothing for it.
pub fn panic_is_quiet() -> bool {
    QUIET_PANICS.with(|q| q.get())
}

/// `catch_unwind` without the panic hook's message and backtrace on stderr (the caller reports the failure).
/// Per thread: the hook is wrapped once to stay silent for this thread's caught panics only. (Swapping the
/// process-wide hook for the call, as this once did, silenced a real panic on another thread meanwhile.)
fn quiet_catch_unwind<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    QUIET_HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_is_quiet() {
                prev(info)
            }
        }));
    });
    let was = QUIET_PANICS.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(was));
    r
}

enum PrecheckError {
    Io(std::io::Error),
    Bad(Error),
}

/// Checks the `fmt ` chunk of a RIFF/WAVE file for values the decoder cannot cope with (0 channels, absurd rates),
/// so they get a clear message. Other files pass. Leaves the file position at 0.
fn precheck_wav(file: &File, name: &str) -> std::result::Result<(), PrecheckError> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    let mut head = Vec::with_capacity(4096);
    f.take(4096)
        .read_to_end(&mut head)
        .map_err(PrecheckError::Io)?;
    f.seek(SeekFrom::Start(0)).map_err(PrecheckError::Io)?;
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Ok(());
    }
    let mut pos = 12;
    while pos + 8 <= head.len() {
        let id = &head[pos..pos + 4];
        let len = u32::from_le_bytes([head[pos + 4], head[pos + 5], head[pos + 6], head[pos + 7]])
            as usize;
        if id == b"fmt " {
            let b = &head[pos + 8..];
            if b.len() < 8 {
                return Err(PrecheckError::Bad(bad(
                    name,
                    "WAV header is cut short (fmt chunk)",
                )));
            }
            let channels = u16::from_le_bytes([b[2], b[3]]);
            let rate = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            if channels == 0 {
                return Err(PrecheckError::Bad(bad(
                    name,
                    "WAV header declares 0 channels",
                )));
            }
            InputFormat {
                sample_rate: rate,
                channels: channels.min(MAX_CHANNELS),
            }
            .validate(name)
            .map_err(PrecheckError::Bad)?;
            return Ok(());
        }
        pos += 8 + len + (len & 1);
    }
    Ok(())
}

fn codec_name(codec: CodecType) -> String {
    symphonia::default::get_codecs()
        .get_codec(codec)
        .map_or_else(|| format!("{codec}"), |d| d.short_name.to_string())
}

struct FileSource {
    name: String,
    path: PathBuf,
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    codec: CodecType,
    expected_frames: Option<u64>,
    format: InputFormat,
    spec: Option<SignalSpec>,
    buf: Option<SampleBuffer<f32>>,
    /// Samples decoded at open time, handed out by the first `read`.
    pending: Vec<f32>,
    frames_out: u64,
    decode_errors: u64,
    consecutive_errors: u32,
    sanitizer: Sanitizer,
    done: bool,
}

impl FileSource {
    /// Decodes packets until one yields samples (stored in `self.buf`); returns its frame count, 0 at the end.
    fn next_block(&mut self) -> Result<usize> {
        while !self.done {
            // symphonia's demuxers and decoders panic on some malformed streams (fuzz/decode_file found index
            // errors in the AAC decoder). A panic ends decoding like damage does: what came before is kept.
            let reader = &mut self.reader;
            let Ok(next) = quiet_catch_unwind(|| reader.next_packet()) else {
                self.decoder_gave_up("the demuxer");
                return Ok(0);
            };
            let packet = match next {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.finish();
                    return Ok(0);
                }
                Err(SymError::ResetRequired) => {
                    // A chained stream with new parameters: not supported mid-stream; stop here.
                    tracing::warn!(
                        "{}: stream parameters change mid-file; decoding stops here",
                        self.name
                    );
                    self.finish();
                    return Ok(0);
                }
                Err(SymError::IoError(source)) => {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
                Err(e) => {
                    // Demuxer could not make sense of the rest: keep what we have.
                    self.decode_errors += 1;
                    tracing::warn!(
                        "{}: container damaged after {:.3} s ({e}); stopping there",
                        self.name,
                        self.seconds_out()
                    );
                    self.finish();
                    return Ok(0);
                }
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoder = &mut self.decoder;
            let Ok(decoded) = quiet_catch_unwind(|| decoder.decode(&packet).map(|d| d.frames()))
            else {
                self.decoder_gave_up("the decoder");
                return Ok(0);
            };
            // The buffer borrowed from the decoder cannot cross catch_unwind; fetch it again (no decoding).
            let decoded = decoded.map(|_| self.decoder.last_decoded());
            match decoded {
                Ok(decoded) => {
                    self.consecutive_errors = 0;
                    let spec = *decoded.spec();
                    let frames = decoded.frames();
                    if frames == 0 {
                        if self.spec.is_none() {
                            self.spec = Some(spec);
                        }
                        continue;
                    }
                    if let Some(old) = self.spec {
                        if old != spec && self.frames_out + (self.pending.len() as u64) > 0 {
                            tracing::warn!(
                                "{}: audio format changes mid-file ({} Hz {} ch -> {} Hz {} ch); decoding stops here",
                                self.name,
                                old.rate,
                                old.channels.count(),
                                spec.rate,
                                spec.channels.count()
                            );
                            self.finish();
                            return Ok(0);
                        }
                    }
                    self.spec = Some(spec);
                    let need = decoded.capacity() as u64;
                    let buf = match &mut self.buf {
                        Some(b) if b.capacity() >= decoded.capacity() => b,
                        _ => self.buf.insert(SampleBuffer::new(need, spec)),
                    };
                    buf.copy_interleaved_ref(decoded);
                    return Ok(frames);
                }
                Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.finish();
                    return Ok(0);
                }
                Err(SymError::DecodeError(msg)) => {
                    self.decode_errors += 1;
                    self.consecutive_errors += 1;
                    tracing::warn!(
                        "{}: skipped an undecodable packet at {:.3} s ({msg})",
                        self.name,
                        self.seconds_out()
                    );
                    if self.consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS {
                        return Err(bad(
                            &self.name,
                            format!(
                                "{} consecutive packets could not be decoded (corrupt file?)",
                                self.consecutive_errors
                            ),
                        ));
                    }
                }
                Err(e) => {
                    return Err(bad(
                        &self.name,
                        format!("decoding failed at {:.3} s: {e}", self.seconds_out()),
                    ))
                }
            }
        }
        Ok(0)
    }

    /// A panic inside symphonia: stop at the last good packet, warn, and count it as a decode error.
    fn decoder_gave_up(&mut self, who: &str) {
        self.decode_errors += 1;
        tracing::warn!(
            "{}: {who} failed on a malformed packet after {:.3} s; stopping there",
            self.name,
            self.seconds_out()
        );
        self.finish();
    }

    fn seconds_out(&self) -> f64 {
        match self.spec {
            Some(s) if s.rate > 0 => self.frames_out as f64 / s.rate as f64,
            _ => 0.0,
        }
    }

    /// End of input: report truncation, skipped packets, replaced samples.
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let channels = self.spec.map_or(1, |s| s.channels.count().max(1)) as u64;
        let total = self.frames_out + self.pending.len() as u64 / channels;
        if let Some(expected) = self.expected_frames {
            // Lossy codecs' declared lengths are estimates: allow one packet of slack there.
            let slack = match self.codec {
                codecs::CODEC_TYPE_MP1
                | codecs::CODEC_TYPE_MP2
                | codecs::CODEC_TYPE_MP3
                | codecs::CODEC_TYPE_VORBIS
                | codecs::CODEC_TYPE_AAC
                | codecs::CODEC_TYPE_OPUS => 4096,
                _ => 0,
            };
            if total + slack < expected {
                tracing::warn!(
                    "{}: decoded {total} of the {expected} frames the header declares (file truncated or damaged)",
                    self.name
                );
            }
        }
        if self.decode_errors > 0 {
            tracing::warn!(
                "{}: {} damaged packets were skipped",
                self.name,
                self.decode_errors
            );
        }
        self.sanitizer.report(&self.name);
    }
}

impl AudioSource for FileSource {
    fn duration(&self) -> Option<f64> {
        let frames = self.expected_frames?;
        (self.format.sample_rate > 0).then(|| frames as f64 / f64::from(self.format.sample_rate))
    }
    fn format(&self) -> InputFormat {
        self.format
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read(&mut self, out: &mut Vec<f32>) -> Result<usize> {
        let channels = self.format.channels.max(1) as usize;
        if !self.pending.is_empty() {
            let frames = self.pending.len() / channels;
            out.append(&mut self.pending);
            self.frames_out += frames as u64;
            return Ok(frames);
        }
        let frames = self.next_block()?;
        if frames == 0 {
            return Ok(0);
        }
        let Some(buf) = &self.buf else {
            return Ok(0);
        };
        let start = out.len();
        out.extend_from_slice(buf.samples());
        self.sanitizer.clean(&self.name, &mut out[start..]);
        self.frames_out += frames as u64;
        Ok(frames)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Raw PCM

/// Sample encoding of raw PCM input (little-endian, interleaved).
#[derive(Clone, Copy, Debug)]
pub enum RawSampleFormat {
    S16Le,
    S32Le,
    F32Le,
    U8,
}

impl RawSampleFormat {
    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            RawSampleFormat::S16Le => 2,
            RawSampleFormat::S32Le | RawSampleFormat::F32Le => 4,
            RawSampleFormat::U8 => 1,
        }
    }
}

/// Reads raw interleaved PCM from `reader` (e.g. stdin) in chunks of [`RAW_CHUNK_FRAMES`] frames, so it streams.
/// `name` names the input in messages. A trailing partial frame at end of input is dropped with a warning.
pub fn open_raw(
    reader: Box<dyn Read + Send>,
    name: &str,
    fmt: InputFormat,
    sf: RawSampleFormat,
) -> Result<Box<dyn AudioSource>> {
    fmt.validate(name)?;
    let frame_bytes = sf.bytes() * fmt.channels as usize;
    Ok(Box::new(RawSource {
        reader,
        name: name.to_string(),
        format: fmt,
        sf,
        frame_bytes,
        buf: vec![0u8; RAW_CHUNK_FRAMES * frame_bytes],
        filled: 0,
        eof: false,
        frames_out: 0,
        sanitizer: Sanitizer::default(),
    }))
}

struct RawSource {
    reader: Box<dyn Read + Send>,
    name: String,
    format: InputFormat,
    sf: RawSampleFormat,
    frame_bytes: usize,
    buf: Vec<u8>,
    /// Bytes in `buf` not yet converted (always less than one frame between calls).
    filled: usize,
    eof: bool,
    frames_out: u64,
    sanitizer: Sanitizer,
}

impl AudioSource for RawSource {
    fn format(&self) -> InputFormat {
        self.format
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read(&mut self, out: &mut Vec<f32>) -> Result<usize> {
        // Read until at least one whole frame is buffered (or the input ends); one short read is enough so a slow
        // pipe streams with low latency.
        while !self.eof && self.filled < self.frame_bytes {
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.filled += n;
                    // Top up without blocking forever: stop once we have whole frames.
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: PathBuf::from(&self.name),
                        source,
                    })
                }
            }
        }
        let frames = self.filled / self.frame_bytes;
        if frames == 0 {
            if self.eof && self.filled > 0 {
                tracing::warn!(
                    "{}: input ends with {} byte(s) that do not make a whole frame ({} bytes: {} ch x {:?}); dropped",
                    self.name,
                    self.filled,
                    self.frame_bytes,
                    self.format.channels,
                    self.sf
                );
                self.filled = 0;
            }
            if self.eof {
                self.sanitizer.report(&self.name);
            }
            return Ok(0);
        }
        let used = frames * self.frame_bytes;
        let start = out.len();
        let bytes = &self.buf[..used];
        match self.sf {
            RawSampleFormat::S16Le => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
            ),
            RawSampleFormat::S32Le => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0),
            ),
            RawSampleFormat::F32Le => {
                out.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                self.sanitizer.clean(&self.name, &mut out[start..]);
            }
            RawSampleFormat::U8 => {
                out.extend(bytes.iter().map(|&b| (b as f32 - 128.0) / 128.0));
            }
        }
        self.buf.copy_within(used..self.filled, 0);
        self.filled -= used;
        self.frames_out += frames as u64;
        Ok(frames)
    }
}
