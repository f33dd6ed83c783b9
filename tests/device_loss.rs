//! The live input device disappears mid-stream, for real: the file-backed test microphone's sound
//! server (a private PulseAudio, scripts/testmic.sh) is stopped while whospoke captures from it.
//! Either it comes back (the server starts again, playing the rest of the conversation) and the
//! labels go on, with stream time that includes the gap; or it never does, and whospoke finalises,
//! flushes its outputs and exits non-zero naming the device.
//!
//! Each test has its own test microphone (private runtime dir and server), so they run in parallel.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use whospoke::eval::{EvalOptions, Rttm, Segment};

use common::*;

/// whospoke on the test microphone, with its stdout as a stream of parsed JSON lines.
struct Run {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: std::thread::JoinHandle<String>,
}

impl Run {
    fn start(mic: &TestMic, rttm: &Path, reopen_timeout: &str) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_whospoke"));
        cmd.args(["--device", "testmic", "--format", "jsonl", "--no-tui"])
            .args(["--reopen-timeout", reopen_timeout, "--rttm"])
            .arg(rttm)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &mic.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start whospoke");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Run {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Reads lines until one satisfies `pred` (true) or `within` passes (false).
    fn wait_for(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    let hit = pred(&v);
                    self.seen.push(v);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Waits for the process to end (killing it after `within`): exit status, all stdout lines, stderr.
    fn finish(mut self, within: Duration) -> (std::process::ExitStatus, Vec<Value>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("whospoke did not end within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(v);
        }
        let err = self.stderr.join().unwrap_or_default();
        (status, self.seen, err)
    }

    fn interrupt(&self) {
        // SAFETY: a plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

fn device_events<'a>(lines: &'a [Value], state: &str) -> Vec<&'a Value> {
    for v in lines
        .iter()
        .filter(|v| v["type"] == "device" && v["state"] == state)
    {
        eprintln!("{v}");
    }
    lines
        .iter()
        .filter(|v| v["type"] == "device" && v["state"] == state)
        .collect()
}

fn finals(lines: &[Value]) -> Vec<Segment> {
    lines
        .iter()
        .filter(|v| v["type"] == "turn" && v["status"] == "final")
        .map(|v| {
            Segment::new(
                num(v, "start"),
                num(v, "end"),
                v["speaker"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}

/// Reference segments of the demo within [from, to), moved by `shift` seconds.
fn demo_reference(from: f64, to: f64, shift: f64) -> Vec<Segment> {
    let all = whospoke::eval::read_rttm(repo().join("assets/demo/demo.rttm")).expect("demo rttm");
    all.values()
        .flatten()
        .filter(|s| s.end > from && s.start < to)
        .map(|s| {
            Segment::new(
                s.start.max(from) + shift,
                s.end.min(to) + shift,
                s.speaker.clone(),
            )
        })
        .collect()
}

fn der(reference: Vec<Segment>, hyp: Vec<Segment>) -> whospoke::eval::Report {
    let mut r: Rttm = Default::default();
    r.insert("mic".into(), reference);
    let mut h: Rttm = Default::default();
    h.insert("mic".into(), hyp);
    let opts = EvalOptions {
        collar: 0.25,
        ..Default::default()
    };
    let report = whospoke::eval::evaluate_segments(&r, &h, &opts);
    eprintln!("{}", report.to_table());
    report
}

/// Events never go back in time; the stream ends with `end`.
fn check_stream(lines: &[Value]) {
    assert_eq!(
        lines.first().map(|v| &v["type"]),
        Some(&Value::from("start"))
    );
    assert_eq!(
        lines.last().map(|v| &v["type"]),
        Some(&Value::from("end")),
        "the stream must end with an end event"
    );
    let times: Vec<f64> = lines.iter().map(|v| num(v, "time")).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1] + 1e-9),
        "event times must not decrease"
    );
}

/// RTTM lines of the --rttm file: (start, end, speaker).
fn rttm_lines(path: &Path) -> Vec<(f64, f64, String)> {
    let text = std::fs::read_to_string(path).expect("the --rttm file exists");
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 10, "RTTM line {line:?}");
            let start: f64 = f[3].parse().expect("RTTM start");
            let dur: f64 = f[4].parse().expect("RTTM duration");
            (start, start + dur, f[7].to_string())
        })
        .collect()
}

/// The server stops 9 s into the conversation and starts again 4 s later, now playing the
/// conversation's next 18 s: the loss and the return are reported, the labels before the loss are
/// kept, the gap is silence in stream time, and the speakers after the gap keep their labels (one
/// speaker mapping across both parts), exit 0.
#[test]
fn device_comes_back_and_labels_continue_after_the_gap() {
    comes_back("device-returns", TestMic::unplug);
}

/// The same when the sound server is killed (SIGKILL) instead of stopped: the stream it served can
/// no longer even be closed (its thread blocks in the ALSA pulse plugin); whospoke leaves it and
/// opens a new one.
#[test]
fn device_comes_back_after_its_sound_server_crashed() {
    comes_back("device-crash", TestMic::crash);
}

fn comes_back(tag: &str, pull_the_plug: fn(&TestMic)) {
    let t = TempDir::new(tag);
    let part_a = t.path("a.wav");
    let part_b = t.path("b.wav");
    let demo = repo().join("assets/demo/demo.flac");
    cut(&demo, 12.0, &part_a);
    let st = Command::new("sox")
        .arg(&demo)
        .arg(&part_b)
        .args(["trim", "12", "18"])
        .status()
        .expect("sox");
    assert!(st.success());
    let mic = TestMic::start(&part_a);
    let rttm = t.path("live.rttm");
    let mut run = Run::start(&mic, &rttm, "60");

    // Wait until labels are coming (a final turn), then pull the plug.
    assert!(
        run.wait_for(Duration::from_secs(30), |v| v["type"] == "turn"
            && v["status"] == "final"),
        "no final turn before the device was unplugged"
    );
    std::thread::sleep(Duration::from_secs(3));
    pull_the_plug(&mic);
    assert!(
        run.wait_for(Duration::from_secs(20), |v| v["type"] == "device"),
        "the loss was not reported"
    );
    std::thread::sleep(Duration::from_secs(4));
    mic.replug(Some(&part_b));
    assert!(
        run.wait_for(Duration::from_secs(30), |v| v["type"] == "device"
            && v["state"] == "resumed"),
        "the device's return was not reported"
    );
    let gap_end = {
        let r = run.seen.last().expect("resumed event");
        num(r, "gap_start") + num(r, "gap")
    };
    // Let part B play to its end, then stop as a user would.
    assert!(
        run.wait_for(Duration::from_secs(60), |v| num(v, "time")
            >= gap_end + 19.0),
        "stream time did not reach the end of the second part"
    );
    run.interrupt();
    let (status, lines, err) = run.finish(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}; stderr:\n{err}");
    check_stream(&lines);

    let lost = device_events(&lines, "lost");
    let resumed = device_events(&lines, "resumed");
    assert_eq!((lost.len(), resumed.len()), (1, 1), "{lost:?} {resumed:?}");
    assert!(device_events(&lines, "gone").is_empty());
    let gap_start = num(lost[0], "gap_start");
    assert_eq!(num(resumed[0], "gap_start"), gap_start);
    let gap = num(resumed[0], "gap");
    // The server was down for 4 s: at least that much stream time is the gap.
    assert!(gap >= 3.5, "gap {gap} s, the device was away for 4 s");
    assert!(
        gap_start > 3.0 && gap_start < 12.0,
        "the loss is inside part A: {gap_start}"
    );
    assert!(err.contains("input device \"testmic\" lost at"), "{err}");

    // Labels: kept before the gap, none inside it, continuing after it.
    let hyp = finals(&lines);
    assert!(
        hyp.iter().filter(|s| s.end <= gap_start + 0.5).count() >= 2,
        "final turns before the loss must be kept: {hyp:?}"
    );
    assert!(
        hyp.iter().any(|s| s.start >= gap_end),
        "final turns after the return: {hyp:?}"
    );
    for s in &hyp {
        assert!(
            s.end <= gap_start + 0.5 || s.start >= gap_end - 0.5,
            "a turn in the gap [{gap_start}, {gap_end}): {s:?}"
        );
    }
    let end = num(lines.last().unwrap(), "time");
    assert!(end >= gap_end + 18.0, "stream end {end}, gap end {gap_end}");
    let speakers = lines.last().unwrap()["speakers"]
        .as_array()
        .expect("speakers")
        .len();
    assert_eq!(speakers, 3, "three people speak: {:?}", lines.last());

    // Against the truth: part A up to the loss at its own times, part B moved to the gap's end.
    let mut reference = demo_reference(0.0, gap_start.min(12.0), 0.0);
    reference.extend(demo_reference(12.0, 30.0, gap_end - 12.0));
    let report = der(reference, hyp.clone());
    assert!(report.der < 0.25, "DER {:.3} (collar 0.25)", report.der);
    assert_eq!(report.count_correct, 1);

    // The --rttm file has the turns of both parts, none in the gap.
    let file = rttm_lines(&rttm);
    assert!(file.iter().any(|l| l.1 <= gap_start + 0.5));
    assert!(file.iter().any(|l| l.0 >= gap_end));
    assert!(file
        .iter()
        .all(|l| l.1 <= gap_start + 0.5 || l.0 >= gap_end - 0.5));
    drop(mic);
}

/// The server stops and never starts again: after `--reopen-timeout 2` whospoke finalises every
/// turn, flushes the JSONL (`device` gone, then `end`) and the --rttm file, and exits 1 with one
/// error line naming the device, where it was lost and for how long it was retried.
#[test]
fn device_that_never_returns_ends_with_an_error_and_flushed_outputs() {
    let t = TempDir::new("device-gone");
    let clip = t.path("a.wav");
    cut(&repo().join("assets/demo/demo.flac"), 12.0, &clip);
    let mic = TestMic::start(&clip);
    let rttm = t.path("live.rttm");
    let mut run = Run::start(&mic, &rttm, "2");
    assert!(
        run.wait_for(Duration::from_secs(30), |v| v["type"] == "speaker"
            && v["speaker"] == "S2"),
        "the second speaker was not found before the device was unplugged"
    );
    mic.unplug();
    let (status, lines, err) = run.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    check_stream(&lines);

    let lost = device_events(&lines, "lost");
    let gone = device_events(&lines, "gone");
    assert_eq!((lost.len(), gone.len()), (1, 1), "{lines:?}");
    assert!(device_events(&lines, "resumed").is_empty());
    let gap_start = num(gone[0], "gap_start");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("whospoke: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    eprintln!("{}", errors[0]);
    let want = format!(
        "input device \"testmic\" lost at {gap_start:.1} s and did not come back within 2 s"
    );
    assert!(errors[0].contains(&want), "{:?} lacks {want:?}", errors[0]);

    // Everything up to the loss is labelled and final, in stdout and in the --rttm file.
    let end = lines.last().unwrap();
    assert_eq!(end["speakers"].as_array().map(Vec::len), Some(2), "{end}");
    let hyp = finals(&lines);
    assert!(hyp.len() >= 3, "{hyp:?}");
    assert!(hyp.iter().all(|s| s.end <= gap_start + 0.5), "{hyp:?}");
    let report = der(demo_reference(0.0, gap_start, 0.0), hyp.clone());
    assert!(report.der < 0.25, "DER {:.3} (collar 0.25)", report.der);
    let file = rttm_lines(&rttm);
    let talk = |segs: &mut dyn Iterator<Item = f64>| segs.sum::<f64>();
    let file_talk = talk(&mut file.iter().map(|l| l.1 - l.0));
    let printed_talk = talk(&mut hyp.iter().map(|s| s.end - s.start));
    assert!(!file.is_empty());
    assert!(
        (file_talk - printed_talk).abs() <= 0.001 * (file.len() as f64 + 1.0),
        "{file_talk} s of speech in the RTTM file, {printed_talk} s printed"
    );
    assert!(!t.path("live.rttm.tmp").exists());
    drop(mic);
}
