//! Shared-trunk embeddings (`--shared-trunk`): CAM++'s trunk runs once over consecutive chunks of speech and
//! each window pools the trunk frames it covers. On real speech (tests/data/campplus-ref: two speakers of
//! eval/dev/dev_03.wav; assets/demo: three LibriSpeech speakers).

mod common;

use ndarray::{concatenate, s, Array2, Axis};
use whospoke::analysis::TrunkTiling;
use whospoke::embed::{Embedder, TrunkFrames};
use whospoke::eval::{evaluate_segments, read_rttm, EvalOptions, Rttm, Segment};
use whospoke::fbank::NUM_BINS;
use whospoke::runtime::{init_onnxruntime, locate_models};

const REF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/campplus-ref");

fn frames(name: &str) -> Array2<f32> {
    let path = format!("{REF_DIR}/{name}.f32");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let t = v.len() / NUM_BINS;
    Array2::from_shape_vec((t, NUM_BINS), v).expect("[T, 80]")
}

fn weighted_embedder() -> Embedder {
    init_onnxruntime().unwrap_or_else(|e| panic!("{e}"));
    let models = locate_models(None).unwrap_or_else(|e| panic!("{e}"));
    let (trunk, head) = models
        .campplus_trunk_and_head()
        .unwrap_or_else(|e| panic!("{e}"));
    Embedder::new_weighted(&trunk, &head, 1).unwrap_or_else(|e| panic!("{e}"))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// One chunk that is exactly the window, no margin: the shared path pools the same trunk frames with the
/// same weights as the window's own embedding, so the two are identical.
#[test]
fn a_chunk_that_is_the_window_gives_the_windows_own_embedding() {
    let mut emb = weighted_embedder();
    let fb = frames("clip0_fbank_raw");
    let window = fb.slice(s![0..148, ..]);
    // Speaker-conditioned weights of some shape (a ramp with a dip), not all ones.
    let weights: Vec<f32> = (0..148)
        .map(|i| {
            if (60..80).contains(&i) {
                0.05
            } else {
                0.2 + 0.8 * i as f32 / 147.0
            }
        })
        .collect();
    let own = emb
        .embed_batch_weighted(&[window], &[&weights])
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0);
    let mut out = Vec::new();
    let pooled = emb
        .trunk_batch(&[window], &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let head = emb.head().expect("weighted embedder has a head");
    let mut store = TrunkFrames::default();
    store.store(&out, head.channels(), pooled, 0, 0, 148);
    assert_eq!(store.len(), pooled);
    let shared = store
        .embed(head, 0, &weights)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(own, shared);
}

/// Two speakers back to back, tiled as the analysis thread tiles a speech region (1.5 s windows every 0.5 s,
/// 0.16 s of context): every window's shared embedding is close to its standalone embedding and is nearer
/// its own speaker's standalone embeddings than the other speaker's.
#[test]
fn tiled_windows_keep_the_speakers_apart() {
    let mut emb = weighted_embedder();
    let a = frames("clip0_fbank_raw");
    let b = frames("clip1_fbank_raw");
    let fb = concatenate(Axis(0), &[a.view(), b.view()]).expect("concatenate");
    let split = a.nrows() as u64;
    let total = fb.nrows() as u64;
    let mut tiling = TrunkTiling::new(16);
    let mut store = TrunkFrames::default();
    let mut out = Vec::new();
    let mut windows = Vec::new();
    let mut end = 50u64;
    while end <= total {
        let first = end.saturating_sub(148);
        if let Some(c) = tiling.plan(first, end) {
            let cend = c.end.min(total);
            let chunk = fb.slice(s![c.start as usize..cend as usize, ..]);
            let pooled = emb.trunk_batch(&[chunk], &mut out).unwrap();
            let ch = emb.head().unwrap().channels();
            store.store(&out, ch, pooled, c.start, c.valid_from, c.valid_to);
        }
        windows.push((first, end));
        end += 50;
    }
    // Whole windows of one speaker.
    let mut checked = 0;
    for &(first, end) in &windows {
        if end - first < 148 || (first < split && end > split) {
            continue;
        }
        let ones = vec![1.0f32; (end - first) as usize];
        let shared = store
            .embed(emb.head().unwrap(), first, &ones)
            .unwrap_or_else(|e| panic!("{e}"));
        let win = fb.slice(s![first as usize..end as usize, ..]);
        let own = emb.embed(win).unwrap();
        let c = cosine(&shared, &own);
        assert!(
            c > 0.85,
            "window {first}..{end}: cosine to standalone {c:.3}"
        );
        let (same, other) = if end <= split { (&a, &b) } else { (&b, &a) };
        let s_same = cosine(&shared, &emb.embed(same.slice(s![0..148, ..])).unwrap());
        let s_other = cosine(&shared, &emb.embed(other.slice(s![0..148, ..])).unwrap());
        assert!(
            s_same > s_other + 0.2,
            "window {first}..{end}: same speaker {s_same:.3}, other {s_other:.3}"
        );
        checked += 1;
    }
    assert!(checked >= 4, "{checked} windows checked");
}

fn rttm_of(stdout: &str, uri: &str) -> Rttm {
    let mut r = Rttm::default();
    for l in stdout.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 8 && f[0] == "SPEAKER" {
            let (s, d): (f64, f64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
            r.entry(uri.to_string())
                .or_default()
                .push(Segment::new(s, s + d, f[7]));
        }
    }
    r
}

/// The whole pipeline with `--shared-trunk` on the demo: its three speakers, and about the default's DER.
#[test]
fn shared_trunk_diarizes_the_demo_like_the_default() {
    let demo = common::repo().join("assets/demo/demo.flac");
    let reference = read_rttm(common::repo().join("assets/demo/demo.rttm")).unwrap();
    let uri = reference.keys().next().unwrap().clone();
    let mut der = Vec::new();
    for extra in [&[][..], &["--shared-trunk"][..]] {
        let mut args = vec!["--no-tui", "--no-profiles", "--format", "rttm"];
        args.extend_from_slice(extra);
        let hyp = rttm_of(&common::run_on(&demo, &args), &uri);
        let r = evaluate_segments(&reference, &hyp, &EvalOptions::default());
        eprintln!(
            "{extra:?}: DER {:.2} %, speakers right {}",
            100.0 * r.der,
            r.count_correct
        );
        assert_eq!(r.count_correct, 1, "{extra:?}: wrong speaker count");
        der.push(r.der);
    }
    assert!(
        der[1] < der[0] + 0.02,
        "DER default {:.4}, shared trunk {:.4}",
        der[0],
        der[1]
    );
}
