//! `whospoke tune` on a small real folder: the demo conversation (assets/demo, three LibriSpeech
//! speakers) cut at 35 s into two labelled recordings. The setting it recommends must score no worse
//! than the defaults, and its printed flags must reproduce the printed DER in real runs scored by
//! `whospoke eval`.

mod common;

use std::path::Path;
use std::process::Command;

const SPLIT: f64 = 35.0;
const LATENCY: &str = "2";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_whospoke"))
}

/// Writes `name.wav` (demo seconds [from, to)) and `name.rttm` (its reference, shifted to 0).
fn piece(dir: &Path, name: &str, from: f64, to: f64) {
    let wav = dir.join(format!("{name}.wav"));
    let st = Command::new("sox")
        .arg(common::repo().join("assets/demo/demo.flac"))
        .arg(&wav)
        .args(["trim", &from.to_string(), &format!("={to}")])
        .status()
        .expect("sox");
    assert!(st.success());
    let all = whospoke::eval::read_rttm(common::repo().join("assets/demo/demo.rttm")).unwrap();
    let mut lines = String::new();
    for s in all.values().flatten() {
        let (a, b) = (s.start.max(from), s.end.min(to));
        if b > a {
            lines.push_str(&format!(
                "SPEAKER {name} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>\n",
                a - from,
                b - a,
                s.speaker
            ));
        }
    }
    std::fs::write(dir.join(format!("{name}.rttm")), lines).unwrap();
}

/// The number after `key` in `text` (e.g. "recommended DER 7.12 %").
fn number_after(text: &str, key: &str) -> f64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
        + key.len();
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|w| {
            w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no number after {key:?} in:\n{text}"))
}

#[test]
fn tune_recommends_flags_that_reproduce_their_der_and_beat_or_match_the_defaults() {
    let dir = common::TempDir::new("tune");
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();
    piece(&data, "first", 0.0, SPLIT);
    piece(&data, "second", SPLIT, 66.8);

    let out = bin()
        .args(["tune", data.to_str().unwrap(), "--latency", LATENCY])
        .output()
        .expect("run whospoke tune");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    // A progress line per file on stderr.
    assert_eq!(stderr.matches("analysed").count(), 2, "{stderr}");

    let recommended = number_after(&stdout, "recommended DER");
    let defaults = number_after(&stdout, "(defaults");
    let best = number_after(&stdout, ", best");
    assert!(recommended <= defaults, "{stdout}");
    assert!(best <= recommended, "{stdout}");
    let flags_line = stdout
        .lines()
        .find_map(|l| l.split_once("of the best): ").map(|(_, f)| f.to_string()))
        .unwrap_or_else(|| panic!("no flags line in:\n{stdout}"));
    let flags: Vec<&str> = flags_line.split_whitespace().collect();
    assert!(flags.contains(&"--threshold"), "{flags_line}");

    // The printed flags in real runs, scored by `whospoke eval`, give the printed DER.
    let hyp = dir.path("hyp");
    std::fs::create_dir_all(&hyp).unwrap();
    for name in ["first", "second"] {
        let o = bin()
            .arg(data.join(format!("{name}.wav")))
            .args([
                "--no-tui",
                "--no-profiles",
                "--format",
                "rttm",
                "--latency",
                LATENCY,
            ])
            .args(&flags)
            .output()
            .expect("run whospoke");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(hyp.join(format!("{name}.rttm")), &o.stdout).unwrap();
    }
    let json = dir.path("score.json");
    let st = bin()
        .arg("eval")
        .arg(&data)
        .arg(&hyp)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run whospoke eval");
    assert!(st.status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let der = 100.0 * report["der"].as_f64().unwrap();
    assert!(
        (der - recommended).abs() < 0.006,
        "tune printed {recommended} %, the runs score {der} %\n{stdout}"
    );
}
