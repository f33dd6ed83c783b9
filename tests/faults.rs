//! Fault injection through the `WHOSPOKE_FAULT` test hook (src/fault.rs), on the real binary and real speech:
//! a worker thread that panics, and a stage that stalls so that a live input overflows its ring.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use whospoke::eval::{evaluate_segments, EvalOptions, Rttm, Segment};

const DEADLINE: Duration = Duration::from_secs(60);

fn whospoke() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_whospoke"));
    // One-line panic reports are what users see; RUST_BACKTRACE would bring the default hook back.
    c.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("WHOSPOKE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

fn wait_until(child: &mut Child, deadline: Instant, what: &str) -> ExitStatus {
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running at its deadline: killed (hang)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every stdout line is one complete JSON object (the last one included).
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    assert!(
        out.is_empty() || out.ends_with('\n'),
        "stdout ends inside a line: {:?}",
        &out[out.len().saturating_sub(200)..]
    );
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

/// Talk time per speaker in an RTTM file, checking that every line is a valid 10-field SPEAKER line.
fn rttm_talk(path: &Path) -> (BTreeMap<String, f64>, usize) {
    let text = std::fs::read_to_string(path).expect("the RTTM file exists");
    let mut talk: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 10, "RTTM line {line:?}");
        assert_eq!(f[0], "SPEAKER", "RTTM line {line:?}");
        let start: f64 = f[3].parse().expect("RTTM start");
        let dur: f64 = f[4].parse().expect("RTTM duration");
        assert!(start >= 0.0 && dur > 0.0, "RTTM line {line:?}");
        *talk.entry(f[7].to_string()).or_default() += dur;
        n += 1;
    }
    (talk, n)
}

/// A worker thread panics mid-stream (turn stage, at 40 s of the 66.8 s demo): whospoke reports it in one
/// `whospoke: error:` line naming the thread, prints the panic itself in one line (no backtrace), exits 1, and
/// leaves complete outputs: stdout holds whole JSON lines only, and the `--rttm` file is valid and holds every
/// turn that became final before the panic (the same talk time per speaker as the final turns printed).
#[test]
fn worker_panic_is_reported_and_outputs_are_flushed() {
    let out = panic_run("turns");
    assert!(
        !out.iter().any(|v| v["type"] == "end"),
        "no `end` after the turn stage died"
    );
}

/// The same with the VAD stage panicking: the stages after it see their input end (a ring whose producer is
/// gone ends like a closed one) instead of waiting forever, finalise what they have, and the run still exits 1
/// with the panic reported.
#[test]
fn vad_panic_does_not_hang_the_pipeline() {
    let out = panic_run("vad");
    assert_eq!(out.last().map(|v| v["type"].clone()), Some("end".into()));
}

/// Runs the demo with a panic injected in `stage` at 40 s and checks what both cases share; returns the JSONL.
fn panic_run(stage: &str) -> Vec<serde_json::Value> {
    let t = TempDir::new(&format!("fault-panic-{stage}"));
    let rttm = t.path("out.rttm");
    let started = Instant::now();
    let mut child = whospoke()
        .env("WHOSPOKE_FAULT", format!("panic:{stage}@40"))
        .arg(repo().join("assets/demo/demo.flac"))
        .args(["--no-tui", "--format", "jsonl", "--rttm"])
        .arg(&rttm)
        .spawn()
        .expect("start whospoke");
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let status = wait_until(&mut child, started + DEADLINE, &format!("panic in {stage}"));
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let ctx = format!("{status:?}\nstderr:\n{err}");

    assert_eq!(status.code(), Some(1), "exit status: {ctx}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("whospoke: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {ctx}");
    assert!(
        errors[0].contains(&format!("{stage} thread panicked"))
            && errors[0].contains("injected fault"),
        "the error names the thread and the cause: {ctx}"
    );
    let panic_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("whospoke: the {stage} thread panicked at ")))
        .collect();
    assert_eq!(panic_lines.len(), 1, "the panic in one line: {ctx}");
    for spam in ["stack backtrace", "RUST_BACKTRACE", "thread '", "note: "] {
        assert!(!err.contains(spam), "raw panic output ({spam:?}): {ctx}");
    }

    let lines = json_lines(&out);
    assert_eq!(
        lines.first().map(|v| v["type"].clone()),
        Some("start".into())
    );
    let finals = final_turns(&out, "demo");
    let finals = &finals["demo"];
    assert!(finals.len() >= 5, "turns before the panic are final: {out}");
    let last = finals.iter().map(|s| s.end).fold(0.0, f64::max);
    assert!(
        last <= 40.5,
        "a turn ending at {last} s became final after the panic at 40 s"
    );
    assert!(
        last >= 25.0,
        "final turns stop at {last} s, long before the panic"
    );

    let (from_file, n) = rttm_talk(&rttm);
    assert!(n >= 1, "the RTTM file is empty");
    let mut printed: BTreeMap<String, f64> = BTreeMap::new();
    for s in finals {
        *printed.entry(s.speaker.clone()).or_default() += s.end - s.start;
    }
    assert_eq!(
        from_file.keys().collect::<Vec<_>>(),
        printed.keys().collect::<Vec<_>>(),
        "speakers in the RTTM file vs the final turns printed"
    );
    for (spk, secs) in &printed {
        let f = from_file[spk];
        assert!(
            (f - secs).abs() <= 0.001 * n as f64 + 0.01,
            "{spk}: {f} s in the RTTM file, {secs} s in the final turns printed"
        );
    }
    assert!(
        !t.path("out.rttm.tmp").exists(),
        "the temporary RTTM file was left behind"
    );
    lines
}

fn window(segs: &[Segment], from: f64, to: f64, uri: &str) -> Rttm {
    let mut out = Vec::new();
    for s in segs {
        let (a, b) = (s.start.max(from), s.end.min(to));
        if b > a {
            out.push(Segment::new(a, b, s.speaker.clone()));
        }
    }
    let mut m = BTreeMap::new();
    m.insert(uri.to_string(), out);
    m
}

const CLIP: f64 = 60.0;
/// The VAD stage stalls at this stream time...
const STALL_AT: f64 = 8.0;
/// ...for this long: longer than the input buffers hold (the device's ring and ring A, 4 s each), so the
/// device callback has to drop audio (about 12 s).
const STALL_MS: u64 = 20_000;

/// Overload on a live input: the test microphone plays 60 s of real speech in real time while the VAD stage
/// stalls for 20 s, longer than the input rings hold. The device callback never blocks: the audio that does not fit is
/// dropped and reported (`dropped` events, `status` and `end` counters); the lost time is kept as silence at the
/// place it was lost, so stream time stays on the audio clock: the labels of the backlog and of the audio after
/// the gap match the reference at the same times (DER), and `end` covers the whole play time. Labels resume
/// after the gap and the process runs on until stopped (exit 0).
#[test]
fn overload_drops_are_reported_and_time_stays_true() {
    let t = TempDir::new("fault-overload");
    let clip = t.path("clip.wav");
    cut(&repo().join("assets/demo/demo.flac"), CLIP, &clip);
    let mic = TestMic::start(&clip);
    let mut cmd = whospoke();
    cmd.env("WHOSPOKE_FAULT", format!("stall:vad:{STALL_MS}@{STALL_AT}"))
        .args(["--device", "testmic", "--format", "jsonl", "--no-tui"]);
    for (k, v) in &mic.env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start whospoke");
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    // Let the clip play to its end (the device starts 0.5-2 s after opening), then stop like Ctrl-C.
    std::thread::sleep(Duration::from_secs_f64(CLIP + 4.0));
    let stopped_at = started.elapsed().as_secs_f64();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = wait_until(&mut child, Instant::now() + DEADLINE, "overload");
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let ctx = format!("{status:?}\nstderr:\n{err}");
    assert!(status.success(), "exit: {ctx}");
    assert!(!err.contains("panicked"), "{ctx}");

    let lines = json_lines(&out);
    let end = lines.last().expect("output");
    assert_eq!(end["type"], "end", "{ctx}");
    let rate = lines[0]["sample_rate"]
        .as_f64()
        .expect("start: sample_rate");

    // Drops are reported, with stream times after the stall began.
    let drops: Vec<&serde_json::Value> = lines.iter().filter(|v| v["type"] == "dropped").collect();
    assert!(!drops.is_empty(), "no `dropped` event: {ctx}");
    let total = drops.last().unwrap()["total"].as_u64().unwrap();
    let lost_s = total as f64 / rate;
    assert!(
        lost_s >= 2.0,
        "only {lost_s:.2} s dropped: the stall did not overflow the ring"
    );
    for d in &drops {
        assert!(d["time"].as_f64().unwrap() >= STALL_AT, "{d}");
        assert!(d["samples"].as_u64().unwrap() > 0, "{d}");
    }
    assert_eq!(end["dropped_samples"].as_u64(), Some(total), "{end}");
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "status" && v["dropped_samples"].as_u64() == Some(total)),
        "no status event reports the dropped samples"
    );

    // Stream time = audio clock: `end` covers the whole clip, the dropped audio included (without it, it would
    // fall short by `lost_s`), and not more than the wall clock (after the clip the test microphone delivers
    // nothing and the microphone thread fills the outage with silence up to the wall clock).
    let stream_end = end["time"].as_f64().unwrap();
    assert!(
        stream_end >= CLIP - 0.5 && stream_end <= stopped_at + 0.5,
        "stream time at the end {stream_end:.2} s for {CLIP} s of audio ({lost_s:.2} s of it dropped), \
         stopped after {stopped_at:.2} s"
    );

    // Labels: the dropped stretch is the audio from about STALL_AT + 8 s on; the backlog before it and the
    // audio after it must be labelled at their true times (DER against the reference at the same times).
    let gap_at = drops[0]["time"].as_f64().unwrap();
    let reference = reference(&repo().join("assets/demo/demo.rttm"), CLIP, "mic")["mic"].clone();
    let hyp = final_turns(&out, "mic");
    let hyp_segs = &hyp["mic"];
    let opts = EvalOptions {
        collar: 0.5,
        ..Default::default()
    };
    // Live audio starts a little after the stream does (device start-up): allow the best shift up to 2.5 s.
    let der = |from: f64, to: f64| {
        (0..=25)
            .map(|k| {
                let shift = k as f64 * 0.1;
                let shifted: Vec<Segment> = hyp_segs
                    .iter()
                    .map(|s| Segment::new(s.start - shift, s.end - shift, s.speaker.clone()))
                    .collect();
                let r = evaluate_segments(
                    &window(&reference, from, to, "mic"),
                    &window(&shifted, from, to, "mic"),
                    &opts,
                );
                r.der
            })
            .fold(f64::INFINITY, f64::min)
    };
    let backlog = der(STALL_AT + 1.0, gap_at - 1.0);
    let after = der(gap_at + lost_s + 3.0, CLIP - 1.0);
    eprintln!("dropped {lost_s:.2} s at {gap_at:.2} s; DER backlog {backlog:.3}, after the gap {after:.3}");
    assert!(
        backlog < 0.25,
        "backlog labelled at the wrong times: DER {backlog:.3}"
    );
    assert!(
        after < 0.25,
        "labels after the gap at the wrong times: DER {after:.3}"
    );
    let last_final = hyp_segs.iter().map(|s| s.end).fold(0.0, f64::max);
    assert!(
        last_final > gap_at + lost_s + 10.0,
        "labels did not resume after the gap (last final turn ends at {last_final:.1} s)"
    );
}
