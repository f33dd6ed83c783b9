//! Short soak (the long one is scripts/soak.sh, docs/reliability.md): 20 minutes of real speech (the demo
//! conversation 18 times in a row) streamed through stdin faster than real time. Memory stays flat, the labels of
//! the last copy are as good as those of the first, final turns reach the end, and the label lag does not grow.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use whospoke::eval::{evaluate_segments, EvalOptions, Segment};

const COPIES: usize = 18;
const DEADLINE: Duration = Duration::from_secs(600);

fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn twenty_minutes_faster_than_real_time_stay_flat_and_correct() {
    let t = TempDir::new("soak");
    let raw = t.path("demo.raw");
    let st = Command::new("sox")
        .arg(repo().join("assets/demo/demo.flac"))
        .args([
            "-t",
            "raw",
            "-r",
            "16000",
            "-c",
            "1",
            "-e",
            "signed-integer",
            "-b",
            "16",
        ])
        .arg(&raw)
        .status()
        .expect("sox");
    assert!(st.success());
    let one = std::fs::read(&raw).expect("raw demo");
    let copy_s = (one.len() / 2) as f64 / 16000.0;
    let total_s = copy_s * COPIES as f64;

    let mut child = Command::new(env!("CARGO_BIN_EXE_whospoke"))
        .args(["-", "--rate", "16000", "--format", "jsonl", "--no-tui"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start whospoke");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for _ in 0..COPIES {
            if stdin.write_all(&one).is_err() {
                break;
            }
        }
    });
    let now = Arc::new(AtomicU64::new(0));
    let now2 = now.clone();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("stdout line");
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            if let Some(t) = v["time"].as_f64() {
                now2.store(t.to_bits(), Ordering::Relaxed);
            }
            lines.push(v);
        }
        lines
    });
    let stderr = child.stderr.take().expect("stderr");
    let err_reader =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    // RSS against stream time while it runs.
    let started = Instant::now();
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if let Some(m) = rss_mb(pid) {
            rss.push((f64::from_bits(now.load(Ordering::Relaxed)), m));
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    feeder.join().expect("feeder");
    let lines = reader.join().expect("reader");
    let err = err_reader.join().expect("stderr reader");
    assert!(status.success(), "exit {status:?}: {err}");

    let end = lines.last().expect("output");
    assert_eq!(end["type"], "end");
    let end_at = end["time"].as_f64().unwrap();
    assert!(
        (end_at - total_s).abs() < 0.05,
        "end at {end_at} s for {total_s} s of audio"
    );
    assert_eq!(end["dropped_samples"], 0, "a file source never drops");

    // Memory: after the first quarter (models loaded, buffers at size), the peak does not grow.
    let peak = |from: f64, to: f64| {
        rss.iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, m)| *m)
            .fold(f64::NAN, f64::max)
    };
    let (early, late) = (
        peak(total_s / 4.0, total_s / 2.0),
        peak(total_s / 2.0, total_s + 1.0),
    );
    eprintln!(
        "RSS: {} samples, peak {early:.1} MB in the second quarter, {late:.1} MB in the second half",
        rss.len()
    );
    assert!(
        early.is_finite() && late.is_finite(),
        "too few RSS samples: {rss:?}"
    );
    assert!(
        late - early < 16.0,
        "memory grows: {early:.1} MB -> {late:.1} MB"
    );

    // Labels: DER of each copy (its final turns shifted to 0) against the demo reference.
    let mut finals = Vec::new();
    for v in &lines {
        if v["type"] == "turn" && v["status"] == "final" {
            finals.push(Segment::new(
                v["start"].as_f64().unwrap(),
                v["end"].as_f64().unwrap(),
                v["speaker"].as_str().unwrap(),
            ));
        }
    }
    let reference = reference(&repo().join("assets/demo/demo.rttm"), copy_s, "demo");
    let opts = EvalOptions {
        collar: 0.25,
        ..Default::default()
    };
    let der_of = |k: usize| {
        let off = k as f64 * copy_s;
        let part: Vec<Segment> = finals
            .iter()
            .filter_map(|s| {
                let (a, b) = (s.start.max(off), s.end.min(off + copy_s));
                (b > a).then(|| Segment::new(a - off, b - off, s.speaker.clone()))
            })
            .collect();
        let mut hyp = BTreeMap::new();
        hyp.insert("demo".to_string(), part);
        evaluate_segments(&reference, &hyp, &opts).der
    };
    let ders: Vec<f64> = (0..COPIES).map(der_of).collect();
    eprintln!("DER per copy: {ders:.3?}");
    assert!(ders[0] < 0.10, "first copy DER {:.3}", ders[0]);
    assert!(
        ders[COPIES - 1] <= ders[0] + 0.02,
        "DER of the last copy {:.3} worse than the first {:.3}",
        ders[COPIES - 1],
        ders[0]
    );

    // Final turns reach the end: the last reference turn of the last copy is labelled.
    let last_ref = reference["demo"].iter().map(|s| s.end).fold(0.0, f64::max);
    let last_final = finals.iter().map(|s| s.end).fold(0.0, f64::max);
    assert!(
        last_final >= total_s - copy_s + last_ref - 1.0,
        "final turns stop at {last_final:.1} s of {total_s:.1} s"
    );

    // Label lag (stream seconds) in the last tenth no larger than in the first tenth.
    let lag_in = |from: f64, to: f64| {
        median(
            lines
                .iter()
                .filter(|v| v["type"] == "status")
                .filter(|v| (from..to).contains(&v["time"].as_f64().unwrap()))
                .map(|v| v["label_lag"].as_f64().unwrap())
                .collect(),
        )
    };
    let (first, last) = (
        lag_in(copy_s / 2.0, total_s / 10.0),
        lag_in(total_s * 0.9, total_s),
    );
    eprintln!("label lag median: {first:.2} s in the first tenth, {last:.2} s in the last");
    assert!(
        last <= first + 0.5,
        "label lag grows: {first:.2} s -> {last:.2} s"
    );
}
