//! Per-stage cost of the pipeline, each normalised to **one second of audio**.
//!
//! Every benchmark whose id ends in `/1s_audio` processes exactly 1 s of real audio (or the messages
//! 1 s of audio produces) per iteration, so criterion's `time` is the cost per second of audio and the
//! stages add up to the whole. The throughput line (`thrpt`, "elem/s") is then *seconds of audio per
//! second of CPU*: 1 / real-time factor of that stage. `embed/window_1.5s*` is one CAM++ call on one
//! default window; `embed/per_1s_audio` is the two windows the default 0.5 s step embeds per second of
//! speech. They use the default configuration's embedder (the CAM++ trunk with 8-bit convolutions, shape fixed
//! at one window, weighted pooling and head in Rust); `embed_campplus/*_fp32` is the float trunk
//! (`--precision fp32`), `embed_campplus/1s_audio_shared_trunk` is `--shared-trunk`, and
//! `embed_campplus/window_1.5s_plain_model` is the whole-graph `campplus.onnx` of `--mode vad`.
//!
//! Audio: `BENCH_WAV` or `../shared/eval/dev/dev_00.wav` (16 kHz mono conversation), falling back to
//! the `tests/data/campplus-ref` clips. The embedding benchmarks need ONNX Runtime
//! (`scripts/fetch-onnxruntime.sh`); without it they are skipped (clustering and turns then use
//! synthetic embeddings) and a warning is printed.
//!
//!   cargo bench --bench stages                 # full
//!   cargo bench --bench stages -- --quick      # a few seconds per benchmark (scripts/bench.sh)

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::ArrayView2;

use whospoke::analysis::{FeatureTracker, WindowConfig};
use whospoke::cluster::{ClusterConfig, OnlineClusterer};
use whospoke::embed::{Embedder, TrunkFrames};
use whospoke::fbank::NUM_BINS;
use whospoke::resample::Resampler;
use whospoke::ring;
use whospoke::turns::{Analysis, TurnConfig, TurnTracker};
use whospoke::vad::{VadConfig, VadFrame, VadGate};
use whospoke::SAMPLE_RATE;

const SR: usize = SAMPLE_RATE as usize;
/// Input format of the resampling and ring benchmarks (a typical microphone).
const IN_RATE: usize = 48_000;
const IN_CH: usize = 2;
/// Frames per capture callback / file read chunk fed to the resampler and the input ring.
const CHUNK_FRAMES: usize = 2048;

// ---------------------------------------------------------------------------------------------
// Test material, prepared once.

struct Material {
    /// 16 kHz mono audio.
    audio: Vec<f32>,
    name: String,
    /// VAD frames with smoothed speech decisions, as the VAD thread emits them.
    frames: Vec<VadFrame>,
    /// The analysis thread's messages for the whole audio, grouped by second of audio.
    seconds: Vec<Vec<Analysis>>,
    /// (embedding, stream time of its end, trusted) for every window.
    embeddings: Vec<(Vec<f32>, f64, bool)>,
    /// Raw fbank of full-length (default 1.5 s) windows, row-major [T, 80].
    windows: Vec<(usize, Vec<f32>)>,
    /// Models, if ONNX Runtime could be loaded.
    models: Option<whospoke::runtime::ModelPaths>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_f32(path: &Path) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Decodes `path` to 16 kHz mono with the project's own decoder and resampler.
fn decode_16k(path: &Path) -> Option<Vec<f32>> {
    let mut src = whospoke::decode::open_file(path).ok()?;
    let fmt = src.format();
    let mut rs = Resampler::new(fmt.sample_rate, fmt.channels).ok()?;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        buf.clear();
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => rs.process(&buf, &mut out),
            Err(_) => return None,
        }
    }
    rs.finish(&mut out);
    Some(out)
}

fn load_audio() -> (Vec<f32>, String) {
    let wav = std::env::var_os("BENCH_WAV")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../shared/eval/dev/dev_00.wav"));
    if let Some(a) = decode_16k(&wav).filter(|a| a.len() >= 10 * SR) {
        return (a, wav.display().to_string());
    }
    let dir = manifest_dir().join("tests/data/campplus-ref");
    let mut a = Vec::new();
    for clip in ["clip0", "clip1"] {
        a.extend(read_f32(&dir.join(format!("{clip}_wav.f32"))).unwrap_or_default());
    }
    assert!(
        a.len() >= SR,
        "no audio: neither {} nor tests/data/campplus-ref is readable",
        wav.display()
    );
    eprintln!(
        "stages: {} not readable; using tests/data/campplus-ref clips ({:.1} s)",
        wav.display(),
        a.len() as f64 / SR as f64
    );
    (a, "tests/data/campplus-ref clip0+clip1".into())
}

/// The VAD thread's framing, classification and smoothing (pipeline.rs `vad_thread`).
fn vad_frames(audio: &[f32], cfg: &VadConfig) -> Vec<VadFrame> {
    let mut gate = VadGate::new(cfg).expect("VAD");
    let mut leveler = whospoke::level::Leveler::new(&cfg.level, cfg.frame_ms);
    let flen = gate.frame_len();
    let mut held: VecDeque<VadFrame> = VecDeque::new();
    let mut out = Vec::new();
    let mut pos = 0u64;
    for chunk in audio.chunks(flen) {
        let mut f = VadFrame {
            start: pos,
            len: chunk.len() as u16,
            ..VadFrame::default()
        };
        f.samples[..chunk.len()].copy_from_slice(chunk);
        let samples = &mut f.samples[..chunk.len()];
        f.power = leveler.process(samples);
        f.gain_db = leveler.gain_db();
        let voiced = chunk.len() == flen && gate.classify(samples);
        pos += chunk.len() as u64;
        held.push_back(f);
        if let Some(d) = gate.smoother().push(voiced) {
            if let Some(mut f) = held.pop_front() {
                f.speech = d;
                out.push(f);
            }
        }
    }
    let decisions: Vec<bool> = gate.smoother().drain().collect();
    for (mut f, d) in held.drain(..).zip(decisions) {
        f.speech = d;
        out.push(f);
    }
    out
}

/// Deterministic pseudo-random numbers (xorshift) for synthetic embeddings.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// The embedder of the default configuration (mode seg): the CAM++ trunk with 8-bit convolutions, its shape
/// fixed at one 1.5 s window (148 fbank frames), with the weighted pooling and head in Rust. All-ones weights
/// cost the same as any others.
fn default_embedder(m: &whospoke::runtime::ModelPaths, threads: usize) -> Embedder {
    let (trunk, head) = m
        .campplus_trunk_and_head_in(true)
        .expect("CAM++ trunk and head");
    Embedder::new_weighted_fixed(&trunk, &head, threads, FULL_FRAMES).expect("CAM++ trunk")
}

/// A trunk that takes windows of any length (`--precision fp32`: the float trunk; `--shared-trunk`).
fn dynamic_embedder(m: &whospoke::runtime::ModelPaths, int8: bool) -> Embedder {
    let (trunk, head) = m
        .campplus_trunk_and_head_in(int8)
        .expect("CAM++ trunk and head");
    Embedder::new_weighted(&trunk, &head, 1).expect("CAM++ trunk")
}

/// Fbank frames of a 1.5 s window.
const FULL_FRAMES: usize = 148;

fn prepare() -> Material {
    let (audio, name) = load_audio();
    let frames = vad_frames(&audio, &VadConfig::default());
    let models = match whospoke::runtime::init_onnxruntime()
        .and_then(|_| whospoke::runtime::locate_models(None))
    {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!(
                "stages: WARNING: embedding benchmarks skipped, synthetic embeddings used: {e}"
            );
            None
        }
    };
    // Windows of every length (region edges): a trunk of symbolic shape.
    let mut embedder = models.as_ref().map(|m| dynamic_embedder(m, true));

    // The analysis thread (pipeline.rs `analysis_thread`): fbank, windows, embeddings, messages.
    let wcfg = WindowConfig::default();
    let full_window = (wcfg.window * SR as f64).round() as u64;
    let mut tracker = FeatureTracker::new(&wcfg).expect("window config");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let speakers: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..192).map(|_| rng.next()).collect())
        .collect();
    let mut seconds: Vec<Vec<Analysis>> = Vec::new();
    let mut embeddings = Vec::new();
    let mut windows = Vec::new();
    let mut audio_since = 0u64;
    let t0 = Instant::now();
    let push = |seconds: &mut Vec<Vec<Analysis>>, at: u64, m: Analysis| {
        let s = (at / SR as u64) as usize;
        while seconds.len() <= s {
            seconds.push(Vec::new());
        }
        seconds[s].push(m);
    };
    let mut end = 0;
    for f in &frames {
        push(
            &mut seconds,
            f.start,
            Analysis::Frame {
                start: f.start,
                end: f.end(),
                speech: f.speech,
                power: f.power,
                gain_db: f.gain_db,
                arrived: None,
            },
        );
        end = f.end();
        audio_since += f.len as u64;
        if let Some(span) = tracker.push(f.start, f.audio(), f.speech) {
            let (feats, trusted) = tracker.features(span).expect("features");
            if feats.nrows() >= 10 {
                let embedding = match embedder.as_mut() {
                    Some(e) => e.embed(feats).expect("embedding"),
                    None => {
                        // Synthetic: one of three speakers, by the second of audio, plus noise.
                        let s = &speakers[(span.end as usize / (4 * SR)) % 3];
                        s.iter().map(|x| x + 0.3 * rng.next()).collect()
                    }
                };
                if span.end - span.start == full_window {
                    windows.push((
                        feats.nrows(),
                        feats.as_slice().expect("contiguous").to_vec(),
                    ));
                }
                let t = span.end as f64 / SR as f64;
                embeddings.push((embedding.clone(), t, trusted));
                push(
                    &mut seconds,
                    f.start,
                    Analysis::Window {
                        start: span.start,
                        end: span.end,
                        embedding,
                        trusted,
                    },
                );
            }
        }
        if audio_since >= SR as u64 {
            push(
                &mut seconds,
                f.start,
                Analysis::Load {
                    stage: whospoke::turns::Stage::Embedding,
                    audio: audio_since as f64 / SR as f64,
                    busy: 0.01,
                },
            );
            audio_since = 0;
        }
    }
    let _ = end;
    let speech = frames.iter().filter(|f| f.speech).count() as f64 / frames.len().max(1) as f64;
    eprintln!(
        "stages: audio {name}: {:.1} s, {:.0} % speech, {} windows ({} full-length) prepared in {:.1} s",
        audio.len() as f64 / SR as f64,
        100.0 * speech,
        embeddings.len(),
        windows.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(!embeddings.is_empty(), "no speech windows in {name}");
    if windows.is_empty() {
        // Short fallback audio: use the longest windows there are.
        windows.push((0, Vec::new()));
    }
    Material {
        audio,
        name,
        frames,
        seconds,
        embeddings,
        windows,
        models,
    }
}

/// Frames of `frame_len` samples that start inside second `k` of the stream (33 or 34 for 30 ms frames):
/// processing them for k = 0, 1, 2... processes exactly one second of audio per step on average.
fn frames_in_second(k: u64, frame_len: usize) -> usize {
    let f = |k: u64| (k * SR as u64).div_ceil(frame_len as u64);
    (f(k + 1) - f(k)) as usize
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

fn stages(c: &mut Criterion) {
    let m = prepare();
    let vcfg = VadConfig::default();
    let flen = vcfg.frame_len();

    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Elements(1));

    // Resampling: 48 kHz stereo f32 (interleaved) -> 16 kHz mono, in capture-sized chunks.
    {
        // Real audio at 48 kHz stereo: the 16 kHz signal interpolated x3; the right channel one sample later.
        let n = m.audio.len().min(30 * SR);
        let src = &m.audio[..n];
        let up: Vec<f32> = (0..n * 3)
            .map(|i| {
                let (j, fr) = (i / 3, (i % 3) as f32 / 3.0);
                let a = src[j];
                let b = src[(j + 1).min(n - 1)];
                a + (b - a) * fr
            })
            .collect();
        let mut input = Vec::with_capacity(up.len() * IN_CH);
        for i in 0..up.len() {
            input.push(up[i]);
            input.push(up[i.saturating_sub(1)]);
        }
        let total_frames = up.len();
        let mut rs = Resampler::new(IN_RATE as u32, IN_CH as u16).expect("resampler");
        let mut out = Vec::with_capacity(4 * SR);
        let mut cursor = 0usize; // frame index in `input`
        g.bench_function("resample_48k_stereo_to_16k_mono/1s_audio", |b| {
            b.iter(|| {
                out.clear();
                let mut left = IN_RATE;
                while left > 0 {
                    if cursor == total_frames {
                        cursor = 0;
                    }
                    let k = left.min(CHUNK_FRAMES).min(total_frames - cursor);
                    rs.process(&input[cursor * IN_CH..(cursor + k) * IN_CH], &mut out);
                    cursor += k;
                    left -= k;
                }
                black_box(out.len())
            })
        });
    }

    // VAD: the automatic gain (src/level.rs) and webrtc-vad on every 30 ms frame + the smoother (+ the
    // frame power the VAD thread computes).
    {
        let mut gate = VadGate::new(&vcfg).expect("VAD");
        let mut leveler = whospoke::level::Leveler::new(&vcfg.level, vcfg.frame_ms);
        let mut frame = vec![0.0f32; flen];
        let nframes = m.audio.len() / flen;
        let (mut k, mut fi) = (0u64, 0usize);
        g.bench_function("vad_webrtc_smoother/1s_audio", |b| {
            b.iter(|| {
                let mut speech = 0usize;
                for _ in 0..frames_in_second(k, flen) {
                    if fi == nframes {
                        fi = 0;
                    }
                    frame.copy_from_slice(&m.audio[fi * flen..(fi + 1) * flen]);
                    let power = leveler.process(&mut frame);
                    let voiced = gate.classify(black_box(&frame));
                    if gate.smoother().push(voiced) == Some(true) {
                        speech += 1;
                    }
                    black_box(power);
                    fi += 1;
                }
                k += 1;
                black_box(speech)
            })
        });
    }

    // Fbank: the analysis thread's feature work per VAD frame (streaming fbank, each 10 ms frame computed
    // once, kept in the history; window scheduling and the copy of each due window's features).
    {
        let wcfg = WindowConfig::default();
        let mut tracker = FeatureTracker::new(&wcfg).expect("window config");
        let (mut k, mut fi) = (0u64, 0usize);
        let mut pos = 0u64;
        g.bench_function("fbank_streaming/1s_audio", |b| {
            b.iter(|| {
                let mut rows = 0usize;
                for _ in 0..frames_in_second(k, flen) {
                    if fi == m.frames.len() {
                        // Start a new stream (cheap; keeps the frame index aligned with `pos`).
                        tracker = FeatureTracker::new(&wcfg).expect("window config");
                        fi = 0;
                        pos = 0;
                    }
                    let f = &m.frames[fi];
                    if let Some(span) = tracker.push(pos, f.audio(), f.speech) {
                        if let Ok((v, _)) = tracker.features(span) {
                            rows += v.nrows();
                        }
                    }
                    pos += f.len as u64;
                    fi += 1;
                }
                k += 1;
                black_box(rows)
            })
        });
    }

    // Embedding: one CAM++ window (1.5 s, 148 fbank frames; the default trunk takes every window at that
    // length), and the two windows per second of audio.
    if let Some(models) = &m.models {
        let windows: Vec<ArrayView2<f32>> = m
            .windows
            .iter()
            .filter(|(t, _)| *t == FULL_FRAMES)
            .map(|(t, v)| ArrayView2::from_shape((*t, NUM_BINS), v).expect("shape"))
            .collect();
        if windows.is_empty() {
            eprintln!(
                "stages: no full-length window in {}; embedding benchmarks skipped",
                m.name
            );
        } else {
            // The plain model (--mode vad, --plain-embeddings), for comparison with the default below.
            {
                let mut emb = Embedder::new(&models.campplus, 1).expect("CAM++ model");
                let mut wi = 0usize;
                g.sample_size(20);
                g.throughput(Throughput::Elements(1));
                g.bench_function("embed_campplus/window_1.5s_plain_model", |b| {
                    b.iter(|| {
                        wi = (wi + 1) % windows.len();
                        black_box(emb.embed(windows[wi]).expect("embed"))
                    })
                });
                g.sample_size(100);
            }
            for threads in [1usize, 2] {
                let mut emb = default_embedder(models, threads);
                let mut wi = 0usize;
                let mut next = || {
                    wi = (wi + 1) % windows.len();
                    windows[wi]
                };
                let suffix = if threads == 1 {
                    String::new()
                } else {
                    format!("_threads{threads}")
                };
                g.sample_size(20);
                g.throughput(Throughput::Elements(1));
                g.bench_function(format!("embed_campplus/window_1.5s{suffix}"), |b| {
                    b.iter(|| black_box(emb.embed(next()).expect("embed")))
                });
                g.bench_function(format!("embed_campplus/1s_audio{suffix}"), |b| {
                    b.iter(|| {
                        black_box(emb.embed(next()).expect("embed"));
                        black_box(emb.embed(next()).expect("embed"))
                    })
                });
                g.sample_size(100);
            }
            // The float trunk (`--precision fp32`), alone and four windows in one call, as the analysis thread
            // batches windows of one length when it has a backlog (file mode): per window = median / 4.
            {
                let mut emb = dynamic_embedder(models, false);
                let mut wi = 0usize;
                g.sample_size(20);
                g.throughput(Throughput::Elements(1));
                g.bench_function("embed_campplus/window_1.5s_fp32", |b| {
                    b.iter(|| {
                        wi = (wi + 1) % windows.len();
                        black_box(emb.embed(windows[wi]).expect("embed"))
                    })
                });
                if windows.len() >= 4 {
                    let mut bi = 0usize;
                    g.bench_function("embed_campplus/batch4_windows_1.5s_fp32", |b| {
                        b.iter(|| {
                            bi = (bi + 4) % (windows.len() - 3);
                            black_box(emb.embed_batch(&windows[bi..bi + 4]).expect("embed"))
                        })
                    });
                }
                g.sample_size(100);
            }
            // --shared-trunk: per second of speech, two trunk chunks (0.5 s of new frames plus 0.16 s of
            // context on each side, 82 fbank frames) and two window poolings over stored trunk frames.
            let chunks: Vec<ArrayView2<f32>> = windows
                .iter()
                .filter(|w| w.nrows() >= 148)
                .map(|w| w.slice_move(ndarray::s![..82, ..]))
                .collect();
            if let Some(full) = windows.iter().find(|w| w.nrows() >= 148) {
                let mut emb = dynamic_embedder(models, true);
                let mut out = Vec::new();
                let full = full.slice(ndarray::s![..148, ..]);
                let pooled = emb.trunk_batch(&[full], &mut out).expect("trunk");
                let mut store = TrunkFrames::default();
                let ch = emb.head().expect("head").channels();
                store.store(&out, ch, pooled, 0, 0, 148);
                let ones = vec![1.0f32; 148];
                let mut ci = 0usize;
                g.sample_size(20);
                g.throughput(Throughput::Elements(1));
                g.bench_function("embed_campplus/1s_audio_shared_trunk", |b| {
                    b.iter(|| {
                        for _ in 0..2 {
                            ci = (ci + 1) % chunks.len();
                            black_box(emb.trunk_batch(&chunks[ci..=ci], &mut out).expect("trunk"));
                        }
                        let head = emb.head().expect("head");
                        black_box(store.embed(head, 0, &ones).expect("pool"));
                        black_box(store.embed(head, 0, &ones).expect("pool"))
                    })
                });
                g.sample_size(100);
            }
        }
    }

    // Segmentation (mode seg): one 5 s segmentation-3.0 window, which is one second of audio at the
    // default 1 s step, plus mapping one window onto the 10 ms ticks.
    if let Some(models) = &m.models {
        let window = 5 * SR;
        if m.audio.len() >= window + SR {
            // The default: the 8-bit model split at its first convolution, consecutive windows of a stream
            // (each reuses the 4 s it shares with the previous one), one per call.
            let (front, rest) = models.segmentation_split().expect("split segmentation-3.0");
            let mut seg = whospoke::segment::Segmenter::new_split(&front, &rest, 1)
                .expect("segmentation model");
            // The whole 8-bit model (every window from scratch), for comparison.
            let int8 = models.segmentation_in(true).expect("segmentation-3.0-int8");
            let mut seg_whole =
                whospoke::segment::Segmenter::new(&int8, 1).expect("segmentation model");
            let mut seg_f32 = whospoke::segment::Segmenter::new(&models.segmentation, 1)
                .expect("segmentation model");
            let starts: Vec<usize> = (0..(m.audio.len() - window) / 16000)
                .map(|k| k * 16000)
                .collect();
            let mut si = 0usize;
            g.sample_size(20);
            g.throughput(Throughput::Elements(1));
            g.bench_function("segmentation/1s_audio", |b| {
                b.iter(|| {
                    si = (si + 1) % starts.len();
                    let a = starts[si];
                    black_box(
                        seg.run_at(a as i64, &m.audio[a..a + window])
                            .expect("segmentation")
                            .frames(),
                    )
                })
            });
            g.bench_function("segmentation/1s_audio_int8_whole", |b| {
                b.iter(|| {
                    si = (si + 1) % starts.len();
                    let a = starts[si];
                    black_box(
                        seg_whole
                            .run(&m.audio[a..a + window])
                            .expect("segmentation")
                            .frames(),
                    )
                })
            });
            // The float model (`--precision fp32`): one window, and two consecutive windows in one call, as a
            // file run ahead of the model batches them (`segment::MAX_BATCH`): two seconds of audio per iteration.
            g.bench_function("segmentation/1s_audio_fp32", |b| {
                b.iter(|| {
                    si = (si + 1) % starts.len();
                    let a = starts[si];
                    black_box(
                        seg_f32
                            .run(&m.audio[a..a + window])
                            .expect("segmentation")
                            .frames(),
                    )
                })
            });
            let mut pair: Vec<f32> = Vec::with_capacity(2 * window);
            g.bench_function("segmentation/batch2_windows_fp32", |b| {
                b.iter(|| {
                    si = (si + 1) % starts.len();
                    let a = starts[si].min(m.audio.len() - window - SR);
                    pair.clear();
                    pair.extend_from_slice(&m.audio[a..a + window]);
                    pair.extend_from_slice(&m.audio[a + SR..a + SR + window]);
                    black_box(
                        seg_f32
                            .run_batch(&pair, window)
                            .expect("segmentation")
                            .len(),
                    )
                })
            });
            let lp = seg
                .run(&m.audio[..window])
                .expect("segmentation")
                .log_probs()
                .to_owned();
            g.bench_function("segmentation_activity/1s_audio", |b| {
                b.iter(|| {
                    let mut act = whospoke::analysis::SegActivity::new(0);
                    black_box(act.add_window(0, window, lp.view()))
                })
            });
            g.sample_size(100);
        }
    }

    // Clustering: OnlineClusterer::assign for the two windows of one second, against the centroids
    // learnt from the whole file (the clusterer keeps learning while the benchmark cycles through it).
    {
        let mut cl = OnlineClusterer::new(ClusterConfig::default()).expect("cluster config");
        for (e, t, trusted) in &m.embeddings {
            cl.assign(e, *t, *trusted);
        }
        let duration = m.audio.len() as f64 / SR as f64;
        eprintln!(
            "stages: clustering against {} speakers ({} windows)",
            cl.num_speakers(),
            m.embeddings.len()
        );
        let (mut i, mut lap) = (0usize, 1.0f64);
        g.bench_function("cluster_assign_2_windows/1s_audio", |b| {
            b.iter(|| {
                let mut s = 0usize;
                for _ in 0..2 {
                    if i == m.embeddings.len() {
                        i = 0;
                        lap += 1.0;
                    }
                    let (e, t, trusted) = &m.embeddings[i];
                    // Stream time keeps growing, so pending windows age as in a live stream.
                    if let Some(a) = cl.assign(black_box(e), t + lap * duration, *trusted) {
                        s += a.speaker;
                    }
                    i += 1;
                }
                black_box(s)
            })
        });
    }

    // Turns: the turn tracker (clustering, tentative/final labels, relabels, status) on the messages one
    // second of audio produces. A new stream starts (untimed) when the file is used up.
    {
        let tcfg = TurnConfig::default();
        let ccfg = ClusterConfig::default();
        let mut tracker = TurnTracker::new(tcfg.clone(), ccfg.clone()).expect("turn config");
        let mut k = 0usize;
        let mut out = Vec::with_capacity(64);
        g.bench_function("turns_tracker/1s_audio", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if k == m.seconds.len() {
                        tracker =
                            TurnTracker::new(tcfg.clone(), ccfg.clone()).expect("turn config");
                        k = 0;
                    }
                    let msgs: Vec<Analysis> = m.seconds[k].clone();
                    let t0 = Instant::now();
                    for msg in msgs {
                        tracker.process(msg, &mut out);
                    }
                    black_box(out.len());
                    out.clear();
                    total += t0.elapsed();
                    k += 1;
                }
                total
            })
        });
    }

    // Ring hand-off between two threads: 1 s of 48 kHz stereo f32 through ring A (capture -> VAD thread),
    // and 1 s of VAD frames through ring B (VAD thread -> analysis thread). The clock stops when the
    // consumer thread has popped the last item.
    {
        let cap = IN_RATE * IN_CH * 2; // 2 s, as in file mode
        let (mut prod, mut cons, sig) = ring::ring::<f32>(cap);
        let got = Arc::new(AtomicU64::new(0));
        let (sig2, got2) = (sig.clone(), got.clone());
        let consumer = std::thread::spawn(move || {
            sig2.register_consumer();
            let mut buf = vec![0.0f32; 4096 * IN_CH];
            while let Some(n) = ring::pop_wait(&mut cons, &mut buf, &sig2) {
                black_box(&buf[..n]);
                got2.fetch_add(n as u64, Ordering::Release);
            }
        });
        let chunk: Vec<f32> = m.audio[..CHUNK_FRAMES * IN_CH].to_vec();
        let stop = AtomicBool::new(false);
        let mut sent = 0u64;
        g.bench_function("ring_input_48k_stereo_f32/1s_audio", |b| {
            b.iter(|| {
                let mut left = IN_RATE * IN_CH;
                while left > 0 {
                    let k = left.min(chunk.len());
                    ring::push_all_blocking(&mut prod, &chunk[..k], &sig, &stop);
                    left -= k;
                }
                sent += (IN_RATE * IN_CH) as u64;
                while got.load(Ordering::Acquire) < sent {
                    std::hint::spin_loop();
                }
            })
        });
        sig.close();
        let _ = consumer.join();

        let (mut prod, mut cons, sig) = ring::ring::<VadFrame>(20 * 1000 / 30);
        let got = Arc::new(AtomicU64::new(0));
        let (sig2, got2) = (sig.clone(), got.clone());
        let consumer = std::thread::spawn(move || {
            sig2.register_consumer();
            let mut buf = vec![VadFrame::default(); 32];
            while let Some(n) = ring::pop_wait(&mut cons, &mut buf, &sig2) {
                black_box(&buf[..n]);
                got2.fetch_add(n as u64, Ordering::Release);
            }
        });
        let (mut sent, mut k, mut fi) = (0u64, 0u64, 0usize);
        g.bench_function("ring_vad_frames/1s_audio", |b| {
            b.iter(|| {
                let n = frames_in_second(k, flen);
                for _ in 0..n {
                    if fi == m.frames.len() {
                        fi = 0;
                    }
                    ring::push_all_blocking(&mut prod, &m.frames[fi..fi + 1], &sig, &stop);
                    fi += 1;
                }
                k += 1;
                sent += n as u64;
                while got.load(Ordering::Acquire) < sent {
                    std::hint::spin_loop();
                }
            })
        });
        sig.close();
        let _ = consumer.join();
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
