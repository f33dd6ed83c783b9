//! CAM++ parity against PyTorch reference vectors (tests/data/campplus-ref, from eval/dev/dev_03.wav).
//!
//! Needs ONNX Runtime: run `scripts/fetch-onnxruntime.sh` once (or set ORT_DYLIB_PATH). A missing runtime
//! FAILS these tests with the loader's message; it does not skip them.

use ndarray::{concatenate, s, Array1, Array2, Axis};
use whospoke::embed::{Embedder, EMBEDDING_DIM};
use whospoke::fbank::{Fbank, NUM_BINS};
use whospoke::runtime::{init_onnxruntime, locate_models, ModelPaths};

const REF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/campplus-ref");
const CLIPS: [&str; 2] = ["clip0", "clip1"];

fn read_f32(name: &str) -> Vec<f32> {
    let path = format!("{REF_DIR}/{name}.f32");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    assert_eq!(bytes.len() % 4, 0, "{path}: not a whole number of f32");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_frames(name: &str) -> Array2<f32> {
    let v = read_f32(name);
    let t = v.len() / NUM_BINS;
    Array2::from_shape_vec((t, NUM_BINS), v).expect("[T, 80]")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// ONNX Runtime + verified models, or a panic carrying the library's explanation of what to do.
fn setup() -> ModelPaths {
    let lib = init_onnxruntime().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("ONNX Runtime: {}", lib.display());
    locate_models(None).unwrap_or_else(|e| panic!("{e}"))
}

fn embedder(models: &ModelPaths) -> Embedder {
    Embedder::new(&models.campplus, 1).unwrap_or_else(|e| panic!("{e}"))
}

/// The speaker-conditioned embedder: CAM++ trunk (ONNX) + pooling and head in Rust.
fn weighted_embedder(models: &ModelPaths) -> Embedder {
    let (trunk, head) = models
        .campplus_trunk_and_head()
        .unwrap_or_else(|e| panic!("{e}"));
    Embedder::new_weighted(&trunk, &head, 1).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn reference_features_match_pytorch_embedding() {
    let models = setup();
    let mut emb = embedder(&models);
    for clip in CLIPS {
        let reference = read_f32(&format!("{clip}_emb"));
        assert_eq!(reference.len(), EMBEDDING_DIM);
        // `_feats` is already mean-normalised; subtracting the (zero) mean again is a no-op.
        let feats = read_frames(&format!("{clip}_feats"));
        let e = emb.embed(feats.view()).unwrap_or_else(|e| panic!("{e}"));
        let c = cosine(&e, &reference);
        eprintln!("{clip}: cosine(ORT from _feats, PyTorch _emb) = {c:.7}");
        assert!(c >= 0.999, "{clip}: cosine {c}");
        // The raw fbank gives the same result (mean removal happens inside embed()).
        let raw = read_frames(&format!("{clip}_fbank_raw"));
        let e2 = emb.embed(raw.view()).unwrap_or_else(|e| panic!("{e}"));
        let c2 = cosine(&e2, &reference);
        eprintln!("{clip}: cosine(ORT from _fbank_raw, PyTorch _emb) = {c2:.7}");
        assert!(c2 >= 0.999, "{clip}: cosine {c2}");
    }
}

#[test]
fn waveform_to_embedding_chain_matches_pytorch() {
    let models = setup();
    let mut emb = embedder(&models);
    let mut fbank = Fbank::new();
    for clip in CLIPS {
        let wav = read_f32(&format!("{clip}_wav"));
        let frames = fbank.compute(&wav);
        let reference_fbank = read_frames(&format!("{clip}_fbank_raw"));
        assert_eq!(frames.dim(), reference_fbank.dim(), "{clip}: fbank shape");
        let max_diff = (&frames - &reference_fbank)
            .iter()
            .fold(0.0f32, |m, d| m.max(d.abs()));
        let e = emb.embed(frames.view()).unwrap_or_else(|e| panic!("{e}"));
        let c = cosine(&e, &read_f32(&format!("{clip}_emb")));
        eprintln!("{clip}: fbank max|diff| = {max_diff:.2e}; cosine(wav -> Rust fbank -> ORT, PyTorch) = {c:.7}");
        assert!(c >= 0.999, "{clip}: cosine {c}");
    }
}

#[test]
fn speakers_are_separated_and_stable_under_shift() {
    let models = setup();
    let mut emb = embedder(&models);
    let mut fbank = Fbank::new();
    const HALF_SECOND: usize = 8_000;
    let mut full = Vec::new();
    let mut sub = Vec::new();
    for clip in CLIPS {
        let wav = read_f32(&format!("{clip}_wav"));
        let n = wav.len();
        let mut e = |x: &[f32]| {
            emb.embed(fbank.compute(x).view())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let whole = e(&wav);
        let early = e(&wav[..n - HALF_SECOND]); // [0, 2.5) s
        let late = e(&wav[HALF_SECOND..]); // [0.5, 3) s
        let c_shift = cosine(&early, &late);
        let c_sub = cosine(&whole, &late);
        eprintln!("{clip}: cosine([0,2.5)s, [0.5,3)s) = {c_shift:.4}; cosine(whole, [0.5,3)s) = {c_sub:.4}");
        assert!(
            c_shift > 0.7,
            "{clip}: shifted windows of one speaker: cosine {c_shift}"
        );
        assert!(
            c_sub > 0.7,
            "{clip}: sub-window of one speaker: cosine {c_sub}"
        );
        full.push(whole);
        sub.push((early, late));
    }
    let c = cosine(&full[0], &full[1]);
    eprintln!("cosine(clip0, clip1) = {c:.4} (different speakers)");
    assert!(c < 0.5, "different speakers: cosine {c}");
    for a in [&sub[0].0, &sub[0].1] {
        for b in [&sub[1].0, &sub[1].1] {
            let c = cosine(a, b);
            assert!(c < 0.5, "different speakers (sub-windows): cosine {c}");
        }
    }
}

#[test]
fn short_or_malformed_input_is_an_error() {
    let models = setup();
    let mut emb = embedder(&models);
    let feats = read_frames("clip0_fbank_raw");
    assert!(
        emb.embed(feats.slice(s![..9, ..])).is_err(),
        "9 frames must be rejected"
    );
    assert!(
        emb.embed(feats.slice(s![..10, ..])).is_ok(),
        "10 frames must be accepted"
    );
    assert!(
        emb.embed(feats.slice(s![.., ..40])).is_err(),
        "40 bins must be rejected"
    );
    let mut bad = feats.clone();
    bad[[5, 5]] = f32::NAN;
    assert!(
        emb.embed(bad.view()).is_err(),
        "NaN input must give an error, not NaN output"
    );
    assert!(
        emb.embed_weighted(feats.view(), Array1::ones(feats.nrows()).view())
            .is_err(),
        "embed_weighted on the plain model must be an error"
    );
}

#[test]
fn weighted_model_matches_plain_and_follows_weights() {
    let models = setup();
    let mut plain = embedder(&models);
    let mut weighted = weighted_embedder(&models);
    assert!(weighted.is_weighted() && !plain.is_weighted());

    let f0 = read_frames("clip0_fbank_raw");
    let f1 = read_frames("clip1_fbank_raw");
    let e0 = plain.embed(f0.view()).unwrap_or_else(|e| panic!("{e}"));
    let e1 = plain.embed(f1.view()).unwrap_or_else(|e| panic!("{e}"));

    // All-ones weights == the plain model.
    let ones = Array1::<f32>::ones(f0.nrows());
    let w0 = weighted
        .embed_weighted(f0.view(), ones.view())
        .unwrap_or_else(|e| panic!("{e}"));
    let max_diff = w0
        .iter()
        .zip(&e0)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("weighted(all ones) vs plain: max|diff| = {max_diff:.2e}");
    assert!(max_diff < 1e-4, "max|diff| {max_diff}");
    let via_embed = weighted.embed(f0.view()).unwrap_or_else(|e| panic!("{e}"));
    assert!(cosine(&via_embed, &e0) > 0.99999);

    // Two speakers back to back: weighting one of them pulls the embedding towards that speaker.
    let both: Array2<f32> = concatenate(Axis(0), &[f0.view(), f1.view()]).expect("concat");
    let mixed = plain.embed(both.view()).unwrap_or_else(|e| panic!("{e}"));
    let mut w = Array1::<f32>::zeros(both.nrows());
    w.slice_mut(s![..f0.nrows()]).fill(1.0);
    let only0 = weighted
        .embed_weighted(both.view(), w.view())
        .unwrap_or_else(|e| panic!("{e}"));
    let (cm0, cm1) = (cosine(&mixed, &e0), cosine(&mixed, &e1));
    let (cw0, cw1) = (cosine(&only0, &e0), cosine(&only0, &e1));
    eprintln!("both unweighted: cos to clip0 {cm0:.4}, clip1 {cm1:.4}; weighted to clip0: {cw0:.4}, {cw1:.4}");
    assert!(cw0 > 0.9 && cw0 > cm0 && cw1 < cm1 && cw1 < 0.5);

    // Degenerate weights are an error, not NaN.
    let zeros = Array1::<f32>::zeros(f0.nrows());
    assert!(weighted.embed_weighted(f0.view(), zeros.view()).is_err());
    let short = Array1::<f32>::ones(f0.nrows() - 1);
    assert!(weighted.embed_weighted(f0.view(), short.view()).is_err());
}

#[test]
fn embedder_can_move_to_a_worker_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Embedder>();
}

/// The analysis thread embeds windows of one length in batches when it has a backlog (file mode). That must not
/// change any label: each batched embedding must be bit-for-bit the single-window one, in order, for real speech
/// of two speakers; a batch of mixed lengths is refused.
#[test]
fn batched_windows_equal_single_windows_bit_for_bit() {
    let models = setup();
    let mut emb = embedder(&models);
    let mut windows = Vec::new();
    for clip in CLIPS {
        let feats = read_frames(&format!("{clip}_fbank_raw"));
        // 1.5 s windows (148 frames, as the pipeline cuts them) every 0.3 s.
        let mut start = 0;
        while start + 148 <= feats.nrows() {
            windows.push(feats.slice(s![start..start + 148, ..]).to_owned());
            start += 30;
        }
    }
    assert!(windows.len() >= 8, "{} windows", windows.len());
    let single: Vec<Vec<f32>> = windows
        .iter()
        .map(|w| emb.embed(w.view()).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    for size in [2usize, 3, 4] {
        for (k, chunk) in windows.chunks(size).enumerate() {
            let views: Vec<_> = chunk.iter().map(|w| w.view()).collect();
            let batched = emb.embed_batch(&views).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(batched.len(), chunk.len());
            for (i, b) in batched.iter().enumerate() {
                let s = &single[k * size + i];
                assert!(
                    b.iter().zip(s).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "batch of {size}, window {}: batched embedding differs from the single one \
                     (cosine {})",
                    k * size + i,
                    cosine(b, s)
                );
            }
        }
    }
    // Different speakers in one batch stay different (no mixing across the batch).
    let c = cosine(&single[0], single.last().expect("windows"));
    assert!(
        c < 0.5,
        "first and last window are different speakers: cosine {c}"
    );
    let feats = read_frames("clip0_fbank_raw");
    let mixed = [feats.slice(s![..148, ..]), feats.slice(s![..100, ..])];
    let err = emb
        .embed_batch(&mixed)
        .expect_err("mixed lengths must be refused");
    assert!(err.to_string().contains("one length"), "{err}");
}

/// The same for the weighted model (speaker-conditioned windows, mode seg): a batch of windows with their own
/// frame weights gives, bit for bit, each window's embedding alone; the weights act per item (a window whose
/// second half is weighted out moves away from the unweighted one); bad weights are refused.
#[test]
fn batched_weighted_windows_equal_single_windows_bit_for_bit() {
    let models = setup();
    let mut emb = weighted_embedder(&models);
    // Windows straddling the two speakers' clips back to back, each with weights favouring one side.
    let f0 = read_frames("clip0_fbank_raw");
    let f1 = read_frames("clip1_fbank_raw");
    let both: Array2<f32> = concatenate(Axis(0), &[f0.view(), f1.view()]).expect("concat");
    let mut windows = Vec::new();
    let mut weights = Vec::new();
    let mut start = 150;
    while start + 148 <= 450 {
        windows.push(both.slice(s![start..start + 148, ..]).to_owned());
        let w: Vec<f32> = (0..148)
            .map(|i| if start + i < f0.nrows() { 0.9 } else { 0.02 })
            .collect();
        weights.push(w);
        start += 30;
    }
    assert!(windows.len() >= 6, "{} windows", windows.len());
    let single: Vec<Vec<f32>> = windows
        .iter()
        .zip(&weights)
        .map(|(w, wt)| {
            emb.embed_weighted(w.view(), ndarray::ArrayView1::from(&wt[..]))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for size in [1usize, 2, 3, 4] {
        for (k, (chunk, wchunk)) in windows.chunks(size).zip(weights.chunks(size)).enumerate() {
            let views: Vec<_> = chunk.iter().map(|w| w.view()).collect();
            let wts: Vec<&[f32]> = wchunk.iter().map(|w| &w[..]).collect();
            let batched = emb
                .embed_batch_weighted(&views, &wts)
                .unwrap_or_else(|e| panic!("{e}"));
            for (i, b) in batched.iter().enumerate() {
                let s = &single[k * size + i];
                assert!(
                    b.iter().zip(s).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "batch of {size}, window {}: cosine {}",
                    k * size + i,
                    cosine(b, s)
                );
            }
        }
    }
    // Weighting the first speaker's part of a straddling window pulls it towards that speaker.
    let mut plain = embedder(&models);
    let e0 = plain.embed(f0.view()).unwrap_or_else(|e| panic!("{e}"));
    let mid = windows.len() / 2;
    let unweighted = plain
        .embed(windows[mid].view())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cosine(&single[mid], &e0) > cosine(&unweighted, &e0) + 0.05,
        "weighted {} vs unweighted {}",
        cosine(&single[mid], &e0),
        cosine(&unweighted, &e0)
    );
    let views = [windows[0].view()];
    assert!(emb
        .embed_batch_weighted(&views, &[&[0.0; 148][..]])
        .is_err());
    assert!(emb
        .embed_batch_weighted(&views, &[&[1.0; 147][..]])
        .is_err());
    assert!(plain
        .embed_batch_weighted(&views, &[&weights[0][..]])
        .is_err());
}

/// The default trunk (8-bit convolutions, shape fixed at one 1.5 s window) against the float trunk on the two
/// reference speakers (not used to calibrate it): the same embedding to within quantisation (cosine >= 0.98),
/// and the speakers as far apart as the float model puts them.
#[test]
fn int8_trunk_matches_the_float_trunk_on_real_speech() {
    let models = setup();
    let mut f32_emb = weighted_embedder(&models);
    let (trunk, head) = models
        .campplus_trunk_and_head_in(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut i8_emb =
        Embedder::new_weighted_fixed(&trunk, &head, 1, 148).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(i8_emb.fixed_frames(), Some(148));
    let mut int8 = Vec::new();
    for clip in CLIPS {
        let raw = read_frames(&format!("{clip}_fbank_raw"));
        for start in [0usize, 150] {
            let w = raw.slice(s![start..start + 148, ..]);
            let weights: Vec<f32> = (0..148).map(|i| 0.3 + 0.7 * (i % 7) as f32 / 6.0).collect();
            let a = f32_emb
                .embed_batch_weighted(&[w], &[&weights])
                .unwrap()
                .remove(0);
            let b = i8_emb
                .embed_batch_weighted(&[w], &[&weights])
                .unwrap()
                .remove(0);
            let c = cosine(&a, &b);
            eprintln!(
                "{clip} frames {start}..{}: cosine(int8, float) = {c:.4}",
                start + 148
            );
            assert!(c >= 0.98, "{clip} at {start}: cosine {c}");
            if start == 0 {
                int8.push(b);
            }
        }
        // A window of another length is refused, not mis-shaped.
        let short = raw.slice(s![0..100, ..]);
        let ones = vec![1.0f32; 100];
        assert!(i8_emb.embed_batch_weighted(&[short], &[&ones]).is_err());
    }
    let cross = cosine(&int8[0], &int8[1]);
    eprintln!("int8: cosine between the two speakers = {cross:.3}");
    assert!(cross < 0.3, "{cross}");
}
