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

/// `audio` as 16 kHz mono s16le (sox), written to `raw` and returned.
fn raw_16k(audio: &std::path::Path, raw: &std::path::Path) -> Vec<u8> {
    let st = Command::new("sox")
        .arg(audio)
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
        .arg(raw)
        .status()
        .expect("sox");
    assert!(st.success(), "sox failed on {}", audio.display());
    std::fs::read(raw).expect("raw audio")
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
    let one = raw_16k(&repo().join("assets/demo/demo.flac"), &raw);
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

/// One voice for an hour (issue 6, "bad input": a single speaker for an hour): the speech of one
/// dev-set speaker (ls3331 in dev_05, without the stretches where anyone else talks) repeated to
/// an hour and streamed through stdin. The correct result: one speaker, labelled to the end.
#[test]
fn a_single_speaker_for_an_hour_is_one_speaker_throughout() {
    const HOUR: f64 = 3600.0;
    let dev = repo().join("../shared/eval/dev");
    let t = TempDir::new("one-voice");
    let raw = t.path("dev05.raw");
    let pcm = raw_16k(&dev.join("dev_05.wav"), &raw);
    // ls3331's turns minus every stretch where another speaker talks.
    let rttm = std::fs::read_to_string(dev.join("dev_05.rttm")).expect("reference");
    let mut mine = Vec::new();
    let mut others = Vec::new();
    for l in rttm.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (s, d): (f64, f64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        if f[7] == "ls3331" {
            mine.push((s, s + d));
        } else {
            others.push((s, s + d));
        }
    }
    let mut voice: Vec<u8> = Vec::new();
    for &(s, e) in &mine {
        let mut pieces = vec![(s, e)];
        for &(os, oe) in &others {
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| {
                    if oe <= a || os >= b {
                        vec![(a, b)]
                    } else {
                        [(a, os), (oe, b)]
                            .into_iter()
                            .filter(|p| p.1 - p.0 > 0.3)
                            .collect()
                    }
                })
                .collect();
        }
        for (a, b) in pieces {
            let (i, j) = ((a * 16000.0) as usize * 2, (b * 16000.0) as usize * 2);
            voice.extend_from_slice(&pcm[i.min(pcm.len())..j.min(pcm.len())]);
        }
    }
    let voice_s = (voice.len() / 2) as f64 / 16000.0;
    assert!(voice_s > 60.0, "only {voice_s:.1} s of the voice");
    let copies = (HOUR / voice_s).ceil() as usize;
    let total_s = voice_s * copies as f64;

    let mut child = Command::new(env!("CARGO_BIN_EXE_whospoke"))
        .args(["-", "--rate", "16000", "--format", "jsonl", "--no-tui"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn whospoke");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for _ in 0..copies {
            if stdin.write_all(&voice).is_err() {
                break;
            }
        }
    });
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut speakers = Vec::new();
    let mut labelled = 0.0;
    let mut last_final_end = 0.0f64;
    let mut end_time = None;
    for line in out.lines().map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        match v["type"].as_str() {
            Some("turn") if v["status"] == "final" => {
                let (s, e) = (v["start"].as_f64().unwrap(), v["end"].as_f64().unwrap());
                labelled += e - s;
                last_final_end = last_final_end.max(e);
            }
            Some("end") => {
                end_time = v["time"].as_f64();
                speakers = v["speakers"].as_array().unwrap().clone();
            }
            _ => {}
        }
    }
    feeder.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let end_time = end_time.expect("an end event");
    assert!(
        (end_time - total_s).abs() < 0.05,
        "end {end_time} vs {total_s}"
    );
    assert_eq!(speakers.len(), 1, "speakers: {speakers:?}");
    assert!(
        last_final_end > total_s - 2.0,
        "labels stop at {last_final_end}"
    );
    // The clip is all speech (short pauses between the cut pieces aside).
    assert!(
        labelled > 0.85 * total_s,
        "only {labelled:.0} s of {total_s:.0} s labelled"
    );
}
