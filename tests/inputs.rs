//! Integration tests for the inputs: file decoding (`whospoke::decode`) and live capture (`whospoke::capture`)
//! through the file-backed test microphone (`scripts/testmic.sh`).
//!
//! Test audio is generated at test time with sox (and espeak-ng for the capture test) into a private temp dir.
//! sox cannot encode MP3 here, so the MP3 test builds a valid MPEG-1 Layer III stream of digital silence by hand.

mod common;

use common::TempDir;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use whospoke::capture::{self, CaptureStats};
use whospoke::decode::{self, AudioSource, InputFormat, RawSampleFormat};
use whospoke::Error;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Shows the library's warnings in the test output (captured unless the test fails or --nocapture).
fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("whospoke=info")
        .with_test_writer()
        .try_init();
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sox -n [out_args] OUT synth ...`
fn sox_synth(out: &Path, out_args: &[&str], synth: &[&str]) {
    let mut c = Command::new("sox");
    c.arg("-n").args(out_args).arg(out).arg("synth").args(synth);
    run(&mut c);
}

/// sox's own decode of `file` as interleaved f32 (the reference for lossless formats).
fn sox_decode(file: &Path) -> Vec<f32> {
    let out = Command::new("sox")
        .arg(file)
        .args(["-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-"])
        .output()
        .expect("run sox");
    assert!(out.status.success(), "sox decode of {file:?} failed");
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn read_all(src: &mut dyn AudioSource) -> (Vec<f32>, usize) {
    let mut out = Vec::new();
    let mut frames = 0;
    loop {
        let n = src.read(&mut out).expect("read");
        if n == 0 {
            break;
        }
        frames += n;
    }
    // End of input is sticky.
    assert_eq!(src.read(&mut out).expect("read after end"), 0);
    (out, frames)
}

fn decode_file(path: &Path) -> (InputFormat, Vec<f32>, usize) {
    let mut src = decode::open_file(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    assert_eq!(src.name(), path.display().to_string());
    let fmt = src.format();
    let (samples, frames) = read_all(src.as_mut());
    assert_eq!(samples.len(), frames * fmt.channels as usize);
    (fmt, samples, frames)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let (x, y) = (a[i] as f64, b[i] as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

fn channel(samples: &[f32], channels: usize, ch: usize) -> Vec<f32> {
    samples.iter().skip(ch).step_by(channels).copied().collect()
}

/// Checks a lossless file decodes to exactly what sox decodes, with the expected format and length.
fn check_lossless(path: &Path, rate: u32, channels: u16, frames: usize, tol: f32) {
    let (fmt, samples, n) = decode_file(path);
    assert_eq!(
        fmt,
        InputFormat {
            sample_rate: rate,
            channels
        },
        "{path:?}"
    );
    assert_eq!(n, frames, "{path:?}: frame count");
    let reference = sox_decode(path);
    let d = max_abs_diff(&samples, &reference);
    assert!(d <= tol, "{path:?}: max diff {d} from sox's decode");
    assert!(samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.1, "{path:?}: decoded audio is silent");
}

#[test]
fn wav_rates_depths_channels() {
    init_log();
    let t = TempDir::new("wav");
    let cases: &[(&str, u32, u16, &[&str])] = &[
        ("8k.wav", 8000, 1, &["-b", "16"]),
        ("44k.wav", 44100, 1, &["-b", "16"]),
        ("48k_stereo.wav", 48000, 2, &["-b", "16"]),
        ("u8.wav", 16000, 1, &["-b", "8", "-e", "unsigned-integer"]),
        ("s24.wav", 22050, 1, &["-b", "24"]),
        ("s32.wav", 16000, 2, &["-b", "32", "-e", "signed-integer"]),
        ("f32.wav", 32000, 1, &["-b", "32", "-e", "floating-point"]),
        ("f64.wav", 16000, 1, &["-b", "64", "-e", "floating-point"]),
        ("6ch.wav", 48000, 6, &["-b", "16"]),
        ("8ch.wav", 16000, 8, &["-b", "16"]),
    ];
    for &(name, rate, channels, enc) in cases {
        let path = t.path(name);
        let rate_s = rate.to_string();
        let ch_s = channels.to_string();
        let mut args = vec!["-r", rate_s.as_str(), "-c", ch_s.as_str()];
        args.extend_from_slice(enc);
        // Different tone per channel, so interleaving errors show.
        let mut synth = vec!["0.5"];
        let freqs = ["440", "1000", "250", "3000", "700", "1500", "90", "5000"];
        for f in freqs.iter().take(channels as usize) {
            synth.extend_from_slice(&["sine", f]);
        }
        synth.extend_from_slice(&["gain", "-3"]);
        sox_synth(&path, &args, &synth);
        let frames = (rate as usize) / 2;
        let tol = if enc.contains(&"8") && !enc.contains(&"floating-point") {
            1.0 / 128.0
        } else {
            1e-6
        };
        check_lossless(&path, rate, channels, frames, tol);
    }
    // Stereo order: channel 0 is the 440 Hz tone, channel 1 the 1 kHz tone.
    let (_, s, _) = decode_file(&t.path("48k_stereo.wav"));
    let reference = sox_decode(&t.path("48k_stereo.wav"));
    assert_eq!(channel(&s, 2, 1), channel(&reference, 2, 1));
}

#[test]
fn flac_and_ogg() {
    init_log();
    let t = TempDir::new("flac");
    let flac = t.path("a.flac");
    sox_synth(
        &flac,
        &["-r", "16000", "-c", "1", "-b", "16"],
        &["1.25", "sine", "300", "gain", "-3"],
    );
    check_lossless(&flac, 16000, 1, 20000, 1e-6);
    let flac24 = t.path("b24.flac");
    sox_synth(
        &flac24,
        &["-r", "48000", "-c", "2", "-b", "24"],
        &["0.5", "sine", "300", "sine", "800", "gain", "-3"],
    );
    check_lossless(&flac24, 48000, 2, 24000, 1e-6);

    // OGG Vorbis is lossy: check format, length and that the waveform matches sox's decode.
    let ogg = t.path("c.ogg");
    sox_synth(
        &ogg,
        &["-r", "44100", "-c", "2"],
        &["1.0", "sine", "440", "sine", "660", "gain", "-3"],
    );
    let (fmt, samples, frames) = decode_file(&ogg);
    assert_eq!(
        fmt,
        InputFormat {
            sample_rate: 44100,
            channels: 2
        }
    );
    assert!(
        (frames as i64 - 44100).abs() <= 1024,
        "ogg: {frames} frames, expected ~44100"
    );
    let reference = sox_decode(&ogg);
    for ch in 0..2 {
        let c = correlation(&channel(&samples, 2, ch), &channel(&reference, 2, ch));
        assert!(
            c > 0.99,
            "ogg channel {ch}: correlation {c} with sox's decode"
        );
    }
}

/// One MPEG-1 Layer III frame (128 kbit/s, 44.1 kHz, mono, no CRC) whose side info and main data are all zero:
/// valid, decodes to 1152 samples of silence.
fn mp3_silent_frame() -> Vec<u8> {
    let mut f = vec![0u8; 417]; // 144 * 128000 / 44100
    f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0xC0]);
    f
}

#[test]
fn mp3_decoder_compiled_in_and_decodes() {
    init_log();
    use symphonia::core::codecs::CODEC_TYPE_MP3;
    assert!(
        symphonia::default::get_codecs()
            .get_codec(CODEC_TYPE_MP3)
            .is_some(),
        "symphonia was built without its MP3 decoder"
    );
    let t = TempDir::new("mp3");
    let path = t.path("silence.mp3");
    let stream: Vec<u8> = (0..40).flat_map(|_| mp3_silent_frame()).collect();
    std::fs::write(&path, stream).unwrap();
    let (fmt, samples, frames) = decode_file(&path);
    assert_eq!(
        fmt,
        InputFormat {
            sample_rate: 44100,
            channels: 1
        }
    );
    assert!(
        (35 * 1152..=40 * 1152).contains(&frames),
        "mp3: {frames} frames from 40 frames of 1152"
    );
    assert!(samples.iter().all(|s| s.abs() < 1e-6));
}

fn expect_bad(path: &Path, needle: &str) -> String {
    match decode::open_file(path) {
        Ok(_) => panic!("{path:?}: opened, expected an error about {needle:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(e, Error::BadAudio { .. }),
                "{path:?}: expected BadAudio, got {e:?}"
            );
            assert!(
                msg.contains(&path.display().to_string()),
                "message does not name the file: {msg}"
            );
            assert!(
                msg.to_lowercase().contains(needle),
                "message does not say {needle:?}: {msg}"
            );
            msg
        }
    }
}

/// A 16-bit mono 16 kHz WAV made by sox, as bytes (44-byte header).
fn wav_bytes(t: &TempDir, secs: &str) -> Vec<u8> {
    let p = t.path("src.wav");
    sox_synth(
        &p,
        &["-r", "16000", "-c", "1", "-b", "16"],
        &[secs, "sine", "500", "gain", "-3"],
    );
    let b = std::fs::read(&p).unwrap();
    assert_eq!(
        &b[36..40],
        b"data",
        "sox wrote an unexpected WAV header layout"
    );
    b
}

#[test]
fn file_errors_name_the_file_and_the_reason() {
    init_log();
    let t = TempDir::new("errors");

    // Missing file: Io, names the path.
    let missing = t.path("nope.wav");
    match decode::open_file(&missing) {
        Err(e @ Error::Io { .. }) => {
            assert!(e.to_string().contains("nope.wav"), "{e}");
        }
        other => panic!("missing file: {:?}", other.map(|_| ())),
    }

    // A directory.
    expect_bad(&t.0, "directory");

    // Unreadable (skipped when running as root, which can read anything).
    let locked = t.path("locked.wav");
    std::fs::write(&locked, wav_bytes(&t, "0.1")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    if std::fs::File::open(&locked).is_err() {
        match decode::open_file(&locked) {
            Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("locked.wav"), "{e}"),
            other => panic!("unreadable file: {:?}", other.map(|_| ())),
        }
    }

    // Empty file.
    let empty = t.path("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    expect_bad(&empty, "empty");

    // Header only.
    let wav = wav_bytes(&t, "1");
    let header_only = t.path("header_only.wav");
    std::fs::write(&header_only, &wav[..44]).unwrap();
    expect_bad(&header_only, "no audio");

    // Text file named .wav.
    let text = t.path("notes.wav");
    std::fs::write(&text, "these are meeting notes, not audio\n".repeat(20)).unwrap();
    expect_bad(&text, "not a supported audio file");

    // Unsupported codec: GSM 6.10 in WAV.
    let gsm = t.path("gsm.wav");
    run(Command::new("sox")
        .arg(t.path("src.wav"))
        .args(["-e", "gsm-full-rate"])
        .arg(&gsm));
    expect_bad(&gsm, "unsupported");

    // Zero channels in the header.
    let mut zero_ch = wav.clone();
    zero_ch[22..24].copy_from_slice(&0u16.to_le_bytes());
    let p = t.path("zero_channels.wav");
    std::fs::write(&p, &zero_ch).unwrap();
    let msg = expect_bad(&p, "");
    assert!(msg.contains("channel"), "{msg}");

    // Absurd sample rates.
    for (rate, name) in [(0u32, "rate0.wav"), (1_000_000, "rate1m.wav")] {
        let mut b = wav.clone();
        b[24..28].copy_from_slice(&rate.to_le_bytes());
        b[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
        let p = t.path(name);
        std::fs::write(&p, &b).unwrap();
        let msg = expect_bad(&p, "");
        assert!(msg.contains("rate"), "{msg}");
    }
}

#[test]
fn damaged_files_decode_what_is_there() {
    init_log();
    let t = TempDir::new("damaged");

    // Truncated data chunk (odd byte count): decodes what is there, no error.
    let wav = wav_bytes(&t, "1");
    let cut = 44 + 16000 + 1; // 0.5 s of 16-bit audio and one stray byte
    let p = t.path("truncated.wav");
    std::fs::write(&p, &wav[..cut]).unwrap();
    let (fmt, samples, frames) = decode_file(&p);
    assert_eq!(fmt.sample_rate, 16000);
    assert!(
        (8000 - 1152..=8000).contains(&frames),
        "truncated wav: {frames} frames"
    );
    let reference = sox_decode(&t.path("src.wav"));
    assert!(max_abs_diff(&samples, &reference[..samples.len()]) < 1e-6);

    // NaN / inf in a float WAV: replaced by 0, the rest intact.
    let fp = t.path("float.wav");
    sox_synth(
        &fp,
        &["-r", "16000", "-c", "1", "-b", "32", "-e", "floating-point"],
        &["0.25", "sine", "500", "gain", "-3"],
    );
    let mut b = std::fs::read(&fp).unwrap();
    let data = b.windows(4).position(|w| w == b"data").unwrap() + 8;
    for (i, v) in [
        (10usize, f32::NAN),
        (11, f32::INFINITY),
        (500, f32::NEG_INFINITY),
    ] {
        b[data + 4 * i..data + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    let nan = t.path("nan.wav");
    std::fs::write(&nan, &b).unwrap();
    let (_, s, frames) = decode_file(&nan);
    assert_eq!(frames, 4000);
    assert!(s.iter().all(|x| x.is_finite()));
    assert_eq!((s[10], s[11], s[500]), (0.0, 0.0, 0.0));
    let reference = sox_decode(&fp);
    assert!((s[12] - reference[12]).abs() < 1e-7);

    // Garbage in the middle of a FLAC stream: bad frames skipped, the rest decoded, no error.
    let flac = t.path("long.flac");
    sox_synth(
        &flac,
        &["-r", "16000", "-c", "1", "-b", "16"],
        &["4", "sine", "300", "gain", "-3"],
    );
    let mut b = std::fs::read(&flac).unwrap();
    let mid = b.len() / 2;
    for (i, byte) in b[mid..mid + 3000].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(37) ^ 0x5A;
    }
    let bad = t.path("corrupt.flac");
    std::fs::write(&bad, &b).unwrap();
    let (_, _, frames) = decode_file(&bad);
    assert!(
        frames > 16000 && frames < 64000,
        "corrupt flac: {frames} frames of 64000"
    );
}

/// A reader handing out at most `step` bytes per call, like a slow pipe.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn raw_all(data: Vec<u8>, step: usize, fmt: InputFormat, sf: RawSampleFormat) -> Vec<f32> {
    let mut src =
        decode::open_raw(Box::new(Trickle { data, pos: 0, step }), "-", fmt, sf).expect("open_raw");
    assert_eq!(src.format(), fmt);
    assert_eq!(src.name(), "-");
    read_all(src.as_mut()).0
}

#[test]
fn raw_pcm_from_a_reader() {
    init_log();
    let mono = InputFormat {
        sample_rate: 16000,
        channels: 1,
    };
    let stereo = InputFormat {
        sample_rate: 48000,
        channels: 2,
    };
    // s16le, odd byte count: the stray byte is dropped.
    let bytes = vec![0x00, 0x40, 0x00, 0xC0, 0xFF, 0x7F, 0x00, 0x80, 0x12];
    for step in [1, 3, 4096] {
        assert_eq!(
            raw_all(bytes.clone(), step, mono, RawSampleFormat::S16Le),
            vec![0.5, -0.5, 32767.0 / 32768.0, -1.0]
        );
    }
    // Stereo s16le: a trailing partial frame (one sample) is dropped.
    let bytes = vec![0x00, 0x40, 0x00, 0xC0, 0x00, 0x20, 0x00, 0xE0, 0x00, 0x10];
    assert_eq!(
        raw_all(bytes, 3, stereo, RawSampleFormat::S16Le),
        vec![0.5, -0.5, 0.25, -0.25]
    );
    // s32le, f32le (NaN replaced), u8.
    let bytes: Vec<u8> = [1 << 30, -(1 << 30)]
        .iter()
        .flat_map(|v: &i32| v.to_le_bytes())
        .collect();
    assert_eq!(
        raw_all(bytes, 5, mono, RawSampleFormat::S32Le),
        vec![0.5, -0.5]
    );
    let bytes: Vec<u8> = [0.25f32, f32::NAN, -0.75]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(
        raw_all(bytes, 7, mono, RawSampleFormat::F32Le),
        vec![0.25, 0.0, -0.75]
    );
    assert_eq!(
        raw_all(vec![128, 0, 192, 255], 2, mono, RawSampleFormat::U8),
        vec![0.0, -1.0, 0.5, 127.0 / 128.0]
    );
    // Long input streams in chunks of at most RAW_CHUNK_FRAMES frames.
    let n = 3 * decode::RAW_CHUNK_FRAMES + 17;
    let bytes: Vec<u8> = (0..n)
        .flat_map(|i| ((i % 1000) as i16).to_le_bytes())
        .collect();
    let mut src = decode::open_raw(
        Box::new(std::io::Cursor::new(bytes)),
        "stdin",
        mono,
        RawSampleFormat::S16Le,
    )
    .unwrap();
    let mut out = Vec::new();
    let mut total = 0;
    loop {
        let k = src.read(&mut out).unwrap();
        assert!(k <= decode::RAW_CHUNK_FRAMES);
        if k == 0 {
            break;
        }
        total += k;
    }
    assert_eq!(total, n);
    assert_eq!(out[999], 999.0 / 32768.0);
    // Bad formats are refused.
    for bad in [
        InputFormat {
            sample_rate: 0,
            channels: 1,
        },
        InputFormat {
            sample_rate: 16000,
            channels: 0,
        },
        InputFormat {
            sample_rate: 400_000,
            channels: 1,
        },
    ] {
        let r = decode::open_raw(
            Box::new(std::io::empty()),
            "stdin",
            bad,
            RawSampleFormat::S16Le,
        );
        assert!(matches!(r, Err(Error::BadAudio { .. })), "{bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Capture through the file-backed test microphone.

/// A running `scripts/testmic.sh` instance; stopped on drop (also when the test panics).
struct TestMic {
    dir: String,
    raw: PathBuf,
    format: String,
}

impl TestMic {
    /// Starts the test mic and points this process's ALSA/PulseAudio at it (XDG_RUNTIME_DIR, XDG_CONFIG_HOME).
    fn start(audio: &Path) -> TestMic {
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("scripts/testmic.sh"))
            .arg("start")
            .arg(audio)
            .output()
            .expect("run scripts/testmic.sh");
        assert!(
            out.status.success(),
            "testmic.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut mic = TestMic {
            dir: String::new(),
            raw: PathBuf::new(),
            format: String::new(),
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((k, v)) = line.trim().trim_start_matches("export ").split_once('=') else {
                continue;
            };
            let v = v.trim_matches('\'');
            match k {
                "TESTMIC_DIR" => mic.dir = v.to_string(),
                "TESTMIC_RAW" => mic.raw = PathBuf::from(v),
                "TESTMIC_FORMAT" => mic.format = v.to_string(),
                "XDG_RUNTIME_DIR" | "XDG_CONFIG_HOME" => std::env::set_var(k, v),
                _ => {}
            }
        }
        assert!(!mic.dir.is_empty(), "testmic.sh printed no TESTMIC_DIR");
        mic
    }
}

impl Drop for TestMic {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Path::new(ROOT).join("scripts/testmic.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn capture_from_file_backed_microphone() {
    init_log();
    use ringbuf::traits::{Consumer, Split};

    let t = TempDir::new("capture");
    let speech = t.path("speech.wav");
    run(Command::new("espeak-ng").arg("-w").arg(&speech).arg(
        "This is the whospoke test microphone. It plays a file in real time, through a private \
         PulseAudio server, so the capture path can be tested on machines without a sound card.",
    ));
    let mic = TestMic::start(&speech);
    assert_eq!(mic.format, "48000:2:f32");
    let raw: Vec<f32> = std::fs::read(&mic.raw)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let file_frames = raw.len() / 2;
    assert!(
        file_frames > 48000 * 4,
        "speech too short: {file_frames} frames"
    );

    // The device is listed.
    let devices = capture::list_input_devices().expect("list_input_devices");
    assert!(
        devices
            .iter()
            .any(|d| d.name.starts_with("testmic") || d.name.starts_with("pulse")),
        "testmic/pulse not among {devices:?}"
    );
    assert!(
        devices.iter().any(|d| d.is_default),
        "no default device in {devices:?}"
    );
    let listed = devices
        .iter()
        .find(|d| d.name.starts_with("testmic"))
        .unwrap();
    assert_eq!((listed.sample_rate, listed.channels), (48000, 2));

    // Unknown names list what is available.
    let (prod, _cons) = ringbuf::HeapRb::<f32>::new(1024).split();
    match capture::open_microphone(
        Some("no-such-device-xyz"),
        prod,
        Arc::new(CaptureStats::default()),
    ) {
        Err(e @ Error::Device(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("no-such-device-xyz") && msg.contains("testmic"),
                "{msg}"
            );
        }
        other => panic!("unknown device: {:?}", other.map(|_| ())),
    }

    // Capture ~3 s.
    let (prod, mut cons) = ringbuf::HeapRb::<f32>::new(48000 * 2 * 10).split();
    let stats = Arc::new(CaptureStats::default());
    let opened = Instant::now();
    let m = capture::open_microphone(Some("testmic"), prod, stats.clone()).expect("open testmic");
    assert_eq!(
        m.format,
        InputFormat {
            sample_rate: 48000,
            channels: 2
        }
    );
    assert!(m.name.contains("testmic"));
    let rate = m.format.sample_rate as f64;
    let want_frames = (3.0 * rate) as usize;
    let mut got: Vec<f32> = Vec::new();
    let mut buf = vec![0f32; 8192];
    let mut first: Option<(Instant, usize)> = None;
    let mut last = (Instant::now(), 0usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() / 2 < want_frames && Instant::now() < deadline {
        let n = cons.pop_slice(&mut buf);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let now = Instant::now();
        got.extend_from_slice(&buf[..n]);
        if first.is_none() {
            first = Some((now, got.len() / 2));
        }
        last = (now, got.len() / 2);
    }
    drop(m);
    let (t0, f0) = first.expect("no audio arrived within 20 s");
    let (t1, f1) = last;
    let arrival = (t1 - t0).as_secs_f64();
    let audio = (f1 - f0) as f64 / rate;
    eprintln!(
        "capture: first audio {:.3} s after open; {:.3} s of audio arrived over {:.3} s ({:.1} %); stats {:?}",
        (t0 - opened).as_secs_f64(),
        audio,
        arrival,
        100.0 * arrival / audio,
        stats
    );
    assert!(
        got.len() / 2 >= want_frames,
        "only {} frames in 20 s",
        got.len() / 2
    );
    assert!(
        (arrival - audio).abs() <= 0.3 * audio,
        "not real-time: {audio:.3} s of audio arrived over {arrival:.3} s"
    );
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(stats.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(stats.frames_in.load(std::sync::atomic::Ordering::Relaxed) as usize >= got.len() / 2);

    // Content: the device hands out the file's samples; bit-exact from the start, else aligned correlation.
    let n = got.len().min(raw.len());
    if got[..n] != raw[..n] {
        let a = channel(&got[..n], 2, 0);
        let b = channel(&raw[..n], 2, 0);
        let (lag, c) = (0..4800usize)
            .map(|lag| (lag, correlation(&a[lag..], &b)))
            .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best });
        assert!(
            c > 0.99,
            "captured audio does not match the file: best correlation {c} at lag {lag}"
        );
        eprintln!("capture: not bit-exact; correlation {c:.4} at lag {lag}");
    } else {
        eprintln!("capture: bit-exact ({} frames)", n / 2);
    }
}
