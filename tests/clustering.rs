//! New voices whose first turns are short, on real speech: the first 22 s of eval/dev/dev_00 (ls2609
//! talks 1.2-4.8 s; then ls533 in short turns of 1.7, 0.6, 1.2 and 1.1 s between 5.6 and 15.1 s,
//! and ls2414 from 8.8 s). Their short windows (under 1 s of speech) count as evidence of a new
//! voice, so each gets a speaker of their own within the final-label latency instead of lending
//! their first turns to ls2609's speaker (before that rule: about 7 s of these 16 s of speech
//! confused, every turn up to 16.7 s labelled as ls2609's).

mod common;

use whospoke::eval::{evaluate_segments, EvalOptions};

const SECONDS: f64 = 22.0;

#[test]
fn voices_whose_first_turns_are_short_get_their_own_speakers_in_the_final_labels() {
    let dev = common::repo().join("../shared/eval/dev");
    let t = common::TempDir::new("clustering");
    let wav = t.path("dev_00.wav");
    common::cut(&dev.join("dev_00.wav"), SECONDS, &wav);
    let jsonl = common::run_on(
        &wav,
        &[
            "--no-tui",
            "--no-profiles",
            "--format",
            "jsonl",
            "--latency",
            "2",
        ],
    );
    let hyp = common::final_turns(&jsonl, "dev_00");
    let reference = common::reference(&dev.join("dev_00.rttm"), SECONDS, "dev_00");

    let r = evaluate_segments(&reference, &hyp, &EvalOptions::default());
    let f = &r.files[0];
    assert_eq!((f.ref_speakers, f.hyp_speakers), (3, 3), "speakers ref/hyp");
    assert!(
        f.confusion < 0.05 * f.total,
        "{:.2} s of {:.2} s of speech confused",
        f.confusion,
        f.total
    );
    // ls533's first turn (5.6-7.3 s, windows of at most 1.7 s) is not labelled as ls2609's (1.2-4.8 s).
    let label_at = |t: f64| {
        hyp["dev_00"]
            .iter()
            .find(|s| s.start <= t && t < s.end)
            .map(|s| s.speaker.clone())
    };
    let (first, second) = (label_at(3.0), label_at(6.5));
    assert!(first.is_some() && second.is_some(), "{first:?} {second:?}");
    assert_ne!(first, second, "ls533's first turn took ls2609's label");
}
