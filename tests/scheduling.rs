//! The two models run on two threads (segmentation_thread, analysis_thread). The labels must not
//! depend on how the OS schedules them: the same file gives the same events whether the
//! segmentation thread runs far ahead of the embedding thread or not. The `WHOSPOKE_FAULT` hook
//! (src/fault.rs) slows one stage to force each ordering; latency 0.5 s is where a timing race would
//! show (segmentation results due after the tick would otherwise have been finalised).

use std::path::PathBuf;
use std::process::Command;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/demo.flac")
}

/// The run's events without what legitimately varies from run to run: `status` (its `load` is
/// measured processing time) and each turn's `delay` (wall clock).
fn events(fault: Option<&str>, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whospoke"));
    cmd.arg(demo())
        .args(["--format", "jsonl", "--no-tui"])
        .args(extra);
    match fault {
        Some(f) => cmd.env("WHOSPOKE_FAULT", f),
        None => cmd.env_remove("WHOSPOKE_FAULT"),
    };
    let out = cmd.output().expect("run whospoke");
    assert!(
        out.status.success(),
        "whospoke failed ({fault:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v["type"] != "status")
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("delay");
            }
            v
        })
        .collect()
}

fn assert_same(a: &[serde_json::Value], b: &[serde_json::Value], what: &str) {
    let first_diff = a.iter().zip(b).position(|(x, y)| x != y);
    assert!(
        a.len() == b.len() && first_diff.is_none(),
        "{what}: {} vs {} events; first difference at {first_diff:?}: {:?} vs {:?}",
        a.len(),
        b.len(),
        first_diff.map(|i| &a[i]),
        first_diff.map(|i| &b[i]),
    );
}

#[test]
fn labels_do_not_depend_on_thread_scheduling() {
    let opts = ["--latency", "0.5"];
    let normal = events(None, &opts);
    let finals = normal
        .iter()
        .filter(|v| v["type"] == "turn" && v["status"] == "final")
        .count();
    assert!(finals >= 10, "too few final turns to compare: {finals}");
    // Embedding thread slowed: the segmentation thread runs up to a ring (20 s) ahead of it.
    let seg_ahead = events(Some("slow:analysis:4@0-70"), &opts);
    assert_same(&normal, &seg_ahead, "segmentation ahead of the embeddings");
    // Segmentation thread slowed: the embedding thread waits on it frame by frame.
    let seg_behind = events(Some("slow:segmentation:4@0-70"), &opts);
    assert_same(&normal, &seg_behind, "segmentation just in time");
}

/// The same with `--shared-trunk`: a window waits for its chunk's context at a fixed place in the stream,
/// and chunks batch together only when ready in one pop, which changes no number.
#[test]
fn shared_trunk_labels_do_not_depend_on_thread_scheduling() {
    let opts = ["--latency", "0.5", "--shared-trunk"];
    let normal = events(None, &opts);
    let seg_ahead = events(Some("slow:analysis:4@0-70"), &opts);
    assert_same(&normal, &seg_ahead, "shared trunk, segmentation ahead");
    let seg_behind = events(Some("slow:segmentation:4@0-70"), &opts);
    assert_same(
        &normal,
        &seg_behind,
        "shared trunk, segmentation just in time",
    );
}

/// Windows embedded by the second CAM++ session (`--embed-sessions 2`), from the debug log.
fn by_second_session(stderr: &str) -> Option<u64> {
    // Without the terminal colour codes (ESC [ ... m), which hold digits.
    let mut plain = String::new();
    let mut chars = stderr.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain.find("by_second_session=")? + "by_second_session=".len();
    let digits: String = plain[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Files run ahead of real time, so a second CAM++ session embeds every other window of a backlog
/// (src/embed_worker.rs). Same model, same shape, one window per call: the events must be identical to one
/// session's, with the second session ready early or late, and it must really have embedded windows.
#[test]
fn labels_do_not_depend_on_the_second_embedding_session() {
    let opts = ["--latency", "0.5"];
    let one = events(None, &["--latency", "0.5", "--embed-sessions", "1"]);
    let finals = one
        .iter()
        .filter(|v| v["type"] == "turn" && v["status"] == "final")
        .count();
    assert!(finals >= 10, "too few final turns to compare: {finals}");
    let two = events(None, &["--latency", "0.5", "--embed-sessions", "2"]);
    assert_same(&one, &two, "two embedding sessions");
    // A backlog of windows (the embedding thread slowed): most flushes split between the sessions.
    let backlog = events(
        Some("slow:analysis:4@0-70"),
        &["--latency", "0.5", "--embed-sessions", "2"],
    );
    assert_same(&one, &backlog, "two embedding sessions with a backlog");
    let out = Command::new(env!("CARGO_BIN_EXE_whospoke"))
        .arg(demo())
        .args([
            "--format",
            "jsonl",
            "--no-tui",
            "--embed-sessions",
            "2",
            "-vv",
        ])
        .args(opts)
        .env("WHOSPOKE_FAULT", "slow:analysis:4@0-70")
        .output()
        .expect("run whospoke");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let n =
        by_second_session(&log).unwrap_or_else(|| panic!("no CAM++ calls line in the log:\n{log}"));
    assert!(n > 0, "the second session embedded no window");
}

/// Invalid session counts are refused before anything runs.
#[test]
fn embed_sessions_out_of_range_is_refused() {
    for bad in ["0", "3"] {
        let out = Command::new(env!("CARGO_BIN_EXE_whospoke"))
            .arg(demo())
            .args(["--format", "jsonl", "--no-tui", "--embed-sessions", bad])
            .output()
            .expect("run whospoke");
        assert_eq!(out.status.code(), Some(2), "--embed-sessions {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--embed-sessions"), "{err}");
        assert!(err.contains("1..=2") || err.contains("1..3"), "{err}");
    }
}
