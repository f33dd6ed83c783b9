//! Speech edges by energy, on real speech (`TurnConfig::energy_extend_max`,
//! `TurnConfig::energy_trim_max`, docs/accuracy.md "Speech edges by energy"): webrtc-vad and
//! segmentation clip the quiet onsets and decays of words, which the reference counts as speech,
//! and the segmentation model's speech probability spills a few hundredths of a second into the
//! near-silence around words. A final speech region takes the adjacent audio that stands 6 dB above
//! the recording's floor and no more than 35 dB under its speech level, and loses edge audio more
//! than 40 dB under the speech level. Measured on the first 60 s (without -> with):
//! - dev_03 (no added noise), extension: DER 6.38 -> 3.88 % (missed 4.85 -> 0.95 %, false alarm
//!   1.53 -> 2.93 %);
//! - dev_01 (digital silence between utterances), trimming: DER 5.96 -> 4.82 % (false alarm
//!   4.45 -> 3.31 %, missed 1.51 % either way);
//! - dev_05 with pink noise mixed in ~16 dB under the speech, extension: 11.43 -> 11.24 %, false
//!   alarm 2.07 % either way.

mod common;

use std::path::Path;
use std::process::Command;

use whospoke::eval::FileScore;

const SECONDS: f64 = 60.0;

fn score(wav: &Path, uri: &str, extra: &[&str]) -> FileScore {
    common::score_cut(wav, uri, SECONDS, extra)
}

fn pct(x: f64, f: &FileScore) -> f64 {
    100.0 * x / f.total
}

/// A dev-set recording's first `SECONDS` scored with the defaults (`on`) and with `off_args`.
struct OnOff {
    on: FileScore,
    off: FileScore,
}

impl OnOff {
    fn run(uri: &str, off_args: &[&str]) -> OnOff {
        let dev = common::repo().join("../shared/eval/dev");
        let t = common::TempDir::new(&format!("edges-{uri}"));
        let wav = t.path(&format!("{uri}.wav"));
        common::cut(&dev.join(format!("{uri}.wav")), SECONDS, &wav);
        let r = OnOff {
            on: score(&wav, uri, &[]),
            off: score(&wav, uri, off_args),
        };
        let ((miss_off, miss_on), (fa_off, fa_on)) = (r.miss(), r.false_alarm());
        eprintln!(
            "{uri} {SECONDS} s, {off_args:?} -> defaults: DER {:.2} % -> {:.2} %, missed {miss_off:.2} -> {miss_on:.2} %, false alarm {fa_off:.2} -> {fa_on:.2} %",
            100.0 * r.off.der,
            100.0 * r.on.der
        );
        r
    }

    /// Missed speech, % of the reference's: (off, on).
    fn miss(&self) -> (f64, f64) {
        (pct(self.off.miss, &self.off), pct(self.on.miss, &self.on))
    }

    /// False alarm, % of the reference's speech: (off, on).
    fn false_alarm(&self) -> (f64, f64) {
        (
            pct(self.off.false_alarm, &self.off),
            pct(self.on.false_alarm, &self.on),
        )
    }
}

#[test]
fn quiet_word_edges_above_a_low_floor_become_speech() {
    let r = OnOff::run("dev_03", &["--energy-extend-max", "0"]);
    let ((miss_off, miss_on), (fa_off, fa_on)) = (r.miss(), r.false_alarm());
    assert!(
        miss_on < miss_off - 3.0,
        "missed speech {miss_on:.2} % with the extension, {miss_off:.2} % without"
    );
    // What it adds is mostly speech: false alarm grows by less than half what missed speech loses.
    assert!(
        fa_on - fa_off < 0.5 * (miss_off - miss_on),
        "false alarm {fa_off:.2} -> {fa_on:.2} %"
    );
    assert!(
        r.on.der < r.off.der - 0.02,
        "DER {:.4} vs {:.4}",
        r.on.der,
        r.off.der
    );
    assert_eq!(r.on.hyp_speakers, r.on.ref_speakers);
}

#[test]
fn near_silence_the_segmentation_spills_into_is_trimmed() {
    // eval/dev/dev_01: read speech with digital silence between the utterances; the segmentation
    // model's speech probability stays above 0.5 for a few hundredths of a second on both sides.
    let r = OnOff::run("dev_01", &["--energy-trim-max", "0"]);
    let ((miss_off, miss_on), (fa_off, fa_on)) = (r.miss(), r.false_alarm());
    assert!(
        fa_on < fa_off - 1.0,
        "false alarm {fa_off:.2} -> {fa_on:.2} %"
    );
    // What it cuts is mostly not speech.
    assert!(
        miss_on - miss_off < 0.5 * (fa_off - fa_on),
        "missed speech {miss_off:.2} -> {miss_on:.2} %"
    );
    assert_eq!(r.on.hyp_speakers, r.on.ref_speakers);
}

#[test]
fn noise_near_the_speech_level_is_not_taken_for_word_edges() {
    let dev = common::repo().join("../shared/eval/dev");
    let t = common::TempDir::new("edges-noisy");
    let (clean, noise, noisy) = (t.path("clean.wav"), t.path("pink.wav"), t.path("noisy.wav"));
    common::cut(&dev.join("dev_05.wav"), SECONDS, &clean);
    // Pink noise about 16 dB below the speech's mean level (-R: the same noise every run).
    let st = Command::new("sox")
        .args(["-R", "-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&noise)
        .args(["synth", &SECONDS.to_string(), "pinknoise", "gain", "-35"])
        .status()
        .expect("sox");
    assert!(st.success());
    let st = Command::new("sox")
        .args(["-R", "-m"])
        .arg(&clean)
        .arg(&noise)
        .arg(&noisy)
        .status()
        .expect("sox");
    assert!(st.success());

    let on = score(&noisy, "dev_05", &[]);
    let off = score(&noisy, "dev_05", &["--energy-extend-max", "0"]);
    eprintln!(
        "noisy dev_05 60 s: DER {:.2} % -> {:.2} %, false alarm {:.2} -> {:.2} %",
        100.0 * off.der,
        100.0 * on.der,
        pct(off.false_alarm, &off),
        pct(on.false_alarm, &on)
    );
    assert!(
        pct(on.false_alarm, &on) < pct(off.false_alarm, &off) + 1.0,
        "false alarm in noise"
    );
    assert!(
        (on.der - off.der).abs() < 0.01,
        "DER {:.4} vs {:.4}",
        on.der,
        off.der
    );
}
