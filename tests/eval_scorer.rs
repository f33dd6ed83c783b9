//! The Rust DER/JER scorer against the reference scorer (shared/eval/score.py, pyannote.metrics).
//!
//! tests/data/eval holds copies of the 12 dev reference RTTMs, their exact WAV durations, perturbed
//! hypotheses and score.py's JSON output for them (regenerate with tests/data/eval/make_hyps.py --score).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use whospoke::eval::{
    evaluate, evaluate_segments, read_durations, read_rttm, score_file, EvalOptions, Report,
    Segment,
};
use whospoke::Error;

/// Required agreement with score.py (absolute, as fractions).
const DER_TOL: f64 = 0.001;
const JER_TOL: f64 = 0.005;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eval")
}

fn opts(collar: f64, skip_overlap: bool) -> EvalOptions {
    EvalOptions {
        collar,
        skip_overlap,
        audio_dir: None,
        durations: Some(read_durations(data().join("ref/durations.tsv")).unwrap()),
    }
}

fn load_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(data().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Compare one setting with the stored score.py output; returns (max |ΔDER|, max |ΔJER|).
fn compare(json: &str, collar: f64, skip_overlap: bool) -> (f64, f64) {
    let want = load_json(json);
    let got = evaluate(
        &data().join("ref"),
        &data().join("hyp"),
        &opts(collar, skip_overlap),
    )
    .unwrap();
    assert_eq!(num(&want["settings"], "collar_each_side_s"), collar);
    assert_eq!(
        want["settings"]["skip_overlap"].as_bool(),
        Some(skip_overlap)
    );
    let files = want["files"].as_object().unwrap();
    assert_eq!(got.files.len(), files.len());
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    let (mut dder, mut djer) = (0.0f64, 0.0f64);
    for f in &got.files {
        let w = &files[&f.uri];
        let d = (f.der - num(w, "der")).abs();
        let j = (f.jer - num(w, "jer")).abs();
        assert!(
            d <= DER_TOL,
            "{json} {}: DER {} vs score.py {}",
            f.uri,
            f.der,
            w["der"]
        );
        assert!(
            j <= JER_TOL,
            "{json} {}: JER {} vs score.py {}",
            f.uri,
            f.jer,
            w["jer"]
        );
        for (mine, key) in [
            (f.miss, "miss_s"),
            (f.false_alarm, "fa_s"),
            (f.confusion, "conf_s"),
            (f.total, "ref_speech_s"),
            (f.scored, "scored_s"),
        ] {
            assert!(
                (mine - num(w, key)).abs() < 0.01,
                "{json} {}: {key} {mine} vs score.py {}",
                f.uri,
                w[key]
            );
        }
        assert_eq!(f.ref_speakers as u64, w["n_ref_spk"].as_u64().unwrap());
        assert_eq!(f.hyp_speakers as u64, w["n_hyp_spk"].as_u64().unwrap());
        dder = dder.max(d);
        djer = djer.max(j);
    }
    let agg = &want["aggregate"];
    let d = (got.der - num(agg, "der")).abs();
    let j = (got.jer - num(agg, "jer")).abs();
    assert!(
        d <= DER_TOL,
        "{json}: corpus DER {} vs {}",
        got.der,
        agg["der"]
    );
    assert!(
        j <= JER_TOL,
        "{json}: corpus JER {} vs {}",
        got.jer,
        agg["jer"]
    );
    assert!((got.mean_file_der - num(agg, "mean_file_der")).abs() <= DER_TOL);
    let (m, fa, c) = got.rates();
    assert!((m - num(agg, "miss")).abs() <= DER_TOL);
    assert!((fa - num(agg, "fa")).abs() <= DER_TOL);
    assert!((c - num(agg, "conf")).abs() <= DER_TOL);
    eprintln!(
        "{json}: corpus DER {:.4}% (score.py {:.4}%), JER {:.4}% ({:.4}%); max |dDER| {:.2e}, max |dJER| {:.2e}",
        100.0 * got.der,
        100.0 * num(agg, "der"),
        100.0 * got.jer,
        100.0 * num(agg, "jer"),
        dder.max(d),
        djer.max(j)
    );
    (dder.max(d), djer.max(j))
}

#[test]
fn agrees_with_score_py_collar_0() {
    compare("score_c0.json", 0.0, false);
}

#[test]
fn agrees_with_score_py_collar_025() {
    compare("score_c025.json", 0.25, false);
}

#[test]
fn agrees_with_score_py_collar_025_skip_overlap() {
    compare("score_c025_skipov.json", 0.25, true);
}

#[test]
fn stored_hypotheses_are_not_trivial() {
    // the stored hypotheses must exercise every error type
    let r = evaluate(&data().join("ref"), &data().join("hyp"), &opts(0.0, false)).unwrap();
    assert!(r.der > 0.1 && r.der < 0.6, "{}", r.der);
    assert!(r.miss > 0.0 && r.false_alarm > 0.0 && r.confusion > 0.0);
    assert!(r.count_correct > 0 && r.count_correct < r.files.len());
    let table = r.to_table();
    assert!(table.starts_with("uri "), "{table}");
    assert!(table.contains("AGGREGATE (12 files)"), "{table}");
    assert!(
        table.contains("collar=+-0.0s skip_overlap=False"),
        "{table}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["files"].as_array().unwrap().len(), 12);
}

fn segs(v: &[(f64, f64, &str)]) -> Vec<Segment> {
    v.iter().map(|&(s, e, k)| Segment::new(s, e, k)).collect()
}

fn one(r: &[Segment], h: &[Segment], collar: f64, skip_overlap: bool) -> Report {
    let mut rm = BTreeMap::new();
    rm.insert("f".to_string(), r.to_vec());
    let mut hm = BTreeMap::new();
    hm.insert("f".to_string(), h.to_vec());
    evaluate_segments(
        &rm,
        &hm,
        &EvalOptions {
            collar,
            skip_overlap,
            ..Default::default()
        },
    )
}

#[test]
fn perfect_hypothesis_scores_zero() {
    let reference = read_rttm(data().join("ref")).unwrap();
    for collar in [0.0, 0.25] {
        let r = evaluate_segments(&reference, &reference, &opts(collar, false));
        assert_eq!(r.files.len(), 12);
        assert!(
            r.der.abs() < 1e-12 && r.jer.abs() < 1e-12,
            "{}",
            r.to_table()
        );
        assert_eq!(r.count_correct, 12);
    }
}

#[test]
fn empty_hypothesis_is_all_miss() {
    let r = one(&segs(&[(1.0, 4.0, "a"), (3.0, 6.0, "b")]), &[], 0.0, false);
    let f = &r.files[0];
    assert!((f.total - 6.0).abs() < 1e-12);
    assert!((f.miss - 6.0).abs() < 1e-12);
    assert_eq!((f.false_alarm, f.confusion), (0.0, 0.0));
    assert!((r.der - 1.0).abs() < 1e-12 && (r.jer - 1.0).abs() < 1e-12);
    assert_eq!(f.hyp_speakers, 0);

    // a reference uri absent from the hypothesis is scored as empty, with a warning
    let mut rm = BTreeMap::new();
    rm.insert("f".to_string(), segs(&[(0.0, 2.0, "a")]));
    let r = evaluate_segments(&rm, &BTreeMap::new(), &EvalOptions::default());
    assert!((r.der - 1.0).abs() < 1e-12);
    assert!(!r.files[0].has_hypothesis);
    assert_eq!(r.warnings.len(), 1);
}

#[test]
fn label_permutation_invariance() {
    let reference = read_rttm(data().join("ref")).unwrap();
    let hyp = read_rttm(data().join("hyp")).unwrap();
    let renamed: BTreeMap<String, Vec<Segment>> = hyp
        .iter()
        .map(|(u, v)| {
            let v = v
                .iter()
                .map(|s| {
                    // reverse the label order and rename
                    let n: usize = s.speaker.trim_start_matches("spk").parse().unwrap();
                    Segment::new(s.start, s.end, format!("Z{}", 99 - n))
                })
                .collect();
            (u.clone(), v)
        })
        .collect();
    for collar in [0.0, 0.25] {
        let a = evaluate_segments(&reference, &hyp, &opts(collar, false));
        let b = evaluate_segments(&reference, &renamed, &opts(collar, false));
        assert!((a.der - b.der).abs() < 1e-12);
        assert!((a.jer - b.jer).abs() < 1e-12);
        for (x, y) in a.files.iter().zip(&b.files) {
            assert!((x.confusion - y.confusion).abs() < 1e-9);
            assert!((x.jer - y.jer).abs() < 1e-12);
        }
    }
}

#[test]
fn overlap_handling() {
    // a: 0-6, b: 4-10 (2 s of overlap); the hypothesis finds only one speaker per instant
    let r = segs(&[(0.0, 6.0, "a"), (4.0, 10.0, "b")]);
    let h = segs(&[(0.0, 5.0, "x"), (5.0, 10.0, "y")]);
    let f = &one(&r, &h, 0.0, false).files[0];
    assert!((f.total - 12.0).abs() < 1e-12); // overlap counted once per speaker
    assert!((f.miss - 2.0).abs() < 1e-12);
    assert!(f.false_alarm.abs() < 1e-12);
    assert!(f.confusion.abs() < 1e-12);
    assert!((f.der - 2.0 / 12.0).abs() < 1e-12);
    // JER: a vs x: miss 1 of union 6; b vs y: miss 1 of union 6
    assert!((f.jer - 1.0 / 6.0).abs() < 1e-12);

    // skip_overlap removes 4-6 from scoring: nothing is wrong any more
    let f = &one(&r, &h, 0.0, true).files[0];
    assert!((f.total - 8.0).abs() < 1e-12);
    assert!(f.der.abs() < 1e-12);

    // a hypothesis with a spurious second speaker over a single-speaker region: false alarm
    let r = segs(&[(0.0, 10.0, "a")]);
    let h = segs(&[(0.0, 10.0, "x"), (2.0, 3.0, "y")]);
    let f = &one(&r, &h, 0.0, false).files[0];
    assert!((f.false_alarm - 1.0).abs() < 1e-12 && f.miss == 0.0 && f.confusion == 0.0);
    assert_eq!((f.ref_speakers, f.hyp_speakers), (1, 2));
    assert!(!f.count_correct());

    // collar: +-0.5 s around every reference boundary is not scored
    let r = segs(&[(1.0, 5.0, "a")]);
    let h = segs(&[(1.4, 4.6, "x"), (8.0, 9.0, "x")]);
    let f = &one(&r, &h, 0.5, false).files[0];
    assert!((f.total - 3.0).abs() < 1e-12);
    assert!((f.false_alarm - 1.0).abs() < 1e-12);
    assert!(f.miss.abs() < 1e-12);
}

#[test]
fn duration_only_extends_the_scored_region() {
    let r = segs(&[(1.0, 5.0, "a")]);
    let h = segs(&[(1.0, 5.0, "x"), (6.0, 7.0, "x")]);
    let a = score_file("f", &r, &h, None, 0.0, false);
    let b = score_file("f", &r, &h, Some(100.0), 0.0, false);
    assert_eq!((a.scored, b.scored), (7.0, 100.0));
    assert_eq!(a.der, b.der);
    assert!((a.der - 0.25).abs() < 1e-12);
    // segments past the given duration are still scored, with a warning
    let mut d = HashMap::new();
    d.insert("f".to_string(), 5.0);
    let mut rm = BTreeMap::new();
    rm.insert("f".to_string(), r);
    let mut hm = BTreeMap::new();
    hm.insert("f".to_string(), h);
    let rep = evaluate_segments(
        &rm,
        &hm,
        &EvalOptions {
            durations: Some(d),
            ..Default::default()
        },
    );
    assert_eq!(rep.files[0].scored, 7.0);
    assert_eq!(rep.warnings.len(), 1);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whospoke-eval-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn malformed_rttm_line_names_the_line() {
    let d = tmp("bad");
    let p = d.join("bad.rttm");
    std::fs::write(
        &p,
        "; comment\nSPEAKER f 1 0.00 1.00 <NA> <NA> a <NA> <NA>\n\nSPEAKER f 1 1.5 x <NA> <NA> b\n",
    )
    .unwrap();
    match read_rttm(&p) {
        Err(Error::Rttm { path, line, why }) => {
            assert_eq!(path, p);
            assert_eq!(line, 4);
            assert!(why.contains("duration"), "{why}");
        }
        other => panic!("expected Error::Rttm, got {other:?}"),
    }
    std::fs::write(&p, "SPEAKER f 1 0.0 1.0\n").unwrap();
    let e = read_rttm(&p).unwrap_err();
    assert!(matches!(e, Error::Rttm { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("bad.rttm:1:"), "{e}");
    // the error surfaces through evaluate() too
    assert!(matches!(
        evaluate(&p, &p, &EvalOptions::default()),
        Err(Error::Rttm { .. })
    ));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn rttm_files_and_directories() {
    let d = tmp("dir");
    std::fs::write(
        d.join("a.rttm"),
        "SPEAKER a 1 0.5 1.0 <NA> <NA> s1 <NA> <NA>\nSPEAKER b 1 2 0 <NA> <NA> s1 <NA> <NA>\nLEXEME a 1 0 1 x\n",
    )
    .unwrap();
    std::fs::write(d.join("empty.rttm"), "").unwrap();
    std::fs::write(d.join("notes.txt"), "not an rttm").unwrap();
    let m = read_rttm(&d).unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b", "empty"]);
    assert_eq!(m["a"], vec![Segment::new(0.5, 1.5, "s1")]);
    assert!(m["b"].is_empty() && m["empty"].is_empty());
    let single = read_rttm(d.join("a.rttm")).unwrap();
    assert_eq!(single.len(), 2);
    let _ = std::fs::remove_dir_all(&d);
}
