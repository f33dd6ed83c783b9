//! The optimised-session cache (`runtime::load_session`): the first run stores each model's optimised graph
//! under `$WHOSPOKE_CACHE/sessions/`, later runs load it, a damaged cache file is replaced, and the labels are
//! byte-for-byte the same with and without the cache. Real models on the demo recording (67 s, 3 speakers).

mod common;

use common::TempDir;
use std::path::Path;
use std::process::Command;

/// Runs whospoke on the demo with `cache` as its cache directory; returns (RTTM on stdout, debug log).
fn run(cache: &Path, extra_env: &[(&str, &str)]) -> (String, String) {
    let lib = whospoke::runtime::init_onnxruntime().unwrap_or_else(|e| panic!("{e}"));
    let demo = common::repo().join("assets/demo/demo.flac");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whospoke"));
    cmd.arg(&demo)
        // One CAM++ session: a second one (the default for files on 2+ cores) would load the same cached
        // graph once more, when the input has run ahead long enough; the counts below are per model.
        .args(["--format", "rttm", "--no-tui", "--embed-sessions", "1"])
        .env("WHOSPOKE_CACHE", cache)
        // The runtime library is found where this test found it, not in the fresh cache directory.
        .env("ORT_DYLIB_PATH", &lib)
        .env("WHOSPOKE_LOG", "whospoke=debug")
        .env_remove("WHOSPOKE_NO_SESSION_CACHE");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run whospoke");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "whospoke failed:\n{log}");
    let rttm = String::from_utf8(out.stdout).expect("utf-8");
    assert!(rttm.lines().count() > 10, "too few turns:\n{rttm}");
    (rttm, log)
}

fn cached_files(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(cache.join("sessions"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn cached_sessions_load_and_give_identical_labels() {
    let dir = TempDir::new("session-cache");
    let cache = dir.path("cache");
    std::fs::create_dir_all(&cache).expect("cache dir");

    let (plain, log) = run(&cache, &[("WHOSPOKE_NO_SESSION_CACHE", "1")]);
    assert!(
        cached_files(&cache).is_empty(),
        "cache off, yet files written"
    );
    assert!(!log.contains("session cached"), "{log}");

    let (first, log) = run(&cache, &[]);
    let files = cached_files(&cache);
    // CAM++'s trunk and the two parts of the split segmentation-3.0.
    assert_eq!(files.len(), 3, "one cached session per model: {files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "ort")),
        "{files:?}"
    );
    assert_eq!(log.matches("session cached").count(), 3, "{log}");
    assert_eq!(
        first, plain,
        "labels differ when the cache is being written"
    );

    let (second, log) = run(&cache, &[]);
    assert_eq!(log.matches("session from the cache").count(), 3, "{log}");
    assert_eq!(second, plain, "labels differ when loaded from the cache");

    // A damaged cache file (truncated by a crash, a full disk...) is replaced, not trusted.
    let cam = files
        .iter()
        .find(|f| f.to_string_lossy().contains("campplus"))
        .expect("cached CAM++");
    std::fs::write(cam, b"not a model").expect("damage the cache");
    let (third, log) = run(&cache, &[]);
    assert!(log.contains("cached session unusable"), "{log}");
    assert_eq!(
        third, plain,
        "labels differ after rebuilding a damaged cache"
    );
    assert!(
        std::fs::metadata(cam).expect("rewritten").len() > 1_000_000,
        "the damaged file was not rewritten"
    );
    let (_, log) = run(&cache, &[]);
    assert_eq!(log.matches("session from the cache").count(), 3, "{log}");
}
