//! The `--format jsonl` stream against its documented schema (docs/jsonl-schema.md).
//!
//! Runs the built binary on the bundled demo, parses every line and checks each event (exact field
//! set, JSON types, units and rounding) and the stream as a whole (ordering, turn ids, labels,
//! relabels, end). The example lines in the document are checked with the same rules, and the
//! checker itself is shown to reject drifted lines.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

/// How a field must look.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Seconds of stream time: a number >= 0 rounded to the millisecond.
    Secs,
    /// A JSON integer >= 0.
    Int,
    /// A JSON integer >= 1 (turn ids).
    Id,
    /// A string.
    Str,
    /// A non-empty string (labels, names, reasons).
    Label,
    Bool,
    /// `"tentative"` or `"final"`.
    Status,
    /// A number in [0, 1] with at most 3 decimals.
    Confidence,
    /// A number >= 0 with at most 3 decimals.
    Load,
    /// dBFS in [-120, 0] with at most 1 decimal.
    Db,
    /// Automatic gain, dB in [0, 30] with at most 1 decimal.
    Gain,
    /// Wall-clock seconds >= 0 with at most 4 decimals (processing delay).
    Delay,
    /// An array of non-empty strings.
    Labels,
    /// `"lost"`, `"resumed"` or `"gone"`.
    DeviceState,
}

use Kind::*;

const TYPES: [&str; 11] = [
    "start",
    "turn",
    "relabel",
    "speaker",
    "rename",
    "identified",
    "remembered",
    "device",
    "dropped",
    "status",
    "end",
];

/// The documented fields of each event type (besides `type`). The sets are exact.
fn schema(ty: &str) -> Option<&'static [(&'static str, Kind)]> {
    Some(match ty {
        "start" => &[
            ("time", Secs),
            ("input", Str),
            ("sample_rate", Int),
            ("channels", Int),
        ],
        "turn" => &[
            ("time", Secs),
            ("id", Id),
            ("speaker", Label),
            ("start", Secs),
            ("end", Secs),
            ("status", Status),
            ("confidence", Confidence),
            ("delay", Delay),
        ],
        "relabel" => &[
            ("time", Secs),
            ("id", Id),
            ("from", Label),
            ("to", Label),
            ("start", Secs),
            ("end", Secs),
        ],
        "speaker" => &[("time", Secs), ("speaker", Label)],
        "rename" => &[("time", Secs), ("from", Label), ("to", Label)],
        "identified" => &[
            ("time", Secs),
            ("speaker", Label),
            ("name", Label),
            ("similarity", Confidence),
        ],
        "remembered" => &[
            ("time", Secs),
            ("speaker", Label),
            ("saved", Bool),
            ("path", Str),
            ("message", Label),
        ],
        "device" => &[
            ("time", Secs),
            ("device", Str),
            ("state", DeviceState),
            ("gap_start", Secs),
            ("gap", Secs),
            ("reason", Label),
        ],
        "dropped" => &[
            ("time", Secs),
            ("samples", Int),
            ("total", Int),
            ("reason", Label),
        ],
        "status" => &[
            ("time", Secs),
            ("level_db", Db),
            ("gain_db", Gain),
            ("speech", Bool),
            ("dropped_samples", Int),
            ("label_lag", Secs),
            ("load", Load),
        ],
        "end" => &[
            ("time", Secs),
            ("speakers", Labels),
            ("dropped_samples", Int),
        ],
        _ => return None,
    })
}

fn rounded(x: f64, scale: f64) -> bool {
    ((x * scale) - (x * scale).round()).abs() < 1e-6
}

fn check_field(name: &str, kind: Kind, v: &Value) -> Result<(), String> {
    let bad = |what: &str| Err(format!("field `{name}` must be {what}, got {v}"));
    let num = v.as_f64().filter(|x| x.is_finite());
    match kind {
        Secs => match num {
            Some(x) if x >= 0.0 && rounded(x, 1000.0) => Ok(()),
            _ => bad("seconds >= 0 rounded to the ms"),
        },
        Int => match v.as_u64() {
            Some(_) => Ok(()),
            None => bad("an integer >= 0"),
        },
        Id => match v.as_u64() {
            Some(x) if x >= 1 => Ok(()),
            _ => bad("an integer >= 1"),
        },
        Str => match v.as_str() {
            Some(_) => Ok(()),
            None => bad("a string"),
        },
        Label => match v.as_str() {
            Some(s) if !s.is_empty() => Ok(()),
            _ => bad("a non-empty string"),
        },
        Bool => match v.as_bool() {
            Some(_) => Ok(()),
            None => bad("a boolean"),
        },
        Status => match v.as_str() {
            Some("tentative" | "final") => Ok(()),
            _ => bad("\"tentative\" or \"final\""),
        },
        Confidence => match num {
            Some(x) if (0.0..=1.0).contains(&x) && rounded(x, 1000.0) => Ok(()),
            _ => bad("a number in [0, 1] with 3 decimals"),
        },
        Load => match num {
            Some(x) if x >= 0.0 && rounded(x, 1000.0) => Ok(()),
            _ => bad("a number >= 0 with 3 decimals"),
        },
        Delay => match num {
            Some(x) if x >= 0.0 && rounded(x, 10000.0) => Ok(()),
            _ => bad("seconds >= 0 with 4 decimals"),
        },
        Gain => match num {
            Some(x) if (0.0..=30.0).contains(&x) && rounded(x, 10.0) => Ok(()),
            _ => bad("dB in [0, 30] with 1 decimal"),
        },
        Db => match num {
            Some(x) if (-120.0..=0.0).contains(&x) && rounded(x, 10.0) => Ok(()),
            _ => bad("dBFS in [-120, 0] with 1 decimal"),
        },
        DeviceState => match v.as_str() {
            Some("lost" | "resumed" | "gone") => Ok(()),
            _ => bad("\"lost\", \"resumed\" or \"gone\""),
        },
        Labels => match v.as_array() {
            Some(a) if a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())) => Ok(()),
            _ => bad("an array of non-empty strings"),
        },
    }
}

/// Checks one event on its own: known type, exact field set, field types, local invariants.
fn check_event(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("no string field `type`")?;
    let fields = schema(ty).ok_or_else(|| format!("unknown type {ty:?}"))?;
    for (name, kind) in fields {
        let f = obj
            .get(*name)
            .ok_or_else(|| format!("{ty}: missing field `{name}`"))?;
        check_field(name, *kind, f).map_err(|e| format!("{ty}: {e}"))?;
    }
    for key in obj.keys() {
        if key != "type" && !fields.iter().any(|(n, _)| n == key) {
            return Err(format!("{ty}: undocumented field `{key}`"));
        }
    }
    let f = |k: &str| obj[k].as_f64().unwrap_or(f64::NAN);
    match ty {
        "start" if f("time") != 0.0 => Err("start: time must be 0".into()),
        "turn" | "relabel" if f("start") >= f("end") => {
            Err(format!("{ty}: start must be < end: {v}"))
        }
        "turn" if f("end") > f("time") + 0.010 + 1e-9 => {
            Err(format!("turn: end lies after its emission time: {v}"))
        }
        "relabel" if obj["from"] == obj["to"] => Err(format!("relabel: from == to: {v}")),
        "dropped" if obj["samples"].as_u64() > obj["total"].as_u64() => {
            Err(format!("dropped: samples > total: {v}"))
        }
        _ => Ok(()),
    }
}

/// Checks the stream as a whole (each event must already pass [`check_event`]).
fn check_stream(events: &[Value]) -> Result<(), String> {
    let ty = |e: &Value| e["type"].as_str().unwrap_or("").to_string();
    let first = events.first().ok_or("no events")?;
    if ty(first) != "start" {
        return Err(format!("first event must be start, got {first}"));
    }
    let last = events.last().ok_or("no events")?;
    if ty(last) != "end" {
        return Err(format!("last event must be end, got {last}"));
    }
    // Current labels in order of first appearance (renames applied in place).
    let mut labels: Vec<String> = Vec::new();
    let mut speaker_events = 0usize;
    let mut seen_ids: HashSet<u64> = HashSet::new();
    let mut next_id = 1u64;
    let mut final_ids: HashSet<u64> = HashSet::new();
    // Per speaker: where that speaker's last final turn ended (one voice cannot overlap itself; two
    // speakers may, in overlapped speech).
    let mut last_final_end: std::collections::HashMap<String, f64> = Default::default();
    // Relabelled ids: their next turn line (if any) must carry this label.
    let mut relabelled: HashMap<u64, String> = HashMap::new();
    let mut relabel_targets: Vec<String> = Vec::new();
    let mut dropped_total = 0u64;
    let mut prev_time = 0.0f64;
    for (i, e) in events.iter().enumerate() {
        let at = |msg: String| format!("line {}: {msg}: {e}", i + 1);
        let t = ty(e);
        let time = e["time"].as_f64().unwrap_or(f64::NAN);
        // Finite: every event passed check_event.
        if time < prev_time {
            return Err(at(format!("time decreased (previous {prev_time})")));
        }
        prev_time = time;
        if (t == "start" && i != 0) || (t == "end" && i + 1 != events.len()) {
            return Err(at(format!("more than one {t}")));
        }
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        match t.as_str() {
            "speaker" => {
                speaker_events += 1;
                let want = format!("S{speaker_events}");
                if s("speaker") != want {
                    return Err(at(format!("new speakers are S1, S2, ...: expected {want}")));
                }
                if labels.contains(&want) {
                    return Err(at("speaker announced twice".into()));
                }
                labels.push(want);
            }
            "rename" => {
                let Some(p) = labels.iter().position(|l| *l == s("from")) else {
                    return Err(at("rename of an unknown label".into()));
                };
                labels[p] = s("to");
            }
            "identified" => {
                let Some(p) = labels.iter().position(|l| *l == s("speaker")) else {
                    return Err(at("identified names an unknown label".into()));
                };
                labels[p] = s("name");
            }
            "turn" => {
                let id = e["id"].as_u64().unwrap_or(0);
                if !labels.contains(&s("speaker")) {
                    return Err(at("turn speaker not announced by a speaker event".into()));
                }
                if seen_ids.insert(id) {
                    if id != next_id {
                        return Err(at(format!(
                            "turn ids appear as 1, 2, ...: expected {next_id}"
                        )));
                    }
                    next_id += 1;
                }
                if final_ids.contains(&id) {
                    return Err(at("turn line after that id's final line".into()));
                }
                if let Some(to) = relabelled.remove(&id) {
                    if s("speaker") != to {
                        return Err(at(format!("turn after relabel must carry {to}")));
                    }
                }
                if s("status") == "final" {
                    final_ids.insert(id);
                    let start = e["start"].as_f64().unwrap_or(f64::NAN);
                    let prev = last_final_end.get(&s("speaker")).copied().unwrap_or(0.0);
                    if start < prev - 1e-9 {
                        return Err(at(format!(
                            "final turns of one speaker must not overlap (its previous final ended at {prev})"
                        )));
                    }
                    last_final_end.insert(s("speaker"), e["end"].as_f64().unwrap_or(f64::NAN));
                }
            }
            "relabel" => {
                let id = e["id"].as_u64().unwrap_or(0);
                if !seen_ids.contains(&id) {
                    return Err(at("relabel of a turn id never emitted".into()));
                }
                if final_ids.contains(&id) {
                    return Err(at("relabel of a final turn".into()));
                }
                if !labels.contains(&s("from")) {
                    return Err(at("relabel from an unknown label".into()));
                }
                relabelled.insert(id, s("to"));
                relabel_targets.push(s("to"));
            }
            "dropped" => {
                let total = e["total"].as_u64().unwrap_or(0);
                let samples = e["samples"].as_u64().unwrap_or(0);
                if samples == 0 || total != dropped_total + samples {
                    return Err(at(format!(
                        "dropped total must grow by samples from {dropped_total}"
                    )));
                }
                dropped_total = total;
            }
            "status" if e["dropped_samples"].as_u64() != Some(dropped_total) => {
                return Err(at(format!("status dropped_samples != {dropped_total}")));
            }
            "end" => {
                let speakers: Vec<String> = e["speakers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if speakers != labels {
                    return Err(at(format!(
                        "end speakers must be the announced labels in order: {labels:?}"
                    )));
                }
                if e["dropped_samples"].as_u64() != Some(dropped_total) {
                    return Err(at(format!("end dropped_samples != {dropped_total}")));
                }
            }
            _ => {}
        }
    }
    if let Some(to) = relabel_targets.iter().find(|l| !labels.contains(l)) {
        return Err(format!("relabel to {to}, a label never announced"));
    }
    Ok(())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn demo_run_matches_documented_schema() {
    let input = "assets/demo/demo.flac";
    let out = Command::new(env!("CARGO_BIN_EXE_whospoke"))
        .current_dir(repo())
        .args([input, "--format", "jsonl", "--no-tui"])
        // The per-thread CPU lines scripts/bench.sh reads: on stderr, never among the labels.
        .env("WHOSPOKE_LOG", "warn,whospoke::timing=debug")
        .env("NO_COLOR", "1")
        .output()
        .expect("run whospoke");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "whospoke failed: {stderr}");
    for thread in ["analysis", "segmentation", "vad", "turns"] {
        let needle = format!("thread=\"{thread}\" cpu_s=");
        let cpu: f64 = stderr
            .lines()
            .find_map(|l| l.split(&needle).nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no CPU time of the {thread} thread on stderr:\n{stderr}"));
        assert!(cpu > 0.0 && cpu.is_finite(), "{thread}: cpu_s={cpu}");
    }
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    assert!(stdout.ends_with('\n'), "every line ends with a newline");

    let mut events = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1));
        if let Err(e) = check_event(&v) {
            panic!("line {}: {e}\n{line}", i + 1);
        }
        events.push(v);
    }
    if let Err(e) = check_stream(&events) {
        panic!("{e}");
    }

    // Facts about this input.
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    let start = &events[0];
    assert_eq!(start["input"], input);
    assert_eq!(start["sample_rate"], 16000);
    assert_eq!(start["channels"], 1);
    let end = events.last().unwrap();
    let dur = end["time"].as_f64().unwrap();
    assert!(
        (dur - 66.8).abs() < 0.011,
        "demo is 66.8 s of stream time, end at {dur}"
    );
    assert_eq!(end["dropped_samples"], 0, "a file never drops");
    assert_eq!(count("dropped"), 0, "a file never drops");
    assert!(count("speaker") >= 2, "the demo has several speakers");
    assert!(
        count("status") as f64 >= (dur * 0.9).floor(),
        "status every second"
    );
    for status in ["tentative", "final"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "turn" && e["status"] == status),
            "no {status} turn"
        );
    }
}

/// Example event lines of docs/jsonl-schema.md (inside ```json blocks).
fn documented_examples() -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/jsonl-schema.md")).expect("read doc");
    let mut out = Vec::new();
    let mut in_json = false;
    for line in doc.lines() {
        let l = line.trim();
        if l.starts_with("```") {
            in_json = l == "```json";
        } else if in_json && !l.is_empty() {
            out.push(l.to_string());
        }
    }
    out
}

#[test]
fn documented_examples_match_schema() {
    let examples = documented_examples();
    let mut types = HashSet::new();
    for line in &examples {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Err(e) = check_event(&v) {
            panic!("documented example fails the schema: {e}\n{line}");
        }
        types.insert(v["type"].as_str().unwrap().to_string());
    }
    for t in TYPES {
        assert!(
            types.contains(t),
            "docs/jsonl-schema.md has no example of {t}"
        );
    }
}

#[test]
fn checker_rejects_drift() {
    let turn = json!({"type":"turn","time":2.0,"id":1,"speaker":"S1","start":0.5,"end":1.5,
                      "status":"final","confidence":0.9,"delay":0.0123});
    check_event(&turn).unwrap();
    let drifted = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = turn.clone();
        f(v.as_object_mut().unwrap());
        v
    };
    let bad = [
        drifted(&|o| {
            o.remove("confidence");
        }),
        drifted(&|o| {
            o.insert("delay".into(), json!(-0.01));
        }),
        drifted(&|o| {
            o.insert("speaker_id".into(), json!(1));
        }),
        drifted(&|o| {
            o.insert("id".into(), json!("1"));
        }),
        drifted(&|o| {
            o.insert("status".into(), json!("maybe"));
        }),
        drifted(&|o| {
            o.insert("confidence".into(), json!(1.5));
        }),
        drifted(&|o| {
            o.insert("start".into(), json!(0.5004));
        }),
        drifted(&|o| {
            o.insert("start".into(), json!(1.5));
        }),
        drifted(&|o| {
            o.insert("type".into(), json!("segment"));
        }),
    ];
    for v in &bad {
        assert!(check_event(v).is_err(), "accepted {v}");
    }

    let start = json!({"type":"start","time":0.0,"input":"x","sample_rate":16000,"channels":1});
    let speaker = json!({"type":"speaker","time":1.0,"speaker":"S1"});
    let end = json!({"type":"end","time":3.0,"speakers":["S1"],"dropped_samples":0});
    let ok = vec![start.clone(), speaker.clone(), turn.clone(), end.clone()];
    check_stream(&ok).unwrap();
    let twice_final = vec![
        start.clone(),
        speaker.clone(),
        turn.clone(),
        turn.clone(),
        end.clone(),
    ];
    assert!(check_stream(&twice_final).is_err());
    let late = json!({"type":"status","time":0.5,"level_db":-20.0,"gain_db":0.0,"speech":true,
                      "dropped_samples":0,"label_lag":0.0,"load":0.1});
    let backwards = vec![
        start.clone(),
        speaker.clone(),
        turn.clone(),
        late,
        end.clone(),
    ];
    assert!(check_stream(&backwards).is_err());
    let unannounced = vec![start.clone(), turn.clone(), end.clone()];
    assert!(check_stream(&unannounced).is_err());
    let no_end = vec![start, speaker, turn];
    assert!(check_stream(&no_end).is_err());
}
