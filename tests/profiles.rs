//! Voice profiles on real speech: enrollment, the file format, and naming known speakers in a run.
//!
//! Uses only the committed demo (assets/demo: ls1688, ls3080, ls3331): ls3080 and ls3331 are enrolled
//! from their segments in the second half (35 s on), then the first 35 s are diarized with those
//! profiles. ls1688 (0.4-4.5 s) is never enrolled: it must never get a known name.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use whospoke::profiles::{Profile, ProfileStore, FORMAT, VERSION};

const SPLIT: f64 = 35.0;
const KNOWN: [&str; 2] = ["ls3080", "ls3331"];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_whospoke")
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whospoke-profiles-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn demo() -> PathBuf {
    common::repo().join("assets/demo/demo.flac")
}

fn demo_rttm() -> PathBuf {
    common::repo().join("assets/demo/demo.rttm")
}

/// Cuts `dur` seconds (0 = to the end) from `start` with sox.
fn sox_trim(input: &Path, start: f64, dur: f64, out: &Path) {
    let st = Command::new("sox")
        .arg(input)
        .arg(out)
        .args(["trim", &format!("{start:.3}")])
        .args((dur > 0.0).then(|| format!("{dur:.3}")))
        .status()
        .expect("sox");
    assert!(st.success(), "sox trim failed");
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("run whospoke")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Reference segments (start, end, speaker) of the demo.
fn reference() -> Vec<(f64, f64, String)> {
    let r = whospoke::eval::read_rttm(demo_rttm()).unwrap();
    r.values()
        .flatten()
        .map(|s| (s.start, s.end, s.speaker.clone()))
        .collect()
}

#[test]
fn known_speakers_are_named_and_the_unknown_one_is_not() {
    let dir = tmpdir("e2e");
    let profiles = dir.join("profiles");
    let refs = reference();

    // ls3080: its second-half segments cut into separate files (several recordings, one profile).
    let mut files = Vec::new();
    for (k, (s, e, _)) in refs
        .iter()
        .filter(|(s, _, spk)| *s >= SPLIT && spk == KNOWN[0])
        .enumerate()
    {
        let f = dir.join(format!("ls3080-{k}.wav"));
        sox_trim(&demo(), *s, e - s, &f);
        files.push(f);
    }
    let mut args = vec![
        os("enroll"),
        os("ls3080"),
        os("--profiles"),
        profiles.as_os_str(),
    ];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = run(&args);
    assert!(
        out.status.success(),
        "enroll ls3080: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ls3331: --from-session on the second half cut out with sox (RTTM shifted accordingly).
    let second = dir.join("second.wav");
    sox_trim(&demo(), SPLIT, 0.0, &second); // to the end
    let mut rttm = String::new();
    for (s, e, spk) in refs.iter().filter(|(s, _, _)| *s >= SPLIT) {
        rttm += &format!(
            "SPEAKER second 1 {:.3} {:.3} <NA> <NA> {spk} <NA> <NA>\n",
            s - SPLIT,
            e - s
        );
    }
    let rttm_path = dir.join("second.rttm");
    std::fs::write(&rttm_path, rttm).unwrap();
    let out = run(&[
        os("enroll"),
        os("ls3331"),
        os("--from-session"),
        rttm_path.as_os_str(),
        os("--speaker"),
        os("ls3331"),
        os("--profiles"),
        profiles.as_os_str(),
        second.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "enroll ls3331: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `whospoke profiles` lists both.
    let out = run(&[os("profiles"), os("--profiles"), profiles.as_os_str()]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && list.contains("ls3080") && list.contains("ls3331"),
        "{list}"
    );
    let store = ProfileStore::open(Some(&profiles)).unwrap();
    let all = store.load_all().unwrap();
    assert_eq!(all.len(), 2);
    for p in &all {
        println!(
            "profile {}: {:.1} s speech, {} windows, self-similarity mean {:.3} p10 {:.3}",
            p.name, p.speech_seconds, p.windows, p.self_similarity_mean, p.self_similarity_p10
        );
        assert!(p.speech_seconds >= 5.0 && p.windows >= 5);
    }

    // Diarize the first half with the profiles.
    let first = dir.join("first.wav");
    sox_trim(&demo(), 0.0, SPLIT, &first);
    let jsonl = run_with_profiles(&first, "jsonl", &profiles);

    // Final turns with the names they end up with (identifications apply to earlier turns too),
    // and when each name first appeared.
    let mut turns: BTreeMap<u64, (f64, f64, String)> = BTreeMap::new();
    let mut first_seen: BTreeMap<String, f64> = BTreeMap::new();
    let mut identified = Vec::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let time = v["time"].as_f64().unwrap_or(0.0);
        let mut seen = |name: &str| {
            first_seen.entry(name.to_string()).or_insert(time);
        };
        match v["type"].as_str().unwrap() {
            "turn" => {
                seen(v["speaker"].as_str().unwrap());
                if v["status"] == "final" {
                    turns.insert(
                        v["id"].as_u64().unwrap(),
                        (
                            v["start"].as_f64().unwrap(),
                            v["end"].as_f64().unwrap(),
                            v["speaker"].as_str().unwrap().to_string(),
                        ),
                    );
                }
            }
            "speaker" => seen(v["speaker"].as_str().unwrap()),
            "identified" => {
                let (from, to) = (v["speaker"].as_str().unwrap(), v["name"].as_str().unwrap());
                seen(to);
                identified.push(line.to_string());
                for t in turns.values_mut().filter(|t| t.2 == from) {
                    t.2 = to.to_string();
                }
            }
            _ => {}
        }
    }
    for l in &identified {
        println!("{l}");
    }

    // Score on a 10 ms grid over single-speaker reference speech.
    let ticks = (SPLIT * 100.0) as usize;
    let (mut known_total, mut known_detected, mut known_correct) = (0usize, 0usize, 0usize);
    let (mut unknown_total, mut unknown_named) = (0usize, 0usize);
    for k in 0..ticks {
        let t = (k as f64 + 0.5) / 100.0;
        let r: Vec<&str> = refs
            .iter()
            .filter(|(s, e, _)| *s <= t && t < *e)
            .map(|x| x.2.as_str())
            .collect();
        if r.len() != 1 {
            continue;
        }
        let h: Vec<&str> = turns
            .values()
            .filter(|(s, e, _)| *s <= t && t < *e)
            .map(|x| x.2.as_str())
            .collect();
        if KNOWN.contains(&r[0]) {
            known_total += 1;
            if !h.is_empty() {
                known_detected += 1;
            }
            if h.contains(&r[0]) {
                known_correct += 1;
            }
        } else {
            unknown_total += 1;
            if h.iter().any(|x| KNOWN.contains(x)) {
                unknown_named += 1;
            }
        }
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let named = pct(known_correct, known_detected);
    let named_all = pct(known_correct, known_total);
    let wrong = pct(unknown_named, unknown_total);
    println!(
        "known speakers' speech named correctly: {named:.1} % of detected speech ({named_all:.1} % of \
         all their reference speech, {:.1} s)",
        known_total as f64 / 100.0
    );
    println!(
        "unknown speaker's speech given a known name: {wrong:.1} % of {:.1} s",
        unknown_total as f64 / 100.0
    );
    let mut delays = Vec::new();
    for name in KNOWN {
        let start = refs
            .iter()
            .filter(|(_, _, s)| s == name)
            .map(|x| x.0)
            .fold(f64::INFINITY, f64::min);
        let shown = first_seen.get(name).copied().unwrap_or(f64::INFINITY);
        println!(
            "{name}: first speaks at {start:.2} s, name shown at {shown:.2} s (delay {:.2} s)",
            shown - start
        );
        delays.push(shown - start);
    }
    assert!(named >= 80.0, "only {named:.1} % named correctly");
    assert!(
        wrong <= 1.0,
        "{wrong:.1} % of the unknown speaker got a known name"
    );
    for d in delays {
        assert!(d <= 5.0, "name shown {d:.2} s after the speaker started");
    }
    // The unknown speaker keeps an S label.
    assert!(turns.values().any(|t| t.0 < 4.5 && t.2.starts_with('S')));
    let _ = std::fs::remove_dir_all(&dir);
}

fn sample_profile(name: &str, speech: f64, axis: usize) -> Profile {
    let mut c = vec![0.0f32; 192];
    c[axis] = 1.0;
    Profile {
        format: FORMAT.into(),
        version: VERSION,
        name: name.into(),
        created: "2025-01-01T00:00:00Z".into(),
        updated: "2025-01-01T00:00:00Z".into(),
        speech_seconds: speech,
        centroid: c,
        windows: 10,
        self_similarity_mean: 0.8,
        self_similarity_p10: 0.6,
        sources: vec!["a.wav".into()],
    }
}

#[test]
fn profile_file_round_trip_merge_and_remove() {
    let dir = tmpdir("store");
    let store = ProfileStore::open(Some(&dir.join("p"))).unwrap();
    assert!(
        store.load_all().unwrap().is_empty(),
        "missing directory = no profiles"
    );
    let p = sample_profile("Ann Lee", 10.0, 0);
    let path = store.save(&p).unwrap();
    assert_eq!(path.file_name().unwrap(), "Ann_Lee.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "whospoke-profile");
    assert_eq!(v["version"], 1);
    assert_eq!(v["centroid"].as_array().unwrap().len(), 192);
    assert_eq!(Profile::load(&path).unwrap(), p);
    assert_eq!(Profile::from_json(&p.to_json(), "x").unwrap(), p);

    // Merging weights by speech seconds.
    let mut m = p.clone();
    let mut q = sample_profile("Ann Lee", 30.0, 1);
    q.sources = vec!["b.wav".into()];
    m.merge(&q);
    assert_eq!(m.speech_seconds, 40.0);
    assert_eq!(m.windows, 20);
    assert!(m.centroid[1] > m.centroid[0] && m.centroid[0] > 0.0);
    let n: f32 = m.centroid.iter().map(|x| x * x).sum();
    assert!((n - 1.0).abs() < 1e-4);
    assert_eq!(m.sources, vec!["a.wav".to_string(), "b.wav".to_string()]);
    store.save(&m).unwrap();
    assert_eq!(store.load_all().unwrap().len(), 1, "same name: same file");

    // The CLI lists and removes it.
    let pdir = dir.join("p");
    let out = run(&[os("profiles"), os("--profiles"), pdir.as_os_str()]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("Ann Lee") && s.contains("40.0s") && s.contains("2025-01-01"),
        "{s}"
    );
    let out = run(&[
        os("profiles"),
        os("remove"),
        os("Ann Lee"),
        os("--profiles"),
        pdir.as_os_str(),
    ]);
    assert!(out.status.success());
    assert!(store.load_all().unwrap().is_empty());
    let out = run(&[
        os("profiles"),
        os("remove"),
        os("Nobody"),
        os("--profiles"),
        pdir.as_os_str(),
    ]);
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn incompatible_version_is_refused_clearly() {
    let dir = tmpdir("version");
    let mut v: serde_json::Value =
        serde_json::from_str(&sample_profile("Bob", 10.0, 2).to_json()).unwrap();
    v["version"] = serde_json::json!(2);
    let f = dir.join("Bob.json");
    std::fs::write(&f, v.to_string()).unwrap();
    let e = Profile::load(&f).unwrap_err().to_string();
    assert!(
        e.contains("version 2") && e.contains("version 1") && e.contains("Bob.json"),
        "{e}"
    );
    let e = Profile::from_json(r#"{"format":"something-else","version":1}"#, "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a whospoke profile"), "{e}");
    // A run with that directory stops before any audio, saying why.
    let out = run(&[
        demo().as_os_str(),
        os("--no-tui"),
        os("--format"),
        os("jsonl"),
        os("--profiles"),
        dir.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("version 2"), "{err}");
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_little_speech_is_refused() {
    let dir = tmpdir("short");
    let short = dir.join("short.wav");
    // 3 s of ls3080 alone.
    sox_trim(&demo(), 5.0, 3.0, &short);
    let profiles = dir.join("p");
    let out = run(&[
        os("enroll"),
        os("Carol"),
        short.as_os_str(),
        os("--profiles"),
        profiles.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not enough speech") && err.contains("at least 5 s"),
        "{err}"
    );
    assert!(!profiles.join("Carol.json").exists());
    // An unknown --from-session speaker is named as such.
    let out = run(&[
        os("enroll"),
        os("Carol"),
        os("--from-session"),
        demo_rttm().as_os_str(),
        os("--speaker"),
        os("S9"),
        os("--profiles"),
        profiles.as_os_str(),
        demo().as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("S9") && err.contains("ls3080"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An audio source that stops (blocks) after `gate_at` frames until the test opens the gate, so
/// that a control can be sent while the stream is still running.
struct Gated {
    inner: Box<dyn whospoke::decode::AudioSource>,
    frames: u64,
    gate_at: u64,
    gate: Option<crossbeam_channel::Receiver<()>>,
}

impl whospoke::decode::AudioSource for Gated {
    fn format(&self) -> whospoke::decode::InputFormat {
        self.inner.format()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn read(&mut self, out: &mut Vec<f32>) -> whospoke::Result<usize> {
        if self.frames >= self.gate_at {
            if let Some(g) = self.gate.take() {
                let _ = g.recv();
            }
        }
        let n = self.inner.read(out)?;
        self.frames += n as u64;
        Ok(n)
    }
}

/// Seconds of overlap between final turns labelled `label` and the reference speech of `spk`
/// (reference shifted by `offset` seconds).
fn overlap(
    turns: &[(f64, f64, String)],
    label: &str,
    refs: &[(f64, f64, String)],
    spk: &str,
    offset: f64,
) -> f64 {
    let mut o = 0.0;
    for (a, b, _) in turns.iter().filter(|t| t.2 == label) {
        for (s, e, _) in refs.iter().filter(|r| r.2 == spk) {
            o += (b.min(e - offset) - a.max(s - offset)).max(0.0);
        }
    }
    o
}

/// "Remember this voice" end to end on real speech: during a run of the demo's first 35 s, the
/// speaker who is ls3080 is remembered as "Walter" (`Control::Remember`, what the dashboard's `m`
/// key sends); a valid profile file appears in the profile directory, and a second run on the
/// demo's other half (other recordings of the same voices) with that directory names ls3080 Walter
/// and never gives the name to anyone else.
#[test]
fn remembered_voice_names_the_speaker_in_the_next_run() {
    use whospoke::events::{Control, Event, Status};
    let dir = common::TempDir::new("remember");
    let profiles = dir.path("profiles");
    let first = dir.path("first.wav");
    let second = dir.path("second.wav");
    sox_trim(&demo(), 0.0, SPLIT, &first);
    sox_trim(&demo(), SPLIT, 0.0, &second);
    let refs = reference();

    // Session 1: the pipeline holds at 33 s of input until the voice is remembered.
    let (open, gate) = crossbeam_channel::bounded::<()>(1);
    let source = Gated {
        inner: whospoke::decode::open_file(&first).unwrap(),
        frames: 0,
        gate_at: 33 * 16_000,
        gate: Some(gate),
    };
    let cfg = whospoke::pipeline::Config {
        profile_dir: Some(profiles.clone()),
        ..whospoke::pipeline::Config::default()
    };
    let models = whospoke::runtime::locate_models(None).unwrap();
    let running = whospoke::pipeline::start(
        whospoke::pipeline::Source::Stream {
            source: Box::new(source),
            realtime: false,
        },
        cfg,
        &models,
    )
    .unwrap();
    let mut finals: Vec<(u64, f64, f64, String)> = Vec::new();
    let wait = std::time::Duration::from_secs(300);
    loop {
        let ev = running
            .events
            .recv_timeout(wait)
            .expect("events up to 31 s");
        if let Event::Turn { turn, .. } = &ev {
            if turn.status == Status::Final {
                finals.push((turn.id, turn.start, turn.end, turn.speaker.clone()));
            }
        }
        if ev.time() >= 31.0 {
            break;
        }
    }
    let turns: Vec<(f64, f64, String)> = finals.iter().map(|t| (t.1, t.2, t.3.clone())).collect();
    let mut labels: Vec<&String> = turns.iter().map(|t| &t.2).collect();
    labels.sort();
    labels.dedup();
    let label = labels
        .iter()
        .max_by(|a, b| {
            overlap(&turns, a, &refs, "ls3080", 0.0)
                .total_cmp(&overlap(&turns, b, &refs, "ls3080", 0.0))
        })
        .expect("speakers")
        .to_string();
    println!("ls3080 is {label} in session 1 (speakers {labels:?})");
    // An unknown label is answered with an error, not a profile.
    running
        .controls
        .send(Control::Remember {
            speaker: "S9".into(),
            name: "Nobody".into(),
        })
        .unwrap();
    running
        .controls
        .send(Control::Remember {
            speaker: label.clone(),
            name: "Walter".into(),
        })
        .unwrap();
    let mut answers = Vec::new();
    let mut renamed = false;
    while answers.len() < 2 {
        match running.events.recv_timeout(wait).expect("answers") {
            Event::Remembered {
                speaker,
                saved,
                path,
                message,
                ..
            } => answers.push((speaker, saved, path, message)),
            Event::Rename { from, to, .. } => {
                assert_eq!((from.as_str(), to.as_str()), (label.as_str(), "Walter"));
                renamed = true;
            }
            _ => {}
        }
    }
    let _ = open.send(());
    let mut end_speakers = Vec::new();
    while let Ok(ev) = running.events.recv_timeout(wait) {
        if let Event::End { speakers, .. } = ev {
            end_speakers = speakers;
            break;
        }
    }
    running.join().unwrap();
    println!("answers: {answers:#?}");
    assert!(renamed, "the speaker was renamed Walter");
    assert!(
        end_speakers.contains(&"Walter".to_string()),
        "{end_speakers:?}"
    );
    assert_eq!(answers[0].0, "S9");
    assert!(!answers[0].1 && answers[0].2.is_empty());
    assert!(answers[0].3.contains("no such speaker"), "{}", answers[0].3);
    let (speaker, saved, path, message) = &answers[1];
    assert!(*saved, "{message}");
    assert_eq!(speaker, "Walter");
    assert!(
        message.contains("Walter") && message.contains(path.as_str()),
        "{message}"
    );
    let p = Profile::load(Path::new(path)).unwrap();
    assert_eq!(
        (p.format.as_str(), p.version, p.name.as_str()),
        (FORMAT, VERSION, "Walter")
    );
    assert!(p.speech_seconds >= 5.0 && p.windows >= 5, "{p:?}");
    assert!(
        Path::new(path).starts_with(&profiles),
        "{path} is in {}",
        profiles.display()
    );
    let listed = ProfileStore::open(Some(&profiles))
        .unwrap()
        .load_all()
        .unwrap();
    assert_eq!(listed.len(), 1);

    // Session 2: the other half, with the profile directory.
    let jsonl = run_with_profiles(Path::new(&second), "jsonl", Path::new(&profiles));
    let mut turns: BTreeMap<u64, (f64, f64, String)> = BTreeMap::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["type"].as_str() {
            Some("turn") if v["status"] == "final" => {
                turns.insert(
                    v["id"].as_u64().unwrap(),
                    (
                        v["start"].as_f64().unwrap(),
                        v["end"].as_f64().unwrap(),
                        v["speaker"].as_str().unwrap().to_string(),
                    ),
                );
            }
            Some("identified") => {
                let (from, to) = (v["speaker"].as_str().unwrap(), v["name"].as_str().unwrap());
                for t in turns.values_mut() {
                    if t.2 == from {
                        t.2 = to.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    let turns: Vec<(f64, f64, String)> = turns.into_values().collect();
    let walter: f64 = turns
        .iter()
        .filter(|t| t.2 == "Walter")
        .map(|t| t.1 - t.0)
        .sum();
    let right = overlap(&turns, "Walter", &refs, "ls3080", SPLIT);
    let wrong: f64 = ["ls3331", "ls1688"]
        .iter()
        .map(|s| overlap(&turns, "Walter", &refs, s, SPLIT))
        .sum();
    let ls3080: f64 = refs
        .iter()
        .filter(|r| r.2 == "ls3080" && r.0 >= SPLIT)
        .map(|r| r.1 - r.0)
        .sum();
    println!(
        "session 2: Walter {walter:.1} s, of which ls3080 {right:.1} s, others {wrong:.1} s; ls3080 speaks {ls3080:.1} s"
    );
    assert!(
        right >= 0.8 * ls3080,
        "Walter covers {right:.1} of {ls3080:.1} s of ls3080"
    );
    // The other voices keep their own labels (a little of theirs at turn boundaries or in a
    // short turn the clustering merged is not a naming error).
    for (other, most) in [("ls3331", 0.15), ("ls1688", 0.1)] {
        let spoken: f64 = refs
            .iter()
            .filter(|r| r.2 == other && r.0 >= SPLIT)
            .map(|r| r.1 - r.0)
            .sum();
        let named = overlap(&turns, "Walter", &refs, other, SPLIT);
        println!("{other}: {named:.1} of {spoken:.1} s named Walter");
        assert!(
            named <= most * spoken,
            "{named:.1} of {spoken:.1} s of {other} named Walter"
        );
    }
    assert!(wrong < 0.2 * walter, "{wrong:.1} s of others named Walter");
}

/// Enrolls dev-set speaker `spk` into `profiles` from their reference segments in `file` (dev_NN).
fn enroll_from_dev(dev: &Path, profiles: &Path, spk: &str, file: &str) {
    let out = run(&[
        os("enroll"),
        os(spk),
        os("--from-session"),
        dev.join(format!("{file}.rttm")).as_os_str(),
        os("--speaker"),
        os(spk),
        os("--profiles"),
        profiles.as_os_str(),
        dev.join(format!("{file}.wav")).as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "enroll {spk}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs whospoke on `audio` with the profile directory `profiles`, output `format`; asserts success and
/// returns stdout.
fn run_with_profiles(audio: &Path, format: &str, profiles: &Path) -> String {
    let out = run(&[
        audio.as_os_str(),
        os("--format"),
        os(format),
        os("--no-tui"),
        os("--profiles"),
        profiles.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs whospoke on the first `cut` seconds of dev-set `file` with `profiles`; returns stdout.
fn run_dev_cut(
    dev: &Path,
    dir: &Path,
    file: &str,
    cut: f64,
    format: &str,
    profiles: &Path,
) -> String {
    let audio = dir.join(format!("{file}.wav"));
    sox_trim(&dev.join(format!("{file}.wav")), 0.0, cut, &audio);
    run_with_profiles(&audio, format, profiles)
}

/// (start, end, speaker) of the RTTM lines in `text`.
fn rttm_segments(text: &str) -> Vec<(f64, f64, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let s: f64 = f.get(3)?.parse().ok()?;
            let d: f64 = f.get(4)?.parse().ok()?;
            Some((s, s + d, f.get(7)?.to_string()))
        })
        .collect()
}

/// The reference segments of dev-set `file` starting before `cut`.
fn dev_reference(dev: &Path, file: &str, cut: f64) -> Vec<(f64, f64, String)> {
    let path = dev.join(format!("{file}.rttm"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rttm_segments(&text)
        .into_iter()
        .filter(|r| r.0 < cut)
        .collect()
}

/// The 10 ms ticks before `cut` where exactly one reference speaker speaks: (tick centre, speaker).
fn single_speaker_ticks(refs: &[(f64, f64, String)], cut: f64) -> Vec<(f64, &str)> {
    (0..(cut * 100.0) as usize)
        .filter_map(|k| {
            let t = (k as f64 + 0.5) / 100.0;
            let mut r = refs.iter().filter(|(s, e, _)| *s <= t && t < *e);
            match (r.next(), r.next()) {
                (Some(one), None) => Some((t, one.2.as_str())),
                _ => None,
            }
        })
        .collect()
}

/// When the label `name` first shows in the JSONL `stdout` (stream time), and the final turns by id under
/// the labels they end up with (`identified` events applied to earlier turns, as a consumer would).
fn name_shown_and_final_turns(
    stdout: &str,
    name: &str,
) -> (f64, BTreeMap<u64, (f64, f64, String)>) {
    let mut shown = f64::INFINITY;
    let mut turns: BTreeMap<u64, (f64, f64, String)> = BTreeMap::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let time = v["time"].as_f64().unwrap_or(0.0);
        let label = match v["type"].as_str().unwrap() {
            "turn" | "speaker" => v["speaker"].as_str().unwrap().to_string(),
            "identified" => {
                let (from, to) = (v["speaker"].as_str().unwrap(), v["name"].as_str().unwrap());
                for t in turns.values_mut().filter(|t| t.2 == from) {
                    t.2 = to.to_string();
                }
                to.to_string()
            }
            _ => continue,
        };
        if label == name {
            shown = shown.min(time);
        }
        if v["type"] == "turn" && v["status"] == "final" {
            turns.insert(
                v["id"].as_u64().unwrap(),
                (
                    v["start"].as_f64().unwrap(),
                    v["end"].as_f64().unwrap(),
                    label,
                ),
            );
        }
    }
    (shown, turns)
}

/// On a 10 ms grid over the single-speaker reference speech before `cut`: per reference speaker,
/// (seconds, seconds labelled `name` by the final `turns`).
fn seconds_named<'a>(
    refs: &'a [(f64, f64, String)],
    cut: f64,
    turns: &BTreeMap<u64, (f64, f64, String)>,
    name: &str,
) -> BTreeMap<&'a str, (f64, f64)> {
    let mut named: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (t, spk) in single_speaker_ticks(refs, cut) {
        let e = named.entry(spk).or_default();
        e.0 += 0.01;
        if turns
            .values()
            .any(|(s, e, l)| *s <= t && t < *e && l == name)
        {
            e.1 += 0.01;
        }
    }
    named
}

/// Enrolls `enroll` (speaker, dev file) and runs the first `cut` seconds of dev-set `file` with those
/// profiles; asserts that `name` shows within 2 s of its first reference turn, labels at least
/// `min_right` of its single-speaker speech, and at most 1 % of each never-enrolled speaker's in
/// `unknown`.
fn assert_named_early(
    tag: &str,
    enroll: &[(&str, &str)],
    file: &str,
    cut: f64,
    name: &str,
    min_right: f64,
    unknown: &[&str],
) {
    let dev = common::repo().join("../shared/eval/dev");
    let dir = tmpdir(tag);
    let profiles = dir.join("profiles");
    for (spk, from) in enroll {
        enroll_from_dev(&dev, &profiles, spk, from);
    }
    let stdout = run_dev_cut(&dev, &dir, file, cut, "jsonl", &profiles);
    let refs = dev_reference(&dev, file, cut);
    let (shown, turns) = name_shown_and_final_turns(&stdout, name);
    let start = refs
        .iter()
        .filter(|r| r.2 == name)
        .map(|r| r.0)
        .fold(f64::INFINITY, f64::min);
    println!("{name} first speaks at {start:.2} s, name shown at {shown:.2} s");
    assert!(
        shown - start <= 2.0,
        "{name} named {:.2} s after their first turn",
        shown - start
    );
    let named = seconds_named(&refs, cut, &turns, name);
    println!("seconds of single-speaker speech, of them named {name}: {named:?}");
    let (spoken, right) = named[name];
    assert!(
        right >= min_right * spoken,
        "only {right:.1} of {spoken:.1} s of {name} named"
    );
    for other in unknown {
        let (spoken, wrong) = named[other];
        assert!(
            wrong <= 0.01 * spoken,
            "{wrong:.2} of {spoken:.1} s of {other} named {name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A known voice whose first turn is too short for any window (issue 7: the name within 2 s of the
/// speaker's first turn). In dev_10, ls3080 first speaks at 51.80 s for 0.51 s, then from 52.87 s.
/// The first window of that second turn (0.5 s of speech, 53.37 s) is as typical of ls3080 as 90 %
/// of the profile's own windows (0.62 against 0.61) and far ahead of the other profiles: it names
/// the voice, 1.57 s after the first turn (a full window, a second later, gave 2.08 s). ls3080 and
/// ls1998 are enrolled from dev_03 and dev_01; the never-enrolled speakers of the first 60 s
/// (ls1688, ls2414, ls2033) must not get ls3080's name.
#[test]
fn a_known_voice_whose_first_turn_is_short_is_named_from_its_next_turns_first_window() {
    assert_named_early(
        "short-first-turn",
        &[("ls3080", "dev_03"), ("ls1998", "dev_01")],
        "dev_10",
        60.0,
        "ls3080",
        0.8,
        &["ls1688", "ls2414", "ls2033"],
    );
}

/// A known voice whose first turn is too short to recognise (issue 7: the name within 2 s of the
/// speaker's first turn). In dev_04, ls3080 first speaks at 10.74 s for 0.51 s, right after ls3005
/// (whose profile that turn's window resembles more), then from 11.81 s. The next turn's first
/// window (0.5 s, 12.33 s) reaches ls3080's `threshold` (0.51) but not their window threshold, and
/// the first window with 1 s of speech only comes at 12.84 s (2.10 s). With profiles loaded the
/// analysis stage embeds a window at 0.75 s of each region (12.57 s), which counts as long enough
/// to agree with the one before: named 1.83 s after the first turn. ls3005 and ls3080 are enrolled
/// from dev_07; the never-enrolled ls1688 (three turns in the first 30 s) must not get ls3080's name.
#[test]
fn a_known_voice_is_named_from_three_quarters_of_a_second_of_its_next_turn() {
    assert_named_early(
        "naming-window",
        &[("ls3005", "dev_07"), ("ls3080", "dev_07")],
        "dev_04",
        30.0,
        "ls3080",
        0.8,
        &["ls1688"],
    );
}

/// A known voice whose first turns are short (issue 7: the name within 2 s of the speaker's first
/// turn). In dev_06, ls533 first speaks at 12.96 s for 1.2 s, then at 14.84 s for 1.1 s: too short
/// for a trusted window (1 s of speech or more) before 15.8 s, so no single window may name the
/// voice in time. The mean of the voice's first (short) windows does: ls533, enrolled from dev_00,
/// must be named within 2 s of 12.96 s, keep that name for their speech in the first 50 s, and the
/// two never-enrolled speakers (ls2414, ls2033) must not get it.
#[test]
fn a_known_voice_with_short_first_turns_is_named_from_its_first_windows() {
    assert_named_early(
        "short-turns",
        &[("ls533", "dev_00")],
        "dev_06",
        50.0,
        "ls533",
        0.85,
        &["ls2414", "ls2033"],
    );
}

/// An unknown voice is never forced onto a known name (issue 7), also before the clusterer has
/// made it a speaker of its own. ls2609 and ls533 are enrolled from dev_07 and dev_08; in the
/// first 25 s of dev_00 they talk with the never-enrolled ls2414 (from 8.75 s). While every
/// speaker so far carries a name, ls2414's first windows are far from all of them: two that agree
/// start an unnamed speaker (three otherwise), which the final labels give their speech to. Without
/// that, 3.1 of ls2414's 6.1 s here (8.9 to 16.7 s) were labelled ls2609/ls533.
#[test]
fn an_unknown_voice_gets_no_known_name_while_only_named_speakers_exist() {
    const CUT: f64 = 25.0;
    let dev = common::repo().join("../shared/eval/dev");
    let dir = tmpdir("unknown-first");
    let profiles = dir.join("profiles");
    for (spk, file) in [("ls2609", "dev_07"), ("ls533", "dev_08")] {
        enroll_from_dev(&dev, &profiles, spk, file);
    }
    let refs = dev_reference(&dev, "dev_00", CUT);
    let hyp = rttm_segments(&run_dev_cut(&dev, &dir, "dev_00", CUT, "rttm", &profiles));
    assert!(!hyp.is_empty(), "no turns");
    // On a 10 ms grid over single-speaker reference speech: per speaker, (seconds, seconds with a
    // turn under their own name, seconds with a turn under another known name).
    let known = ["ls2609", "ls533"];
    let mut share: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for (t, spk) in single_speaker_ticks(&refs, CUT) {
        let labels: Vec<&str> = hyp
            .iter()
            .filter(|(s, e, _)| *s <= t && t < *e)
            .map(|x| x.2.as_str())
            .collect();
        let e = share.entry(spk).or_default();
        e.0 += 0.01;
        if labels.contains(&spk) {
            e.1 += 0.01;
        }
        if labels.iter().any(|l| known.contains(l) && *l != spk) {
            e.2 += 0.01;
        }
    }
    println!("seconds of single-speaker speech (all, own name, another known name): {share:?}");
    let (spoken, _, wrong) = share["ls2414"];
    assert!(spoken > 5.0, "ls2414 speaks {spoken:.1} s");
    assert!(
        wrong <= 0.02 * spoken,
        "{wrong:.2} of {spoken:.1} s of the never-enrolled ls2414 given a known name"
    );
    for k in known {
        let (spoken, right, _) = share[k];
        assert!(
            right >= 0.8 * spoken,
            "only {right:.1} of {spoken:.1} s of {k} named"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
