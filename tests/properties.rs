//! Property tests (proptest): the ring hand-off between pipeline threads (src/ring.rs), the online clusterer's
//! invariants (src/cluster.rs) and the one-to-one local-to-global mapping (src/assign.rs).

use std::sync::atomic::AtomicBool;

use ndarray::Array2;
use proptest::prelude::*;
use ringbuf::traits::Producer;

use whospoke::assign::{assign_local_to_global, Assignment as Mapped};
use whospoke::cluster::{dot, ClusterConfig, OnlineClusterer};
use whospoke::ring::{pop_wait, push_all_blocking, ring, RingSignal};

// ---------------------------------------------------------------- ring hand-off

/// Runs a consumer thread popping with `pop_buf`-sized reads while the caller pushes `data` in `chunks`.
fn hand_off(data: &[u32], capacity: usize, chunks: &[usize], pop_buf: usize) -> (Vec<u32>, bool) {
    let (mut p, mut c, sig) = ring::<u32>(capacity);
    let sig2 = sig.clone();
    let consumer = std::thread::spawn(move || {
        sig2.register_consumer();
        let mut got = Vec::new();
        let mut buf = vec![0u32; pop_buf];
        while let Some(n) = pop_wait(&mut c, &mut buf, &sig2) {
            assert!(
                n >= 1 && n <= pop_buf,
                "pop_wait returned {n} for a buffer of {pop_buf}"
            );
            got.extend_from_slice(&buf[..n]);
        }
        // Closed and drained: stays so.
        assert_eq!(pop_wait(&mut c, &mut buf, &sig2), None);
        got
    });
    let stop = AtomicBool::new(false);
    let mut rest = data;
    let mut all_pushed = true;
    let mut k = 0;
    while !rest.is_empty() {
        let n = chunks[k % chunks.len()].min(rest.len());
        k += 1;
        all_pushed &= push_all_blocking(&mut p, &rest[..n], &sig, &stop);
        rest = &rest[n..];
    }
    sig.close();
    let got = consumer.join().expect("consumer thread");
    (got, all_pushed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Everything pushed comes out exactly once, in order, across threads, whatever the ring capacity and the
    /// push and pop sizes (including chunks larger than the ring).
    #[test]
    fn ring_hand_off_is_exact_and_ordered(
        len in 0usize..6000,
        capacity in 1usize..300,
        chunks in prop::collection::vec(1usize..700, 1..8),
        pop_buf in 1usize..100,
    ) {
        let data: Vec<u32> = (0..len as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let (got, all_pushed) = hand_off(&data, capacity, &chunks, pop_buf);
        prop_assert!(all_pushed);
        prop_assert_eq!(got, data);
    }

    /// Close semantics without a second thread: items pushed before `close` are all still delivered after it,
    /// then the end (`None`) is reported, repeatedly.
    #[test]
    fn ring_close_delivers_what_was_pushed_then_ends(
        n in 0usize..200,
        pop_buf in 1usize..50,
    ) {
        let (mut p, mut c, sig) = ring::<u32>(256);
        let items: Vec<u32> = (0..n as u32).collect();
        prop_assert_eq!(p.push_slice(&items), n);
        sig.close();
        prop_assert!(sig.is_closed());
        let mut got = Vec::new();
        let mut buf = vec![0u32; pop_buf];
        while let Some(k) = pop_wait(&mut c, &mut buf, &sig) {
            got.extend_from_slice(&buf[..k]);
        }
        prop_assert_eq!(got, items);
        prop_assert_eq!(pop_wait(&mut c, &mut buf, &sig), None);
    }
}

/// A full ring whose consumer is gone (its thread ended or panicked) does not block the producer forever.
#[test]
fn push_into_a_full_ring_without_consumer_gives_up() {
    let (mut p, c, sig) = ring::<u32>(8);
    drop(c);
    let stop = AtomicBool::new(false);
    assert!(!push_all_blocking(&mut p, &[0; 20], &sig, &stop));
}

/// A full ring gives up when `stop` is raised (a file source being stopped by a signal).
#[test]
fn push_into_a_full_ring_stops_on_request() {
    let (mut p, _c, sig) = ring::<u32>(8);
    let stop = AtomicBool::new(true);
    assert!(
        push_all_blocking(&mut p, &[1; 8], &sig, &stop),
        "fits: no wait"
    );
    assert!(!push_all_blocking(&mut p, &[1; 1], &sig, &stop));
}

/// A signal closed before any consumer registered still ends the consumer's wait.
#[test]
fn close_before_register_ends_the_wait() {
    let sig = RingSignal::default();
    sig.close();
    sig.register_consumer();
    sig.wake();
    assert!(sig.is_closed());
}

// ---------------------------------------------------------------- clustering

const DIM: usize = 24;

/// A window: which voice (or a degenerate all-zero vector), a noise vector, and whether it may update.
#[derive(Debug, Clone)]
struct Window {
    voice: Option<usize>,
    noise: Vec<f32>,
    trusted: bool,
}

fn window(voices: usize) -> impl Strategy<Value = Window> {
    (
        prop::option::weighted(0.95, 0..voices),
        prop::collection::vec(-1.0f32..1.0, DIM),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(voice, noise, trusted)| Window {
            voice,
            noise,
            trusted,
        })
}

fn config() -> impl Strategy<Value = ClusterConfig> {
    (
        0.0f32..0.9,
        0.0f32..0.3,
        1usize..5,
        0.5f64..10.0,
        0.0f32..0.9,
        0usize..6,
    )
        .prop_map(|(assign, below, nsw, span, update, max)| ClusterConfig {
            assign_threshold: assign,
            new_speaker_threshold: (assign - below).max(-1.0),
            new_speaker_windows: nsw,
            pending_span: span,
            update_threshold: update,
            max_speakers: max,
        })
}

fn embedding(voices: &[Vec<f32>], w: &Window, noise: f32) -> Vec<f32> {
    match w.voice {
        None => vec![0.0; DIM],
        Some(v) => voices[v]
            .iter()
            .zip(&w.noise)
            .map(|(a, b)| a + noise * b)
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// After every window: never more speakers than `max_speakers`; speakers are created one at a time with the
    /// next index (dense, creation order) and never removed; every assignment is to an existing speaker; centroids
    /// stay unit vectors, one count per speaker; `None` only when no speaker exists and the window cannot start
    /// one; confidences in [0, 1]; `classify` changes nothing.
    #[test]
    fn clusterer_invariants(
        cfg in config(),
        voices in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, DIM), 1..6),
        windows in prop::collection::vec(window(6), 1..80),
        noise in 0.0f32..1.0,
    ) {
        let mut cl = OnlineClusterer::new(cfg.clone()).expect("valid config");
        let mut time = 0.0;
        for w in &windows {
            let w = Window { voice: w.voice.map(|v| v % voices.len()), ..w.clone() };
            let e = embedding(&voices, &w, noise);
            let before = cl.num_speakers();
            let snapshot = cl.centroids().to_vec();
            let classified = cl.classify(&e);
            prop_assert_eq!(cl.centroids(), &snapshot[..], "classify changed the centroids");
            if let Some(a) = classified {
                prop_assert!(a.speaker < before);
            }
            time += 0.75;
            let got = cl.assign(&e, time, w.trusted);
            let after = cl.num_speakers();
            if cfg.max_speakers > 0 {
                prop_assert!(after <= cfg.max_speakers, "{} speakers, cap {}", after, cfg.max_speakers);
            }
            prop_assert!(after == before || after == before + 1, "{} -> {} speakers", before, after);
            prop_assert_eq!(cl.counts().len(), after);
            prop_assert!(cl.counts().iter().all(|&c| c >= 1));
            for c in cl.centroids() {
                prop_assert_eq!(c.len(), DIM);
                let n = dot(c, c);
                prop_assert!((n - 1.0).abs() < 1e-3, "centroid norm^2 {}", n);
            }
            // A voice vector can be all zeros too (with no noise its windows are degenerate).
            let degenerate = !whospoke::cluster::normalize(&mut e.clone());
            match got {
                None => {
                    prop_assert_eq!(before, 0);
                    prop_assert_eq!(after, 0);
                    prop_assert!(degenerate || !w.trusted);
                }
                Some(a) => {
                    prop_assert!(a.speaker < after, "speaker {} of {}", a.speaker, after);
                    match a.created {
                        Some(s) => {
                            prop_assert_eq!(s, before, "a new speaker takes the next index");
                            prop_assert_eq!(after, before + 1);
                            // A short window may complete a group of agreeing far windows (which
                            // holds a trusted one), never start the first speaker.
                            prop_assert!(w.trusted || before > 0, "an untrusted window started the first speaker");
                        }
                        None => prop_assert_eq!(after, before),
                    }
                    prop_assert!(a.similarity.is_finite());
                    let conf = a.confidence();
                    prop_assert!((0.0..=1.0).contains(&conf), "confidence {}", conf);
                }
            }
        }
    }

    /// Identical embeddings from a fresh clusterer all go to one speaker.
    #[test]
    fn identical_embeddings_go_to_one_speaker(
        cfg in config(),
        v in prop::collection::vec(-1.0f32..1.0, DIM),
        n in 1usize..40,
    ) {
        prop_assume!(v.iter().any(|x| x.abs() > 1e-3));
        let mut cl = OnlineClusterer::new(cfg).expect("valid config");
        for i in 0..n {
            let a = cl.assign(&v, i as f64 * 0.75, true).expect("a speaker");
            prop_assert_eq!(a.speaker, 0);
        }
        prop_assert_eq!(cl.num_speakers(), 1);
    }

    /// After any history, a voice repeated over and over settles on one speaker, and stays there.
    #[test]
    fn a_repeated_embedding_settles_on_one_speaker(
        cfg in config(),
        voices in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, DIM), 1..5),
        windows in prop::collection::vec(window(5), 0..40),
        v in prop::collection::vec(-1.0f32..1.0, DIM),
    ) {
        prop_assume!(v.iter().any(|x| x.abs() > 1e-3));
        let mut cl = OnlineClusterer::new(cfg.clone()).expect("valid config");
        let mut time = 0.0;
        for w in &windows {
            let w = Window { voice: w.voice.map(|k| k % voices.len()), ..w.clone() };
            time += 0.75;
            cl.assign(&embedding(&voices, &w, 0.3), time, w.trusted);
        }
        let reps = 3 * cfg.new_speaker_windows + 3;
        let mut got = Vec::new();
        for _ in 0..reps {
            time += 0.25;
            got.push(cl.assign(&v, time, true).expect("a speaker").speaker);
        }
        let tail = &got[got.len() - 3..];
        prop_assert!(tail.iter().all(|&s| s == tail[0]), "assignments {:?}", got);
    }
}

// ---------------------------------------------------------------- one-to-one mapping (src/assign.rs)

/// Brute force: the minimum total cost over all one-to-one maps of the active rows onto the columns
/// (`ng` existing speakers, then `n_new` new-speaker slots, then unassigned slots).
fn brute_min(cost: &Array2<f32>, rows: &[usize], ng: usize, n_new: usize, new_th: f32) -> f64 {
    let n_dummy = rows.len().saturating_sub(ng + n_new);
    let cols = ng + n_new + n_dummy;
    let col_cost = |r: usize, c: usize| -> f64 {
        if c < ng {
            f64::from(cost[[rows[r], c]])
        } else if c < ng + n_new {
            f64::from(new_th)
        } else {
            4.0e3
        }
    };
    fn go(r: usize, used: &mut Vec<bool>, n: usize, f: &dyn Fn(usize, usize) -> f64) -> f64 {
        if r == n {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for c in 0..used.len() {
            if !used[c] {
                used[c] = true;
                best = best.min(f(r, c) + go(r + 1, used, n, f));
                used[c] = false;
            }
        }
        best
    }
    go(0, &mut vec![false; cols], rows.len(), &col_cost)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// One result per local; inactive locals are `Inactive` and active ones never are; no two locals share a
    /// global speaker; at most `max_new` new speakers; exactly the surplus beyond existing + new slots is
    /// `Unassigned`; and the total distance is the minimum over all one-to-one maps (brute force).
    #[test]
    fn mapping_is_one_to_one_and_optimal(
        nl in 0usize..4,
        ng in 0usize..6,
        values in prop::collection::vec(0.0f32..2.0, 24),
        active in prop::collection::vec(any::<bool>(), 4),
        max_new in 0usize..4,
        new_th in 0.0f32..2.0,
    ) {
        let cost = Array2::from_shape_fn((nl, ng), |(l, g)| values[l * 6 + g]);
        let active = &active[..nl];
        let a = assign_local_to_global(cost.view(), active, max_new, new_th);
        prop_assert_eq!(a.len(), nl);
        let rows: Vec<usize> = (0..nl).filter(|&l| active[l]).collect();
        let mut seen = vec![false; ng];
        let mut total = 0.0f64;
        let (mut n_new, mut n_unassigned) = (0, 0);
        for (l, m) in a.iter().enumerate() {
            prop_assert_eq!(*m == Mapped::Inactive, !active[l]);
            match *m {
                Mapped::Global(g) => {
                    prop_assert!(g < ng);
                    prop_assert!(!seen[g], "global {} given twice: {:?}", g, a);
                    seen[g] = true;
                    total += f64::from(cost[[l, g]]);
                }
                Mapped::New => {
                    n_new += 1;
                    total += f64::from(new_th);
                }
                Mapped::Unassigned => {
                    n_unassigned += 1;
                    total += 4.0e3;
                }
                Mapped::Inactive => {}
            }
        }
        let slots = rows.len().min(max_new);
        prop_assert!(n_new <= max_new);
        prop_assert_eq!(n_unassigned, rows.len().saturating_sub(ng + slots));
        let best = brute_min(&cost, &rows, ng, slots, new_th);
        prop_assert!((total - best).abs() < 1e-4, "total {} but the best map costs {}: {:?}", total, best, a);
    }
}

/// A producer that goes away without closing (its thread panicked) still ends the consumer's wait, after
/// everything it pushed.
#[test]
fn consumer_ends_when_the_producer_is_dropped_unclosed() {
    let (mut p, mut c, sig) = ring::<u32>(16);
    let stop = AtomicBool::new(false);
    assert!(push_all_blocking(&mut p, &[1, 2, 3], &sig, &stop));
    drop(p);
    let mut buf = [0u32; 8];
    assert_eq!(pop_wait(&mut c, &mut buf, &sig), Some(3));
    assert_eq!(&buf[..3], &[1, 2, 3]);
    assert_eq!(pop_wait(&mut c, &mut buf, &sig), None);
}
