//! Bad input and a broken environment, end to end: the real `whospoke` binary (`--no-tui`) on inputs generated
//! at test time (hand-written WAV headers, sox). Every run has a deadline (`DEADLINE`): a hang fails the test
//! instead of the suite. Each case checks the exit status, that nothing panicked, and that the message names the
//! thing (file, directory, device) and says why. Issue 6, "Bad input" and "Environment"; docs/reliability.md.

mod common;

use common::TempDir;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_whospoke");
/// No run may take longer than this.
const DEADLINE: Duration = Duration::from_secs(60);

/// What a finished run left behind.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// Parsed JSON lines of stdout.
    fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line {l:?}: {e}"))
            })
            .collect()
    }
    fn describe(&self) -> String {
        format!(
            "exit {:?} after {:.1?}\n--- stderr ---\n{}\n--- stdout (last 2000 chars) ---\n{}",
            self.status.code(),
            self.elapsed,
            self.stderr,
            &self.stdout[self.stdout.len().saturating_sub(2000)..]
        )
    }
}

fn whospoke(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--no-tui")
        .args(args)
        .env_remove("WHOSPOKE_LOG")
        .env_remove("WHOSPOKE_MODELS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Reads a child's pipe to the end on a thread.
fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Waits for `child` until `DEADLINE` (from `started`); kills it and fails the test if it is still running.
fn wait_deadline(child: &mut Child, started: Instant, what: &str) -> ExitStatus {
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {DEADLINE:?}: killed (hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion (with the deadline), feeding `stdin` if given.
fn run(mut cmd: Command, stdin: Option<Vec<u8>>) -> Outcome {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn whospoke");
    let feeder = stdin.map(|data| {
        let mut w = child.stdin.take().expect("stdin pipe");
        std::thread::spawn(move || {
            // The process may legitimately stop reading early: ignore a broken pipe.
            let _ = w.write_all(&data);
        })
    });
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_deadline(&mut child, started, &what);
    let elapsed = started.elapsed();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    Outcome {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    }
}

fn run_file(path: &Path) -> Outcome {
    run(
        whospoke(&["--format", "jsonl", path.to_str().unwrap()]),
        None,
    )
}

fn assert_no_panic(o: &Outcome) {
    assert!(
        !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
        "panic:\n{}",
        o.describe()
    );
    // A signal (SIGSEGV, SIGABRT) has no exit code.
    assert!(o.code().is_some(), "killed by a signal:\n{}", o.describe());
}

/// Refused cleanly: exit 1, one `whospoke: error:` line holding every `needle`, no labels on stdout.
fn assert_refused(o: &Outcome, needles: &[&str]) {
    assert_no_panic(o);
    assert_eq!(o.code(), Some(1), "expected exit 1:\n{}", o.describe());
    assert!(
        o.stderr.contains("whospoke: error: "),
        "no error line:\n{}",
        o.describe()
    );
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "stderr does not mention {n:?}:\n{}",
            o.describe()
        );
    }
    assert!(
        !o.stdout.contains("\"turn\""),
        "labels printed although refused:\n{}",
        o.describe()
    );
    // Causes are not repeated (library errors already quote their source).
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("whospoke: error: "))
        .unwrap();
    let parts: Vec<&str> = line.split(": ").collect();
    for w in parts.windows(2) {
        assert_ne!(w[0], w[1], "repeated cause in {line:?}");
    }
}

/// Finished normally: exit 0, no panic, the last JSONL line is `end`; returns it.
fn assert_ended(o: &Outcome) -> serde_json::Value {
    assert_no_panic(o);
    assert_eq!(o.code(), Some(0), "expected exit 0:\n{}", o.describe());
    let ev = o.events();
    let last = ev.last().cloned().unwrap_or_default();
    assert_eq!(
        last["type"],
        "end",
        "last line is not `end`:\n{}",
        o.describe()
    );
    assert_eq!(ev[0]["type"], "start", "first line is not `start`");
    last
}

/// A canonical 44-byte-header WAV: `tag` 1 = PCM, 3 = IEEE float. `data_len` overrides the data chunk size.
fn wav(
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data: &[u8],
    data_len: Option<u32>,
) -> Vec<u8> {
    let block = channels.wrapping_mul(bits / 8);
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&tag.to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&rate.wrapping_mul(block as u32).to_le_bytes());
    fmt.extend_from_slice(&block.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    let mut body = b"WAVEfmt ".to_vec();
    body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    body.extend_from_slice(&fmt);
    body.extend_from_slice(b"data");
    body.extend_from_slice(&data_len.unwrap_or(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// 16-bit mono PCM of a quiet tone.
fn tone_s16(frames: usize) -> Vec<u8> {
    (0..frames)
        .flat_map(|i| (((i as f32 * 0.05).sin() * 3000.0) as i16).to_le_bytes())
        .collect()
}

fn sox(args: &[&str]) {
    let out = Command::new("sox")
        .args(args)
        .output()
        .expect("run sox (is it installed?)");
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `secs` seconds of assets/demo/demo.flac from `start`, as 16 kHz 16-bit WAV.
fn demo_cut(t: &TempDir, name: &str, start: f64, secs: f64) -> PathBuf {
    let p = t.path(name);
    let demo = format!("{ROOT}/assets/demo/demo.flac");
    sox(&[
        &demo,
        p.to_str().unwrap(),
        "trim",
        &start.to_string(),
        &secs.to_string(),
    ]);
    p
}

/// Raw s16le mono 16 kHz PCM of `secs` seconds of the demo.
fn demo_raw(start: f64, secs: f64) -> Vec<u8> {
    let demo = format!("{ROOT}/assets/demo/demo.flac");
    let out = Command::new("sox")
        .args([
            demo.as_str(),
            "-t",
            "raw",
            "-r",
            "16000",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-L",
            "-",
        ])
        .args(["trim", &start.to_string(), &secs.to_string()])
        .output()
        .expect("run sox");
    assert!(out.status.success());
    out.stdout
}

// ---------------------------------------------------------------------------------------------------------------
// Files

#[test]
fn empty_file() {
    let t = TempDir::new("empty");
    let p = t.path("empty.wav");
    std::fs::write(&p, b"").unwrap();
    assert_refused(&run_file(&p), &[p.to_str().unwrap(), "empty file"]);
}

#[test]
fn header_only_wav() {
    let t = TempDir::new("hdr");
    let p = t.path("header-only.wav");
    std::fs::write(&p, wav(1, 1, 16000, 16, &[], None)).unwrap();
    assert_refused(&run_file(&p), &[p.to_str().unwrap(), "no audio data"]);
}

#[test]
fn wav_cut_inside_its_header() {
    let t = TempDir::new("cuthdr");
    let p = t.path("cut.wav");
    std::fs::write(&p, &wav(1, 1, 16000, 16, &tone_s16(1600), None)[..30]).unwrap();
    assert_refused(&run_file(&p), &[p.to_str().unwrap(), "truncated"]);
}

/// A WAV cut short in its data (the header declares 5 s): what is there is diarised, with a warning.
#[test]
fn truncated_wav_data_decodes_what_is_there() {
    let t = TempDir::new("trunc");
    let full = demo_cut(&t, "full.wav", 10.0, 5.0);
    let bytes = std::fs::read(&full).unwrap();
    let p = t.path("truncated.wav");
    // 44-byte header + 49 978.5 frames: also an odd byte at the end.
    std::fs::write(&p, &bytes[..100_001]).unwrap();
    let o = run_file(&p);
    let end = assert_ended(&o);
    assert!(
        o.stderr.contains("truncated") && o.stderr.contains(p.to_str().unwrap()),
        "no truncation warning naming the file:\n{}",
        o.describe()
    );
    let time = end["time"].as_f64().unwrap();
    assert!((time - 49_978.0 / 16_000.0).abs() < 0.05, "end at {time}");
    assert!(
        !end["speakers"].as_array().unwrap().is_empty(),
        "speech in the kept part is labelled:\n{}",
        o.describe()
    );
}

/// A WAV written by a streaming recorder (RIFF and data sizes 0xFFFFFFFF): decoded to its real end.
#[test]
fn streaming_wav_with_unknown_length() {
    let t = TempDir::new("streamwav");
    let p = t.path("stream.wav");
    let mut bytes = wav(1, 1, 16000, 16, &tone_s16(16000), Some(u32::MAX));
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&p, bytes).unwrap();
    let end = assert_ended(&run_file(&p));
    assert!((end["time"].as_f64().unwrap() - 1.0).abs() < 0.02, "{end}");
}

#[test]
fn text_file_named_wav() {
    let t = TempDir::new("text");
    let p = t.path("notes.wav");
    std::fs::write(&p, "Minutes of the meeting\nNothing to report.\n").unwrap();
    assert_refused(
        &run_file(&p),
        &[p.to_str().unwrap(), "not a supported audio file"],
    );
}

/// GSM 06.10 in WAV: symphonia has no decoder for it.
#[test]
fn unsupported_codec_gsm_wav() {
    let t = TempDir::new("gsm");
    let p = t.path("gsm.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-e",
        "gsm-full-rate",
        p.to_str().unwrap(),
        "synth",
        "1",
        "sine",
        "440",
    ]);
    assert_refused(&run_file(&p), &[p.to_str().unwrap(), "unsupported"]);
}

#[test]
fn zero_channels() {
    let t = TempDir::new("zch");
    let p = t.path("zero-channels.wav");
    std::fs::write(&p, wav(1, 0, 16000, 16, &tone_s16(1600), None)).unwrap();
    assert_refused(&run_file(&p), &[p.to_str().unwrap(), "0 channels"]);
}

#[test]
fn sample_rate_zero() {
    let t = TempDir::new("r0");
    let p = t.path("rate0.wav");
    std::fs::write(&p, wav(1, 1, 0, 16, &tone_s16(1600), None)).unwrap();
    assert_refused(
        &run_file(&p),
        &[p.to_str().unwrap(), "unusable sample rate 0 Hz"],
    );
}

#[test]
fn sample_rate_ten_megahertz() {
    let t = TempDir::new("r10m");
    let p = t.path("rate10M.wav");
    std::fs::write(&p, wav(1, 1, 10_000_000, 16, &tone_s16(1600), None)).unwrap();
    assert_refused(
        &run_file(&p),
        &[p.to_str().unwrap(), "unusable sample rate 10000000 Hz"],
    );
}

/// 32-bit float WAV with NaN, +inf and -inf among real speech: replaced by 0 with a warning, speech still found.
#[test]
fn nan_and_inf_float_samples() {
    let t = TempDir::new("nan");
    let speech = demo_raw(11.0, 2.0);
    let mut data = Vec::new();
    for (i, s) in speech.chunks_exact(2).enumerate() {
        let v = i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0;
        let v = match i % 7 {
            0 => f32::NAN,
            3 => f32::INFINITY,
            5 => f32::NEG_INFINITY,
            _ => v,
        };
        data.extend_from_slice(&v.to_le_bytes());
    }
    let p = t.path("nan.wav");
    std::fs::write(&p, wav(3, 1, 16000, 32, &data, None)).unwrap();
    let o = run_file(&p);
    let end = assert_ended(&o);
    assert!(
        o.stderr.contains("non-finite") && o.stderr.contains(p.to_str().unwrap()),
        "no warning about NaN/inf:\n{}",
        o.describe()
    );
    assert!((end["time"].as_f64().unwrap() - 2.0).abs() < 0.02, "{end}");
}

#[test]
fn silence_only() {
    let t = TempDir::new("silence");
    let p = t.path("silence.wav");
    sox(&[
        "-n",
        "-r",
        "16000",
        "-c",
        "1",
        "-b",
        "16",
        p.to_str().unwrap(),
        "trim",
        "0",
        "5",
    ]);
    let o = run_file(&p);
    let end = assert_ended(&o);
    assert_eq!(end["speakers"], serde_json::json!([]), "{}", o.describe());
    assert!(o.stderr.contains("no speech found"), "{}", o.describe());
    assert!(!o.stdout.contains("\"turn\""), "{}", o.describe());
}

/// One second cut from the middle of a demo turn: one speaker, labelled final, exit 0.
#[test]
fn one_second_of_speech() {
    let t = TempDir::new("onesec");
    let p = demo_cut(&t, "one.wav", 11.0, 1.0);
    let o = run_file(&p);
    let end = assert_ended(&o);
    assert_eq!(
        end["speakers"].as_array().unwrap().len(),
        1,
        "{}",
        o.describe()
    );
    assert!(
        o.events()
            .iter()
            .any(|e| e["type"] == "turn" && e["status"] == "final"),
        "{}",
        o.describe()
    );
}

/// Found by fuzz/decode_file: symphonia's ADTS (AAC) probe panics on this file (a zero `step_by`). whospoke catches
/// it and refuses the file, without a panic message on stderr.
#[test]
fn decoder_panic_in_probe_is_a_clean_refusal() {
    const BYTES: &[u8] = &[
        0xff, 0x00, 0x00, 0x61, 0x43, 0x00, 0xf2, 0x22, 0x10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x0e,
        0x00, 0x00, 0x0e, 0x01, 0xf4, 0x01, 0x70, 0x00, 0x00, 0x01, 0x90, 0xfb, 0x4a, 0xa8, 0x9f,
        0xb8, 0x9b, 0xf9, 0x4d, 0x05, 0x90, 0x6f, 0x6d, 0x6d, 0x65, 0x6e, 0x74, 0x3d, 0x50, 0x72,
        0x6f, 0x63, 0xee, 0x73, 0x73, 0x30, 0x64, 0x20, 0x62, 0x79, 0x20, 0x53, 0x6f, 0x58, 0xff,
        0xf8, 0x74, 0x0c, 0x00, 0x01, 0x8f, 0x7c, 0x00, 0x00, 0x00, 0x00, 0x5d, 0xce, 0xff, 0xf1,
        0x61, 0x43, 0x00, 0x00, 0x00, 0x22, 0x10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00,
        0x0e, 0x01, 0xf4, 0x01, 0x70, 0x00, 0x00, 0x01, 0x90, 0xfb, 0x4a, 0xa8, 0x9f, 0xb8, 0x9b,
        0xf9, 0x4d, 0x05, 0x90, 0xa3, 0x00, 0x00, 0x72, 0x65, 0x66, 0x65, 0x72, 0x65, 0x6e, 0x63,
        0x65, 0x20, 0x6c, 0x69, 0x62, 0x46, 0x4c, 0x41, 0x43, 0x20, 0x31, 0x2e, 0x53, 0x6f, 0x58,
        0xff, 0xf8, 0x74, 0x0c, 0x00, 0x01, 0x8f, 0x7c, 0x00, 0x00, 0x00, 0x00,
    ];
    let t = TempDir::new("probepanic");
    let p = t.path("odd.mp3");
    std::fs::write(&p, BYTES).unwrap();
    assert_refused(&run_file(&p), &[p.to_str().unwrap(), "malformed header"]);
}

/// Found by fuzz/decode_file (CI run of 9b8eb34): an ADTS (AAC) stream on which symphonia's AAC decoder indexes
/// out of bounds while decoding a packet (aac/ics/mod.rs:365). whospoke catches it, stops at the last good packet
/// and reports the file as empty: a clear refusal, exit 1, no panic.
#[test]
fn decoder_panic_while_decoding_is_a_clean_refusal() {
    const BYTES: &[u8] = &[
        0x7a, 0x96, 0x42, 0xff, 0xf1, 0x52, 0x64, 0x06, 0x25, 0x94, 0x05, 0x52, 0x1a, 0x9f, 0x9f,
        0x9f, 0x9f, 0x9f, 0x7a, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9f, 0x9f, 0x3e, 0x65, 0xdf, 0x00, 0xdc, 0x69,
        0x00, 0x00, 0x11, 0x49, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x9a, 0xff, 0xd8, 0x00,
        0xc5, 0xdb, 0x52, 0x1a, 0x45, 0xff, 0xf2, 0x1a, 0x45, 0x00, 0x01, 0x00, 0x52, 0x1a, 0x45,
        0xff, 0xf2, 0x1a, 0x45, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f,
    ];
    let t = TempDir::new("decodepanic");
    let p = t.path("odd.wav");
    std::fs::write(&p, BYTES).unwrap();
    let o = run_file(&p);
    assert_refused(&o, &[p.to_str().unwrap(), "no audio data"]);
    assert!(
        o.stderr.contains("failed on a malformed packet"),
        "{}",
        o.describe()
    );
}

#[test]
fn missing_file() {
    let t = TempDir::new("missing");
    let p = t.path("no-such-recording.wav");
    assert_refused(
        &run_file(&p),
        &[p.to_str().unwrap(), "No such file or directory"],
    );
}

#[test]
fn directory_as_input() {
    let t = TempDir::new("dirin");
    let p = t.path("recordings");
    std::fs::create_dir_all(&p).unwrap();
    assert_refused(&run_file(&p), &[p.to_str().unwrap(), "is a directory"]);
}

// ---------------------------------------------------------------------------------------------------------------
// stdin

/// Raw PCM on stdin with an odd byte count: the half sample at the end is dropped with a warning.
#[test]
fn stdin_odd_byte_count() {
    let mut data = demo_raw(11.0, 2.0);
    data.push(0x7f);
    let o = run(whospoke(&["--format", "jsonl", "-"]), Some(data));
    let end = assert_ended(&o);
    assert!(
        o.stderr.contains("stdin") && o.stderr.contains("do not make a whole frame"),
        "{}",
        o.describe()
    );
    assert!((end["time"].as_f64().unwrap() - 2.0).abs() < 0.02, "{end}");
}

/// The writer goes away after half a second (its end of the pipe closes): what came is diarised, exit 0.
#[test]
fn stdin_early_eof() {
    let mut cmd = whospoke(&["--format", "jsonl", "-", "--rate", "16000"]);
    cmd.stdin(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut w = child.stdin.take().unwrap();
    let data = demo_raw(11.0, 3.0);
    w.write_all(&data[..16_000]).unwrap(); // 0.5 s
    std::thread::sleep(Duration::from_millis(300));
    w.write_all(&data[16_000..16_001]).unwrap(); // and a stray byte
    drop(w);
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_deadline(&mut child, started, "stdin early EOF");
    let o = Outcome {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    };
    let end = assert_ended(&o);
    assert!((end["time"].as_f64().unwrap() - 0.5).abs() < 0.02, "{end}");
}

#[test]
fn stdin_empty() {
    let o = run(whospoke(&["--format", "jsonl", "-"]), Some(Vec::new()));
    let end = assert_ended(&o);
    assert_eq!(end["time"].as_f64(), Some(0.0));
    assert!(o.stderr.contains("no speech found"), "{}", o.describe());
}

#[test]
fn stdin_absurd_rate_and_channels() {
    let o = run(whospoke(&["-", "--rate", "0"]), Some(vec![0; 64]));
    assert_refused(&o, &["stdin", "unusable sample rate 0 Hz"]);
    let o = run(whospoke(&["-", "--channels", "0"]), Some(vec![0; 64]));
    assert_refused(&o, &["stdin", "unusable channel count 0"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Environment

/// An unwritable --rttm path is refused before any audio is processed.
#[test]
fn rttm_into_missing_directory() {
    let t = TempDir::new("rttmdir");
    let rttm = t.path("no-such-dir/out.rttm");
    let demo = format!("{ROOT}/assets/demo/demo.flac");
    let o = run(
        whospoke(&[
            "--format",
            "jsonl",
            "--realtime",
            "--rttm",
            rttm.to_str().unwrap(),
            &demo,
        ]),
        None,
    );
    assert_refused(
        &o,
        &[
            rttm.to_str().unwrap(),
            "cannot write",
            "No such file or directory",
        ],
    );
    assert!(
        o.elapsed < Duration::from_secs(10),
        "refused only after {:?} (audio was processed first?)",
        o.elapsed
    );
    assert!(
        o.stdout.is_empty(),
        "output before the refusal:\n{}",
        o.describe()
    );
}

#[test]
fn missing_model_dir() {
    let t = TempDir::new("nomodels");
    let p = demo_cut(&t, "one.wav", 11.0, 1.0);
    let o = run(
        whospoke(&["--models", "/nonexistent", p.to_str().unwrap()]),
        None,
    );
    assert_refused(
        &o,
        &[
            "/nonexistent/campplus.onnx",
            "missing",
            "git checkout models/",
        ],
    );
}

/// A truncated model fails its sha256 check at load, with a message on how to restore it: the int8 CAM++ trunk and
/// the two parts of the split 8-bit segmentation of the default mode, the float trunk of `--precision fp32`, and `campplus.onnx` of `--mode vad`
/// (each run checks the models it loads).
#[test]
fn corrupt_model() {
    for (file, mode, precision) in [
        ("campplus_trunk_int8.onnx", "seg", "int8"),
        ("segmentation-3.0-sincconv.onnx", "seg", "int8"),
        ("segmentation-3.0-int8-rest.onnx", "seg", "int8"),
        ("campplus_trunk.onnx", "seg", "fp32"),
        ("campplus.onnx", "vad", "int8"),
    ] {
        let t = TempDir::new("badmodel");
        let dir = t.path("models");
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "campplus.onnx",
            "campplus_trunk.onnx",
            "campplus_trunk_int8.onnx",
            "campplus_head.bin",
            "segmentation-3.0.onnx",
            "segmentation-3.0-int8.onnx",
            "segmentation-3.0-sincconv.onnx",
            "segmentation-3.0-int8-rest.onnx",
        ] {
            std::fs::copy(format!("{ROOT}/models/{f}"), dir.join(f)).unwrap();
        }
        let model = dir.join(file);
        let len = std::fs::metadata(&model).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&model)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let p = demo_cut(&t, "one.wav", 11.0, 1.0);
        let o = run(
            whospoke(&[
                "--models",
                dir.to_str().unwrap(),
                "--mode",
                mode,
                "--precision",
                precision,
                p.to_str().unwrap(),
            ]),
            None,
        );
        assert_refused(
            &o,
            &[
                model.to_str().unwrap(),
                "checksum mismatch",
                "git checkout models/",
            ],
        );
    }
}

#[test]
fn missing_onnx_runtime() {
    let t = TempDir::new("noort");
    let p = demo_cut(&t, "one.wav", 11.0, 1.0);
    let mut cmd = whospoke(&[p.to_str().unwrap()]);
    cmd.env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so");
    assert_refused(
        &run(cmd, None),
        &[
            "/nonexistent/libonnxruntime.so",
            "no such file",
            "scripts/fetch-onnxruntime.sh",
        ],
    );
}

#[test]
fn unknown_device_lists_available_ones() {
    let o = run(
        whospoke(&["--device", "no-such-device-4f2a", "--format", "jsonl"]),
        None,
    );
    assert_refused(&o, &["no-such-device-4f2a"]);
    // Either the devices are listed, or it says there are none.
    assert!(
        o.stderr.contains("available input devices")
            || o.stderr.contains("no audio input devices")
            || o.stderr.contains("cannot list input devices"),
        "{}",
        o.describe()
    );
}

/// `whospoke ... | head -1`: the reader goes away after one line; whospoke stops quietly and exits 0.
#[test]
fn stdout_closed_early() {
    let demo = format!("{ROOT}/assets/demo/demo.flac");
    let mut cmd = whospoke(&["--format", "jsonl", "--realtime", &demo]);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let err = drain(child.stderr.take());
    let mut stdout = child.stdout.take().unwrap();
    let mut first = Vec::new();
    let mut b = [0u8; 1];
    while stdout.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        first.push(b[0]);
    }
    drop(stdout);
    let closed_at = Instant::now();
    let status = wait_deadline(&mut child, started, "stdout closed early");
    let o = Outcome {
        status,
        stdout: String::from_utf8_lossy(&first).into_owned(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    };
    assert_no_panic(&o);
    assert!(o.stdout.contains("\"start\""), "{}", o.describe());
    assert_eq!(o.code(), Some(0), "{}", o.describe());
    assert!(
        !o.stderr.contains("Broken pipe") && !o.stderr.contains("error"),
        "{}",
        o.describe()
    );
    // The demo lasts 67 s in real time; the process must notice the closed pipe within a few seconds.
    assert!(
        closed_at.elapsed() < Duration::from_secs(5),
        "took {:?} to exit after stdout closed",
        closed_at.elapsed()
    );
}

/// `whospoke eval REF HYP | head -1` with the reader gone before the report is written: whospoke ends
/// quietly with status 0 (std's print would panic on the broken pipe).
#[test]
fn eval_report_to_a_closed_pipe() {
    let demo_ref = format!("{ROOT}/assets/demo/demo.rttm");
    let mut cmd = Command::new(BIN);
    cmd.args(["eval", &demo_ref, &demo_ref])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    drop(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_deadline(&mut child, started, "eval to a closed pipe");
    let o = Outcome {
        status,
        stdout: String::new(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    };
    assert_no_panic(&o);
    assert_eq!(o.code(), Some(0), "{}", o.describe());
    assert!(o.stderr.is_empty(), "{}", o.describe());
}
