//! Helpers shared by the end-to-end tests: the file-backed test microphone and reference RTTMs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use whospoke::eval::{Rttm, Segment};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the whospoke binary on `audio` with `args`, asserts it succeeded (its stderr otherwise) and
/// returns its stdout.
pub fn run_on(audio: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_whospoke"))
        .arg(audio)
        .args(args)
        .output()
        .expect("run whospoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A private scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after the test binary's process and `tag`.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("whospoke-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running file-backed microphone (scripts/testmic.sh); stopped on drop.
pub struct TestMic {
    pub env: Vec<(String, String)>,
    dir: String,
}

impl TestMic {
    /// Starts the test microphone playing `audio` in real time.
    pub fn start(audio: &Path) -> TestMic {
        let out = Command::new("bash")
            .arg(repo().join("scripts/testmic.sh"))
            .arg("start")
            .arg(audio)
            .output()
            .expect("run scripts/testmic.sh");
        assert!(
            out.status.success(),
            "testmic start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut env = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(rest) = line.strip_prefix("export ") else {
                continue;
            };
            if let Some((k, v)) = rest.split_once('=') {
                let v = v.trim_matches(|c| c == '\'' || c == '"');
                env.push((k.to_string(), v.to_string()));
            }
        }
        let dir = env
            .iter()
            .find(|(k, _)| k == "TESTMIC_DIR")
            .map(|(_, v)| v.clone())
            .expect("TESTMIC_DIR in testmic output");
        TestMic { env, dir }
    }
}

impl TestMic {
    /// Makes the device disappear: its sound server stops (scripts/testmic.sh unplug).
    pub fn unplug(&self) {
        self.script(&["unplug", &self.dir]);
    }

    /// Makes the device disappear the hard way: its sound server is killed (SIGKILL).
    pub fn crash(&self) {
        self.script(&["crash", &self.dir]);
    }

    /// Brings the device back (the sound server starts again); it then plays `audio` (converted to
    /// the device's format) from its beginning, or the same file again if None.
    pub fn replug(&self, audio: Option<&Path>) {
        let mut args = vec!["replug".to_string(), self.dir.clone()];
        if let Some(a) = audio {
            args.push(a.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.script(&args);
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(repo().join("scripts/testmic.sh"))
            .args(args)
            .output()
            .expect("run scripts/testmic.sh");
        assert!(
            out.status.success(),
            "testmic {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestMic {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/testmic.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// Cuts `audio` to [0, seconds) into a temporary WAV with sox.
pub fn cut(audio: &Path, seconds: f64, out: &Path) {
    let st = Command::new("sox")
        .arg(audio)
        .arg(out)
        .args(["trim", "0", &seconds.to_string()])
        .status()
        .expect("sox");
    assert!(st.success());
}

/// Reference segments of `rttm` clipped to [0, until), under uri `uri`.
pub fn reference(rttm: &Path, until: f64, uri: &str) -> Rttm {
    let all = whospoke::eval::read_rttm(rttm).expect("reference rttm");
    let mut segs = Vec::new();
    for s in all.values().flatten() {
        if s.start < until {
            segs.push(Segment::new(s.start, s.end.min(until), s.speaker.clone()));
        }
    }
    let mut m = BTreeMap::new();
    m.insert(uri.to_string(), segs);
    m
}

/// Final turns from JSONL output as an RTTM map under `uri`, with the labels of any later `relabel`
/// of a final turn (the second pass, on with `--rttm`) applied, as the `--rttm` file has them.
pub fn final_turns(jsonl: &str, uri: &str) -> Rttm {
    let mut segs: Vec<(u64, Segment)> = Vec::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("each stdout line is JSON");
        if v["type"] == "turn" && v["status"] == "final" {
            segs.push((
                v["id"].as_u64().unwrap(),
                Segment::new(
                    v["start"].as_f64().unwrap(),
                    v["end"].as_f64().unwrap(),
                    v["speaker"].as_str().unwrap(),
                ),
            ));
        } else if v["type"] == "relabel" {
            for (_, s) in segs.iter_mut().filter(|(id, _)| v["id"] == *id) {
                s.speaker = v["to"].as_str().unwrap().to_string();
            }
        }
    }
    let segs: Vec<Segment> = segs.into_iter().map(|(_, s)| s).collect();
    let mut m = BTreeMap::new();
    m.insert(uri.to_string(), segs);
    m
}

/// Runs whospoke (JSONL, no dashboard, no profiles, plus `extra`) on `wav`, a cut of the dev-set
/// recording `uri` to its first `seconds`, and scores its final turns against that recording's
/// reference cut the same way (no collar).
pub fn score_cut(wav: &Path, uri: &str, seconds: f64, extra: &[&str]) -> whospoke::eval::FileScore {
    let dev = repo().join("../shared/eval/dev");
    let mut args = vec!["--no-tui", "--no-profiles", "--format", "jsonl"];
    args.extend_from_slice(extra);
    let jsonl = run_on(wav, &args);
    let hyp = final_turns(&jsonl, uri);
    let reference = reference(&dev.join(format!("{uri}.rttm")), seconds, uri);
    let r = whospoke::eval::evaluate_segments(
        &reference,
        &hyp,
        &whospoke::eval::EvalOptions::default(),
    );
    r.files.into_iter().next().expect("one file scored")
}
