//! Kaldi-compatible log-mel filterbank features, exactly as CAM++ expects them.
//!
//! Matches `torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, frame_length=25, frame_shift=10,
//! dither=0, sample_frequency=16000)` on input in [-1, 1]: snip_edges framing, per-frame DC removal,
//! pre-emphasis 0.97 (with x[-1] = x[0]), povey window, 512-point power spectrum, 80 triangular bins on
//! the Kaldi mel scale between 20 Hz and 8000 Hz, `ln(max(e, f32::EPSILON))`, no energy term and no
//! mean removal (the embedder subtracts the per-window mean).
//!
//! Numerics: the per-frame preprocessing, the window and the mel weights follow torch's f32 operation
//! order; the FFT (a 256-point complex FFT of packed even/odd samples, unpacked to the 512-point real
//! spectrum) and the mel sums run in f64 so that our own rounding adds nothing. What remains is torch's
//! own f32 FFT rounding, visible only on near-floor bins (max |diff| ~8e-4 on the reference clips).
//!
//! [`Fbank`] computes single frames or whole signals; [`StreamingFbank`] computes each frame exactly once
//! as samples arrive, bit-identical to [`Fbank::compute`] on the concatenated input.

use std::sync::Arc;

use ndarray::Array2;
use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

/// Number of mel bins.
pub const NUM_BINS: usize = 80;
/// Samples per frame (25 ms at 16 kHz).
pub const FRAME_LENGTH: usize = 400;
/// Samples between frame starts (10 ms at 16 kHz).
pub const FRAME_SHIFT: usize = 160;

/// Zero-padded FFT length (next power of two of the frame length).
const FFT_LEN: usize = 512;
/// Complex FFT length used by the real-FFT packing trick.
const HALF: usize = FFT_LEN / 2;
/// Sample rate the features are defined at.
const SAMPLE_FREQ: f64 = 16_000.0;
const LOW_FREQ: f64 = 20.0;
const HIGH_FREQ: f64 = 8_000.0;
const PREEMPH: f32 = 0.97;
const BLACKMAN_POVEY_POWER: f64 = 0.85;

/// Kaldi mel scale.
fn mel_scale(freq: f64) -> f64 {
    1127.0 * (1.0 + freq / 700.0).ln()
}

/// One triangular mel filter over FFT bins `start..start + weights.len()`.
#[derive(Clone, Debug)]
struct MelFilter {
    start: usize,
    weights: Vec<f32>,
}

/// Povey window: `hann(400, periodic=False) ^ 0.85`.
fn povey_window() -> Vec<f32> {
    // Same f32 operation sequence as torch.hann_window(400, periodic=False).pow(0.85): matching torch's
    // rounding here measurably lowers the parity error on near-floor bins.
    let step = (2.0 * std::f64::consts::PI / (FRAME_LENGTH - 1) as f64) as f32;
    (0..FRAME_LENGTH)
        .map(|n| {
            let hann = (n as f32 * step).cos() * -0.5 + 0.5;
            hann.powf(BLACKMAN_POVEY_POWER as f32)
        })
        .collect()
}

/// Kaldi mel banks (as `torchaudio.compliance.kaldi.get_mel_banks`, no VTLN): NUM_BINS filters over
/// FFT bins 0..HALF (the Nyquist bin always has weight 0).
///
/// Evaluated with torch's f32 operation sequence: the lowest filters span only a few FFT bins, and where
/// a filter's edge weight is tiny but the FFT bin under it is loud, f64-exact weights would differ from
/// torchaudio's by ~1e-3 in the log energy.
fn mel_banks() -> Vec<MelFilter> {
    let fft_bin_width = (SAMPLE_FREQ / FFT_LEN as f64) as f32;
    let mel_low = mel_scale(LOW_FREQ);
    let mel_high = mel_scale(HIGH_FREQ);
    let delta = ((mel_high - mel_low) / (NUM_BINS + 1) as f64) as f32;
    let mel_low = mel_low as f32;
    let mel: Vec<f32> = (0..HALF)
        .map(|k| 1127.0f32 * (1.0f32 + (fft_bin_width * k as f32) / 700.0f32).ln())
        .collect();
    (0..NUM_BINS)
        .map(|b| {
            let left = mel_low + b as f32 * delta;
            let center = mel_low + (b as f32 + 1.0) * delta;
            let right = mel_low + (b as f32 + 2.0) * delta;
            let dense: Vec<f32> = mel
                .iter()
                .map(|&m| {
                    let up = (m - left) / (center - left);
                    let down = (right - m) / (right - center);
                    up.min(down).max(0.0)
                })
                .collect();
            let start = dense.iter().position(|&w| w > 0.0).unwrap_or(0);
            let end = dense
                .iter()
                .rposition(|&w| w > 0.0)
                .map_or(start, |e| e + 1);
            MelFilter {
                start,
                weights: dense[start..end].to_vec(),
            }
        })
        .collect()
}

/// Kaldi fbank extractor with precomputed window, mel banks, FFT plan and scratch buffers.
pub struct Fbank {
    window: Vec<f32>,
    banks: Vec<MelFilter>,
    fft: Arc<dyn Fft<f64>>,
    /// `exp(-2 pi i k / 512)` for k in 0..256, used to unpack the real FFT.
    twiddles: Vec<Complex64>,
    frame_buf: Vec<f32>,
    fft_buf: Vec<Complex64>,
    fft_scratch: Vec<Complex64>,
    power: Vec<f64>,
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank")
            .field("num_bins", &NUM_BINS)
            .finish_non_exhaustive()
    }
}

impl Fbank {
    /// Builds the window, mel banks and FFT plan.
    pub fn new() -> Self {
        let fft = FftPlanner::<f64>::new().plan_fft_forward(HALF);
        let scratch_len = fft.get_inplace_scratch_len();
        let twiddles = (0..HALF)
            .map(|k| {
                let angle = -2.0 * std::f64::consts::PI * k as f64 / FFT_LEN as f64;
                Complex64::new(angle.cos(), angle.sin())
            })
            .collect();
        Self {
            window: povey_window(),
            banks: mel_banks(),
            fft,
            twiddles,
            frame_buf: vec![0.0; FRAME_LENGTH],
            fft_buf: vec![Complex64::new(0.0, 0.0); HALF],
            fft_scratch: vec![Complex64::new(0.0, 0.0); scratch_len],
            power: vec![0.0; HALF],
        }
    }

    /// One frame: exactly 400 samples in, 80 raw log-mel energies out (no mean removal). No allocation.
    ///
    /// Only the first [`FRAME_LENGTH`] samples and [`NUM_BINS`] outputs are used; shorter slices panic
    /// (programming error, never input-dependent in this crate).
    pub fn frame(&mut self, samples: &[f32], out: &mut [f32]) {
        let x = &mut self.frame_buf;
        x.copy_from_slice(&samples[..FRAME_LENGTH]);

        // Remove DC offset.
        let mean = x.iter().sum::<f32>() / FRAME_LENGTH as f32;
        x.iter_mut().for_each(|v| *v -= mean);

        // Pre-emphasis with x[-1] = x[0], back to front so each step sees the original previous sample.
        for i in (1..FRAME_LENGTH).rev() {
            x[i] -= PREEMPH * x[i - 1];
        }
        x[0] -= PREEMPH * x[0];

        // Window.
        x.iter_mut()
            .zip(self.window.iter())
            .for_each(|(v, w)| *v *= *w);

        // Real FFT of the zero-padded 512-point frame via a 256-point complex FFT of even/odd pairs.
        for (n, z) in self.fft_buf.iter_mut().enumerate() {
            let (re, im) = (2 * n, 2 * n + 1);
            *z = if im < FRAME_LENGTH {
                Complex64::new(f64::from(x[re]), f64::from(x[im]))
            } else {
                Complex64::new(0.0, 0.0)
            };
        }
        self.fft
            .process_with_scratch(&mut self.fft_buf, &mut self.fft_scratch);
        for k in 0..HALF {
            let zk = self.fft_buf[k];
            let zc = self.fft_buf[(HALF - k) % HALF].conj();
            let even = (zk + zc) * 0.5;
            let diff = (zk - zc) * 0.5;
            // odd = diff / i = -i * diff
            let odd = Complex64::new(diff.im, -diff.re);
            let xk = even + self.twiddles[k] * odd;
            self.power[k] = xk.norm_sqr();
        }

        // Mel energies and log.
        for (o, bank) in out[..NUM_BINS].iter_mut().zip(self.banks.iter()) {
            let e: f64 = self.power[bank.start..bank.start + bank.weights.len()]
                .iter()
                .zip(bank.weights.iter())
                .map(|(p, w)| p * f64::from(*w))
                .sum();
            *o = e.max(f64::from(f32::EPSILON)).ln() as f32;
        }
    }

    /// Whole signal, snip_edges: frames = 1 + (N - 400) / 160 (0 if N < 400). Shape [frames, 80].
    pub fn compute(&mut self, wav: &[f32]) -> Array2<f32> {
        let frames = num_frames(wav.len());
        let mut feats = Array2::<f32>::zeros((frames, NUM_BINS));
        for (i, mut row) in feats.outer_iter_mut().enumerate() {
            let start = i * FRAME_SHIFT;
            let slice = &wav[start..start + FRAME_LENGTH];
            match row.as_slice_mut() {
                Some(out) => self.frame(slice, out),
                None => {
                    // Unreachable for a freshly allocated standard-layout array; kept allocation-free.
                    let mut tmp = [0.0f32; NUM_BINS];
                    self.frame(slice, &mut tmp);
                    row.iter_mut().zip(tmp.iter()).for_each(|(d, s)| *d = *s);
                }
            }
        }
        feats
    }
}

/// Number of snip_edges frames in a signal of `n` samples.
pub fn num_frames(n: usize) -> usize {
    if n < FRAME_LENGTH {
        0
    } else {
        1 + (n - FRAME_LENGTH) / FRAME_SHIFT
    }
}

/// Incremental fbank: each frame is computed exactly once as samples arrive.
/// Frame i covers samples [160 i, 160 i + 400). Keeps only the (< 400) samples still needed.
pub struct StreamingFbank {
    fbank: Fbank,
    /// Samples from the start of the next frame up to the last sample received (always < 400 between calls).
    pending: Vec<f32>,
    frame: Vec<f32>,
    out: Vec<f32>,
    emitted: u64,
}

impl Default for StreamingFbank {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StreamingFbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingFbank")
            .field("pending", &self.pending.len())
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

impl StreamingFbank {
    /// Empty stream at sample 0.
    pub fn new() -> Self {
        Self {
            fbank: Fbank::new(),
            pending: Vec::with_capacity(FRAME_LENGTH),
            frame: vec![0.0; FRAME_LENGTH],
            out: vec![0.0; NUM_BINS],
            emitted: 0,
        }
    }

    /// Appends samples and calls `emit(frame_index, values)` for every frame completed by them, in order.
    /// Does not allocate.
    pub fn push(&mut self, samples: &[f32], mut emit: impl FnMut(u64, &[f32])) {
        let held = self.pending.len();
        let total = held + samples.len();
        // Offset of the next frame start within the virtual sequence pending ++ samples.
        let mut offset = 0usize;
        while offset + FRAME_LENGTH <= total {
            if offset >= held {
                let s = offset - held;
                self.fbank
                    .frame(&samples[s..s + FRAME_LENGTH], &mut self.out);
            } else {
                let from_pending = held - offset;
                self.frame[..from_pending].copy_from_slice(&self.pending[offset..]);
                self.frame[from_pending..].copy_from_slice(&samples[..FRAME_LENGTH - from_pending]);
                self.fbank.frame(&self.frame, &mut self.out);
            }
            emit(self.emitted, &self.out);
            self.emitted += 1;
            offset += FRAME_SHIFT;
        }
        if offset >= held {
            self.pending.clear();
            self.pending.extend_from_slice(&samples[offset - held..]);
        } else {
            self.pending.drain(..offset);
            self.pending.extend_from_slice(samples);
        }
    }

    /// Number of frames emitted so far.
    pub fn frames_emitted(&self) -> u64 {
        self.emitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small deterministic PRNG (xorshift) so tests need no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn uniform(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    #[test]
    fn fbank_mel_banks_shape_and_edges() {
        let banks = mel_banks();
        assert_eq!(banks.len(), NUM_BINS);
        let width = SAMPLE_FREQ / FFT_LEN as f64;
        for b in &banks {
            assert!(!b.weights.is_empty());
            assert!(b.start + b.weights.len() <= HALF);
            assert!(b.weights.iter().all(|&w| (0.0..=1.0).contains(&w)));
        }
        // First filter starts above 20 Hz, last one ends at or below 8000 Hz.
        assert!(banks[0].start as f64 * width > LOW_FREQ);
        let last = &banks[NUM_BINS - 1];
        assert!(((last.start + last.weights.len() - 1) as f64 * width) < HIGH_FREQ);
        // Filter starts are non-decreasing, each peaks below 1 and close to 1 for wide filters.
        for w in banks.windows(2) {
            assert!(w[0].start <= w[1].start);
        }
        let peak = last.weights.iter().cloned().fold(0.0f32, f32::max);
        assert!(peak > 0.9, "peak {peak}");
        // Known values: bin 0 of the lowest filter is 0 (DC excluded), first non-zero FFT bin is 1.
        assert_eq!(banks[0].start, 1);
    }

    #[test]
    fn fbank_types_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Fbank>();
        assert_send::<StreamingFbank>();
    }

    #[test]
    fn fbank_povey_window() {
        let w = povey_window();
        assert_eq!(w.len(), FRAME_LENGTH);
        assert_eq!(w[0], 0.0);
        assert!(w[FRAME_LENGTH - 1].abs() < 1e-6);
        for i in 0..FRAME_LENGTH {
            assert!((w[i] - w[FRAME_LENGTH - 1 - i]).abs() < 1e-6);
        }
        // Maximum 1 near the middle; povey = hann^0.85 > hann off-centre.
        let mid = w[199].max(w[200]);
        assert!((mid - 1.0).abs() < 1e-4);
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * 100.0 / 399.0).cos();
        assert!((w[100] as f64 - hann.powf(0.85)).abs() < 1e-6);
        assert!(w[100] as f64 > hann);
    }

    #[test]
    fn fbank_real_fft_trick_matches_complex_fft() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let x: Vec<f32> = (0..FRAME_LENGTH).map(|_| rng.uniform()).collect();
        let mut fb = Fbank::new();
        let mut out = vec![0.0; NUM_BINS];
        fb.frame(&x, &mut out);
        // Reference: same pipeline with a plain 512-point complex FFT.
        let mut y = x.clone();
        let mean = y.iter().sum::<f32>() / FRAME_LENGTH as f32;
        y.iter_mut().for_each(|v| *v -= mean);
        for i in (1..FRAME_LENGTH).rev() {
            y[i] -= PREEMPH * y[i - 1];
        }
        y[0] -= PREEMPH * y[0];
        let win = povey_window();
        let mut buf: Vec<Complex64> = (0..FFT_LEN)
            .map(|i| {
                let v = if i < FRAME_LENGTH { y[i] * win[i] } else { 0.0 };
                Complex64::new(f64::from(v), 0.0)
            })
            .collect();
        FftPlanner::<f64>::new()
            .plan_fft_forward(FFT_LEN)
            .process(&mut buf);
        for (b, bank) in mel_banks().iter().enumerate() {
            let e: f64 = bank
                .weights
                .iter()
                .enumerate()
                .map(|(j, w)| buf[bank.start + j].norm_sqr() * f64::from(*w))
                .sum();
            let r = e.max(f64::from(f32::EPSILON)).ln() as f32;
            assert!((r - out[b]).abs() < 1e-5, "bin {b}: {r} vs {}", out[b]);
        }
    }

    #[test]
    fn fbank_silence_hits_floor_and_frame_count() {
        let mut fb = Fbank::new();
        let f = fb.compute(&vec![0.0; 1000]);
        assert_eq!(f.dim(), (1 + (1000 - 400) / 160, NUM_BINS));
        assert!(f.iter().all(|&v| (v - f32::EPSILON.ln()).abs() < 1e-6));
        assert_eq!(fb.compute(&[0.0; 399]).dim(), (0, NUM_BINS));
        assert_eq!(fb.compute(&[0.0; 400]).dim(), (1, NUM_BINS));
        assert_eq!(num_frames(559), 1);
        assert_eq!(num_frames(560), 2);
    }

    #[test]
    fn fbank_tone_peaks_in_right_bin() {
        // 1 kHz tone: the strongest mel bin must contain 1 kHz.
        let wav: Vec<f32> = (0..FRAME_LENGTH)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin())
            .collect();
        let mut out = vec![0.0; NUM_BINS];
        Fbank::new().frame(&wav, &mut out);
        let best = (0..NUM_BINS)
            .max_by(|&a, &b| out[a].total_cmp(&out[b]))
            .unwrap_or(0);
        let banks = mel_banks();
        let bin_1k = 1000.0 / (SAMPLE_FREQ / FFT_LEN as f64);
        let b = &banks[best];
        assert!(
            (b.start as f64) <= bin_1k && bin_1k <= (b.start + b.weights.len()) as f64,
            "best bin {best}"
        );
    }

    #[test]
    fn fbank_streaming_is_bit_identical_for_any_chunking() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let wav: Vec<f32> = (0..16_000 + 123).map(|_| 0.3 * rng.uniform()).collect();
        let reference = Fbank::new().compute(&wav);
        for trial in 0..12 {
            let mut s = StreamingFbank::new();
            let mut got: Vec<(u64, Vec<f32>)> = Vec::new();
            let mut pos = 0;
            while pos < wav.len() {
                let len = match (trial, rng.next() % 6) {
                    (0, _) => 1,
                    (_, 0) => 0,
                    (_, 1) => 1,
                    (_, 2) => (rng.next() % 10) as usize,
                    (_, 3) => (rng.next() % 400) as usize,
                    (_, 4) => 160,
                    _ => (rng.next() % 3000) as usize,
                };
                let end = (pos + len).min(wav.len());
                s.push(&wav[pos..end], |i, v| got.push((i, v.to_vec())));
                assert!(s.pending.len() < FRAME_LENGTH);
                pos = end;
            }
            s.push(&[], |i, v| got.push((i, v.to_vec())));
            assert_eq!(got.len(), reference.nrows());
            assert_eq!(s.frames_emitted(), reference.nrows() as u64);
            for (k, (i, v)) in got.iter().enumerate() {
                assert_eq!(*i, k as u64);
                let row = reference.row(k);
                for (a, b) in v.iter().zip(row.iter()) {
                    assert_eq!(a.to_bits(), b.to_bits(), "trial {trial} frame {k}");
                }
            }
        }
    }
}
