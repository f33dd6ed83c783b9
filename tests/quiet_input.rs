//! Quiet input, on real speech: the first 60 s of eval/dev/dev_00 at its own level and 25 dB
//! quieter (its loud frames then sit near -45 dBFS, like a far-field microphone). webrtc-vad's
//! decisions depend on the absolute level, so without the automatic gain (src/level.rs) the quiet
//! copy loses much of its speech and one voice; with it, the quiet copy is labelled about as
//! well as the original (measured: DER 13.77 % original, 14.02 % quiet, 36.33 % quiet with
//! `--no-auto-gain`; the quiet copy is made with sox's dither fixed by `-R`, so every run hears the
//! same samples and prints the same numbers).

mod common;

use std::path::Path;

use whospoke::eval::FileScore;

const SECONDS: f64 = 60.0;

fn score(wav: &Path, extra: &[&str]) -> FileScore {
    common::score_cut(wav, "dev_00", SECONDS, extra)
}

fn der(f: &FileScore) -> f64 {
    100.0 * f.der
}

#[test]
fn quiet_speech_is_raised_before_detection_and_labelled_like_the_original() {
    let dev = common::repo().join("../shared/eval/dev");
    let t = common::TempDir::new("quiet");
    let (normal, quiet) = (t.path("normal.wav"), t.path("quiet.wav"));
    common::cut(&dev.join("dev_00.wav"), SECONDS, &normal);
    // -R: sox's dither is random unless told otherwise, and it would make the quiet copy (and its
    // DER) differ from run to run.
    let st = std::process::Command::new("sox")
        .arg("-R")
        .arg(&normal)
        .arg(&quiet)
        .args(["gain", "-25"])
        .status()
        .expect("sox");
    assert!(st.success());

    let original = score(&normal, &[]);
    let raised = score(&quiet, &[]);
    let untouched = score(&quiet, &["--no-auto-gain"]);
    let (d0, d1, d2) = (der(&original), der(&raised), der(&untouched));
    eprintln!("DER original {d0:.2} %, quiet {d1:.2} %, quiet without auto gain {d2:.2} %");

    assert_eq!(
        raised.hyp_speakers, raised.ref_speakers,
        "speakers, quiet copy"
    );
    assert!(d1 < d0 + 2.0, "quiet copy {d1:.2} % against {d0:.2} %");
    // Without the gain the same audio loses speech: what the gain is for.
    assert!(
        d2 > d0 + 10.0,
        "without auto gain {d2:.2} % against {d0:.2} %"
    );
}

#[test]
fn steady_noise_alone_is_not_raised_and_labels_nobody() {
    let t = common::TempDir::new("quiet-noise");
    let noise = t.path("pink.wav");
    // Pink noise well below speech level, as in a quiet room with nobody talking.
    let st = std::process::Command::new("sox")
        .args(["-R", "-n", "-r", "16000", "-b", "16", "-c", "1"])
        .arg(&noise)
        .args(["synth", "30", "pinknoise", "gain", "-45"])
        .status()
        .expect("sox");
    assert!(st.success());
    let jsonl = common::run_on(&noise, &["--no-tui", "--no-profiles", "--format", "jsonl"]);
    let mut statuses = 0;
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_ne!(v["type"], "turn", "a turn in noise: {line}");
        if v["type"] == "status" {
            statuses += 1;
            assert_eq!(v["gain_db"].as_f64(), Some(0.0), "{line}");
        }
    }
    assert!(statuses >= 25, "{statuses} status events");
}
