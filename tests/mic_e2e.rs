//! End to end through the real microphone path: a file-backed ALSA capture device (PulseAudio null
//! sink pacing the ALSA `file` plugin) plays 30 s of a real three-speaker conversation in real time;
//! whospoke captures it through cpal, and the JSONL it prints must name the right speakers at the
//! right times.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECONDS: f64 = 30.0;

#[test]
fn microphone_conversation_is_diarized_live() {
    let tmp = std::env::temp_dir().join(format!("whospoke-mic-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let clip = tmp.join("conversation.wav");
    cut(&repo().join("assets/demo/demo.flac"), SECONDS, &clip);
    let mic = TestMic::start(&clip);
    let rttm_path = tmp.join("live.rttm");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whospoke"));
    cmd.args([
        "--device", "testmic", "--format", "jsonl", "--no-tui", "--rttm",
    ])
    .arg(&rttm_path)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in &mic.env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start whospoke");
    // The device starts delivering 0.5-2 s after opening; let the whole clip play, then stop as a
    // user would (Ctrl-C): pending turns must be finalised and flushed.
    std::thread::sleep(Duration::from_secs_f64(SECONDS + 4.0));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "exit {status:?}; stderr:\n{err}");

    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.first().unwrap()["type"], "start", "{out}");
    assert!(lines.first().unwrap()["input"]
        .as_str()
        .unwrap()
        .contains("testmic"));
    let end = lines.last().unwrap();
    assert_eq!(
        end["type"], "end",
        "the stream must end with an end event: {out}"
    );
    assert_eq!(end["dropped_samples"], 0, "no audio may be dropped");
    // Stream time comes from sample counts: it must cover the clip, and not exceed the wall clock.
    let stream_end = end["time"].as_f64().unwrap();
    assert!(stream_end >= SECONDS - 0.5, "stream time {stream_end}");
    assert!(
        stream_end <= wall + 0.5,
        "stream time {stream_end} > wall {wall}"
    );
    let speakers = end["speakers"].as_array().unwrap();
    assert_eq!(speakers.len(), 3, "three people speak in the clip: {end}");
    // Times never go backwards.
    let times: Vec<f64> = lines.iter().map(|v| v["time"].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1] + 1e-9),
        "event times must not decrease"
    );

    // Turn times: the final turns against the ground truth. Live audio arrives after a device start-up
    // delay, so the stream may start a little before the file's first sample: align by the best offset
    // of the first speech onset (whole-clip DER with an onset shift of at most 0.3 s).
    let reference = reference(&repo().join("assets/demo/demo.rttm"), SECONDS, "mic");
    let hyp = final_turns(&out, "mic");
    let opts = whospoke::eval::EvalOptions {
        collar: 0.25,
        ..Default::default()
    };
    let report = whospoke::eval::evaluate_segments(&reference, &hyp, &opts);
    eprintln!("{}", report.to_table());
    assert!(
        report.der < 0.20,
        "DER {:.3} (collar 0.25) too high",
        report.der
    );
    assert_eq!(report.count_correct, 1);

    // The --rttm file holds the same final turns (consecutive pieces of a long turn joined): the
    // same talk time per speaker, to the millisecond per line.
    let rttm = std::fs::read_to_string(&rttm_path).unwrap();
    let mut from_file: std::collections::BTreeMap<String, f64> = Default::default();
    for line in rttm.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 10, "RTTM line {line:?}");
        *from_file.entry(f[7].to_string()).or_default() += f[4].parse::<f64>().unwrap();
    }
    let mut printed: std::collections::BTreeMap<String, f64> = Default::default();
    for seg in hyp.values().flatten() {
        *printed.entry(seg.speaker.clone()).or_default() += seg.end - seg.start;
    }
    assert_eq!(
        from_file.keys().collect::<Vec<_>>(),
        printed.keys().collect::<Vec<_>>()
    );
    let lines = rttm.lines().count() as f64;
    for (spk, t) in &printed {
        assert!(
            (from_file[spk] - t).abs() <= 0.001 * (lines + 1.0),
            "{spk}: {} s in the RTTM file, {t} s printed",
            from_file[spk]
        );
    }
    assert!(rttm.lines().count() <= hyp.values().next().unwrap().len());
    drop(mic);
    std::fs::remove_dir_all(&tmp).ok();
}
