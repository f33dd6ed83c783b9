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
    tune_reproduces(false);
}

/// With `--second-pass`, tune scores what the `--rttm` file of a run would hold (the second pass's labels,
/// joined at the end as the file's rewrite joins them), and full runs with `--rttm` give the printed DER.
#[test]
fn tune_second_pass_reproduces_the_rttm_files_der() {
    tune_reproduces(true);
}

fn tune_reproduces(second_pass: bool) {
    let dir = common::TempDir::new(if second_pass { "tune2" } else { "tune" });
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();
    piece(&data, "first", 0.0, SPLIT);
    piece(&data, "second", SPLIT, 66.8);

    let mut args = vec!["tune", data.to_str().unwrap(), "--latency", LATENCY];
    if second_pass {
        args.push("--second-pass");
    }
    let out = bin().args(&args).output().expect("run whospoke tune");
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
        let rttm = hyp.join(format!("{name}.rttm"));
        let mut cmd = bin();
        cmd.arg(data.join(format!("{name}.wav")))
            .args([
                "--no-tui",
                "--no-profiles",
                "--format",
                "rttm",
                "--latency",
                LATENCY,
            ])
            .args(&flags);
        if second_pass {
            cmd.arg("--rttm").arg(&rttm);
        }
        let o = cmd.output().expect("run whospoke");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        if !second_pass {
            std::fs::write(&rttm, &o.stdout).unwrap();
        }
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

/// Speech coverage (any speaker) of segments on the 10 ms grid, over `secs` seconds.
fn coverage(segs: &[whospoke::eval::Segment], secs: f64) -> Vec<bool> {
    let mut m = vec![false; (secs * 100.0).ceil() as usize];
    for s in segs {
        let (a, b) = (
            (s.start * 100.0).round() as usize,
            (s.end * 100.0).round() as usize,
        );
        for x in m.iter_mut().take(b).skip(a) {
            *x = true;
        }
    }
    m
}

#[test]
fn speech_extension_only_widens_agreed_regions_and_recovers_missed_speech_on_the_demo() {
    use whospoke::tune;
    let lib = whospoke::runtime::init_onnxruntime().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("ONNX Runtime: {}", lib.display());
    let models = whospoke::runtime::locate_models(None).unwrap_or_else(|e| panic!("{e}"));
    let demo = common::repo().join("assets/demo");
    let mut base = whospoke::pipeline::Config::default();
    // Extension alone: no joining of short pauses, which would also fill gaps, and no extension
    // (or trimming) by energy, which would grow from (or cut) the widened regions.
    base.turns.min_pause = 0.0;
    base.turns.energy_extend_max = 0.0;
    base.turns.energy_trim_max = 0.0;
    let msgs = tune::record(&demo.join("demo.flac"), &base, &models).expect("analyse the demo");
    let plain = tune::replay(&msgs, &base.turns, &base.cluster).expect("replay");
    let ext_cfg = whospoke::turns::TurnConfig {
        extend_max: 0.1,
        ..base.turns.clone()
    };
    let ext = tune::replay(&msgs, &ext_cfg, &base.cluster).expect("replay");
    let secs = 67.0;
    let (p, e) = (coverage(&plain, secs), coverage(&ext, secs));
    // Everything the defaults call speech stays speech.
    let lost = p.iter().zip(&e).filter(|(a, b)| **a && !**b).count();
    assert_eq!(lost, 0, "ticks of default speech lost by extension");
    // Every added tick lies within 0.1 s of default speech.
    let added: Vec<usize> = (0..e.len()).filter(|&i| e[i] && !p[i]).collect();
    assert!(added.len() >= 50, "only {} ticks added", added.len());
    for &i in &added {
        let near = (i.saturating_sub(10)..=(i + 10).min(p.len() - 1)).any(|j| p[j]);
        assert!(near, "tick {i} added more than 0.1 s from default speech");
    }
    // Scored against the demo's reference: less missed speech.
    let reference = whospoke::eval::read_rttm(demo.join("demo.rttm")).expect("demo.rttm");
    let uri = reference.keys().next().cloned().expect("a uri");
    let score = |segs: Vec<whospoke::eval::Segment>| {
        let mut hyp = whospoke::eval::Rttm::new();
        hyp.insert(uri.clone(), segs);
        let opts = whospoke::eval::EvalOptions {
            collar: 0.0,
            skip_overlap: false,
            audio_dir: None,
            durations: None,
        };
        whospoke::eval::evaluate_segments(&reference, &hyp, &opts)
    };
    let (rp, re) = (score(plain), score(ext));
    eprintln!(
        "demo: miss {:.2} -> {:.2} s, false alarm {:.2} -> {:.2} s",
        rp.miss, re.miss, rp.false_alarm, re.false_alarm
    );
    assert!(re.miss < rp.miss - 0.5, "miss {} -> {}", rp.miss, re.miss);
}
