//! SIGTERM, SIGHUP and SIGINT during a `--realtime` run of the demo with `--rttm FILE --format jsonl`: the process
//! finalises and flushes, then exits 0 within a few seconds. Issue 6, "Environment" and "Nothing lost";
//! docs/reliability.md.

#![cfg(target_os = "linux")]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_whospoke");

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

fn interrupted_run(signal: i32, tag: &str) {
    let dir = std::env::temp_dir().join(format!("whospoke-signals-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rttm: PathBuf = dir.join("out.rttm");
    let demo = format!("{ROOT}/assets/demo/demo.flac");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["--no-tui", "--realtime", "--format", "jsonl", "--rttm"])
        .arg(&rttm)
        .arg(&demo)
        .env_remove("WHOSPOKE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn whospoke");
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        child.try_wait().unwrap().is_none(),
        "whospoke ended before the signal"
    );
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill failed");
    let sent = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tag}: still running 30 s after the signal: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let ctx = format!(
        "{tag}: exit {status:?} {took:?} after the signal ({:?} in all)\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{ctx}");
    assert!(took < Duration::from_secs(5), "{ctx}");
    assert!(!stderr.contains("panicked"), "{ctx}");

    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}\n{ctx}")))
        .collect();
    let last = events.last().expect("no output");
    assert_eq!(last["type"], "end", "{ctx}");
    let end_time = last["time"].as_f64().unwrap();
    assert!(
        (5.0..30.0).contains(&end_time),
        "stopped at {end_time} s of audio after ~8 s of real time\n{ctx}"
    );

    // Every turn id is finalised, or retired by a relabel after its last tentative line.
    let mut ids: Vec<u64> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if e["type"] != "turn" {
            continue;
        }
        let id = e["id"].as_u64().unwrap();
        if ids.contains(&id) {
            continue;
        }
        ids.push(id);
        let later = &events[i..];
        let last_line = later
            .iter()
            .rposition(|x| x["type"] == "turn" && x["id"] == id)
            .unwrap();
        let finalised = later
            .iter()
            .any(|x| x["type"] == "turn" && x["id"] == id && x["status"] == "final");
        let retired = later[last_line..]
            .iter()
            .any(|x| x["type"] == "relabel" && x["id"] == id);
        assert!(finalised || retired, "turn {id} was left tentative\n{ctx}");
    }
    let finals: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "turn" && e["status"] == "final")
        .collect();
    assert!(
        !finals.is_empty(),
        "no final turn in 8 s of the demo\n{ctx}"
    );

    // The RTTM file: 10 fields a line, sorted by start, exactly the final turns printed.
    let text = std::fs::read_to_string(&rttm).unwrap_or_else(|e| panic!("{rttm:?}: {e}\n{ctx}"));
    let mut starts = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 10, "bad RTTM line {line:?}");
        assert_eq!(f[0], "SPEAKER");
        assert_eq!(f[1], "demo");
        let s: f64 = f[3].parse().unwrap();
        let d: f64 = f[4].parse().unwrap();
        assert!(s >= 0.0 && d >= 0.0, "{line}");
        starts.push(s);
        rows.push(format!("{} {} {}", f[3], f[4], f[7]));
    }
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "RTTM not sorted:\n{text}"
    );
    // The file holds the printed final turns, with consecutive pieces of one speaker's long turn
    // (finalised piece by piece) joined into one line, and the speaker of any later `relabel` of a
    // final turn (the second pass).
    let mut printed: Vec<(f64, f64, String)> = finals
        .iter()
        .map(|t| {
            let speaker = events
                .iter()
                .skip_while(|e| *e != *t)
                .filter(|e| e["type"] == "relabel" && e["id"] == t["id"])
                .last()
                .map_or(&t["speaker"], |e| &e["to"]);
            (
                t["start"].as_f64().unwrap(),
                t["end"].as_f64().unwrap(),
                speaker.as_str().unwrap().to_string(),
            )
        })
        .collect();
    printed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut joined: Vec<(f64, f64, String)> = Vec::new();
    for (s, e, spk) in printed {
        match joined
            .iter_mut()
            .rev()
            .take(4)
            .find(|m| m.2 == spk && (s - m.1).abs() < 1e-6)
        {
            Some(m) => m.1 = m.1.max(e),
            None => joined.push((s, e, spk)),
        }
    }
    let mut expected: Vec<String> = joined
        .iter()
        .map(|(s, e, spk)| format!("{s:.3} {:.3} {spk}", (e - s).max(0.0)))
        .collect();
    rows.sort();
    expected.sort();
    assert_eq!(
        rows, expected,
        "RTTM differs from the final turns printed\n{ctx}"
    );
    assert!(
        !dir.join("out.rttm.tmp").exists(),
        "temporary RTTM file left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_finalises_and_flushes() {
    interrupted_run(libc::SIGTERM, "term");
}

#[test]
fn sighup_finalises_and_flushes() {
    interrupted_run(libc::SIGHUP, "hup");
}

#[test]
fn sigint_finalises_and_flushes() {
    interrupted_run(libc::SIGINT, "int");
}

/// SIGKILL (no chance to finalise): the `--rttm` file is still valid and holds every turn that was
/// printed as final at least half a second before the kill (turns are appended as whole lines, one
/// write each), and nothing that was not printed as final.
#[test]
fn sigkill_leaves_a_valid_rttm_with_the_final_turns() {
    let dir = std::env::temp_dir().join(format!("whospoke-signals-{}-kill", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rttm: PathBuf = dir.join("out.rttm");
    let mut child = Command::new(BIN)
        .args(["--no-tui", "--realtime", "--format", "jsonl", "--rttm"])
        .arg(&rttm)
        .arg(format!("{ROOT}/assets/demo/demo.flac"))
        .env_remove("WHOSPOKE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn whospoke");
    // Read stdout line by line with arrival times, kill at 15 s.
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            lines.push((Instant::now(), l));
        }
        lines
    });
    std::thread::sleep(Duration::from_secs(15));
    assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
    let killed_at = Instant::now();
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "not killed by a signal: {status:?}");
    let lines = reader.join().unwrap();
    let key = |spk: &str, s: f64, e: f64| (spk.to_string(), s, e);
    let same = |a: &(String, f64, f64), b: &(String, f64, f64)| {
        a.0 == b.0 && (a.1 - b.1).abs() < 0.002 && (a.2 - b.2).abs() < 0.002
    };
    let mut printed = Vec::new();
    let mut printed_early = Vec::new();
    for (at, l) in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["type"] == "turn" && v["status"] == "final" {
            let k = key(
                v["speaker"].as_str().unwrap(),
                v["start"].as_f64().unwrap(),
                v["end"].as_f64().unwrap(),
            );
            if killed_at.duration_since(*at) >= Duration::from_millis(500) {
                printed_early.push(k.clone());
            }
            printed.push(k);
        }
    }
    assert!(
        printed_early.len() >= 3,
        "too few final turns before the kill: {printed_early:?}"
    );
    let text = std::fs::read_to_string(&rttm).expect("RTTM exists after SIGKILL");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "partial last line: {text:?}"
    );
    let mut in_file = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() == 10 && f[0] == "SPEAKER", "bad RTTM line {l:?}");
        let s: f64 = f[3].parse().unwrap();
        let d: f64 = f[4].parse().unwrap();
        in_file.push(key(f[7], s, s + d));
    }
    for k in &printed_early {
        assert!(
            in_file.iter().any(|f| same(f, k)),
            "final turn {k:?} missing from the RTTM:\n{text}"
        );
    }
    for k in &in_file {
        assert!(
            printed.iter().any(|p| same(p, k)),
            "RTTM turn {k:?} was never printed as final"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
