//! Downmix to mono and resample to 16 kHz, time-aligned.
//!
//! Output sample `n` corresponds to input time `n / 16000` s: the resampler's filter delay is removed, and
//! after [`Resampler::finish`] the output holds exactly `round(frames_in * 16000 / in_rate)` samples.
//!
//! Engines (all from `rubato`, run on fixed-size chunks so the output does not depend on how the caller
//! splits its input):
//! - 16 kHz input: pass-through (downmix only).
//! - Rates whose ratio to 16 kHz is a "small" fraction (every common rate, and odd ones like 37800):
//!   `FftFixedInOut`, a synchronous FFT resampler with a long BlackmanHarris2 sinc anti-aliasing filter.
//!   Its delay is exactly half an output block, which is dropped, so alignment is exact.
//! - Other rates (e.g. 44101, whose FFT block would be seconds long): `SincFixedIn` (sinc length 128,
//!   cubic interpolation between 256 sub-phases). Its timing is calibrated by prepending `k` zeros and
//!   dropping `d` outputs, with (k, d) chosen to leave the smallest sub-sample misalignment.

use rubato::{
    calculate_cutoff, FftFixedInOut, Resampler as _, SincFixedIn, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use crate::{Error, Result, SAMPLE_RATE};

/// Highest accepted input rate.
pub const MAX_INPUT_RATE: u32 = 384_000;
/// Target block length of the FFT engine (seconds of input); smaller = lower latency.
const FFT_BLOCK_SECONDS: f64 = 0.02;
/// Longest acceptable FFT block (seconds of input) before falling back to the sinc engine.
const FFT_BLOCK_MAX_SECONDS: f64 = 0.1;
const SINC_LEN: usize = 128;
const SINC_OVERSAMPLING: usize = 256;
/// Input chunk of the sinc engine (seconds).
const SINC_CHUNK_SECONDS: f64 = 0.01;
/// Largest number of leading outputs the sinc engine may drop to improve its alignment.
const SINC_MAX_DROP: usize = 512;

enum Engine {
    PassThrough,
    Fft(Box<FftFixedInOut<f32>>),
    Sinc(Box<SincFixedIn<f32>>),
}

/// Downmix interleaved input to mono and resample to 16 kHz; output time-aligned (filter delay compensated:
/// output sample n corresponds to input time n / 16000 s). No allocation per call after construction
/// (apart from growing the caller's `out`).
pub struct Resampler {
    in_rate: u32,
    channels: usize,
    engine: Engine,
    /// Mono input waiting for a full engine chunk.
    acc: Vec<f32>,
    /// Engine input chunk length (frames).
    chunk_in: usize,
    /// Engine output scratch.
    obuf: Vec<f32>,
    /// Zeros put in front of the input (sinc engine alignment).
    lead_zeros: usize,
    /// Leading engine outputs to discard (delay compensation).
    drop_initial: usize,
    /// Outputs still to discard.
    to_drop: usize,
    /// Partially received interleaved frame: running sum and number of channels seen.
    part_sum: f32,
    part_fill: usize,
    /// Complete input frames received since construction / the last `finish`.
    frames_in: u64,
    /// Samples appended to callers' `out` since construction / the last `finish`.
    emitted: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = match self.engine {
            Engine::PassThrough => "pass-through",
            Engine::Fft(_) => "fft",
            Engine::Sinc(_) => "sinc",
        };
        f.debug_struct("Resampler")
            .field("in_rate", &self.in_rate)
            .field("channels", &self.channels)
            .field("engine", &engine)
            .field("chunk_in", &self.chunk_in)
            .finish_non_exhaustive()
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Builds the FFT engine if its block can be short and of even length (even => delay exactly half a block).
fn try_fft_engine(in_rate: u32) -> Result<Option<FftFixedInOut<f32>>> {
    let g = gcd(u64::from(in_rate), u64::from(SAMPLE_RATE));
    let min_in = u64::from(in_rate) / g;
    let min_out = u64::from(SAMPLE_RATE) / g;
    let target = (f64::from(in_rate) * FFT_BLOCK_SECONDS).ceil() as u64;
    let mut blocks = target.div_ceil(min_in).max(1);
    if (blocks * min_in) % 2 == 1 || (blocks * min_out) % 2 == 1 {
        blocks *= 2;
    }
    let fft_in = blocks * min_in;
    if fft_in as f64 > f64::from(in_rate) * FFT_BLOCK_MAX_SECONDS {
        return Ok(None);
    }
    let engine =
        FftFixedInOut::<f32>::new(in_rate as usize, SAMPLE_RATE as usize, fft_in as usize, 1)
            .map_err(|e| Error::Config(format!("cannot build resampler for {in_rate} Hz: {e}")))?;
    // rubato derives the block size itself; only accept it if it is what we asked for (even sizes).
    if engine.input_frames_next() as u64 != fft_in
        || engine.output_frames_next() as u64 != blocks * min_out
    {
        return Ok(None);
    }
    Ok(Some(engine))
}

/// Chooses (leading zeros k, dropped outputs d) for the sinc engine.
///
/// rubato 0.16's `SincFixedIn` maps raw output n to input time `(n + 1) / ratio - 1 + 1 / oversampling`
/// (in input samples; measured and derived from its source; its `output_delay()` does not describe this).
/// With k zeros in front and d outputs dropped, output m maps to `m / ratio + residual` where
/// `residual = (d + 1) / ratio - 1 + 1 / oversampling - k`; pick the pair with the smallest |residual|.
/// `k` stays below `chunk` so the leading zeros fit in the first engine chunk.
fn sinc_alignment(in_rate: u32, chunk: usize) -> (usize, usize, f64) {
    let inv_ratio = f64::from(in_rate) / f64::from(SAMPLE_RATE);
    // Very low input rates need many output samples per input sample to reach a non-negative shift.
    let max_drop = SINC_MAX_DROP.max(2 * (SAMPLE_RATE / in_rate.max(1)) as usize + 2);
    let mut best = (0usize, 0usize, f64::INFINITY);
    for d in 0..=max_drop {
        let shift = (d + 1) as f64 * inv_ratio - 1.0 + 1.0 / SINC_OVERSAMPLING as f64;
        let k = shift.round().max(0.0);
        if k >= chunk as f64 {
            break;
        }
        let residual = shift - k;
        if residual.abs() < best.2.abs() - 1e-9 {
            best = (k as usize, d, residual);
        }
    }
    best
}

impl Resampler {
    /// Resampler for `channels` interleaved channels at `in_rate` Hz.
    /// Errors ([`Error::Config`]) for a zero rate, zero channels or a rate above 384 kHz.
    pub fn new(in_rate: u32, channels: u16) -> Result<Self> {
        if in_rate == 0 || in_rate > MAX_INPUT_RATE {
            return Err(Error::Config(format!(
                "input sample rate {in_rate} Hz is not supported (expected 1..={MAX_INPUT_RATE})"
            )));
        }
        if channels == 0 {
            return Err(Error::Config(
                "input has 0 channels (expected at least 1)".into(),
            ));
        }
        let (engine, chunk_in, lead_zeros, drop_initial) = if in_rate == SAMPLE_RATE {
            (Engine::PassThrough, 0, 0, 0)
        } else if let Some(fft) = try_fft_engine(in_rate)? {
            let chunk = fft.input_frames_next();
            let delay = fft.output_delay();
            (Engine::Fft(Box::new(fft)), chunk, 0, delay)
        } else {
            let chunk = ((f64::from(in_rate) * SINC_CHUNK_SECONDS).ceil() as usize).max(64);
            let params = SincInterpolationParameters {
                sinc_len: SINC_LEN,
                f_cutoff: calculate_cutoff(SINC_LEN, WindowFunction::BlackmanHarris2),
                oversampling_factor: SINC_OVERSAMPLING,
                interpolation: SincInterpolationType::Cubic,
                window: WindowFunction::BlackmanHarris2,
            };
            let ratio = f64::from(SAMPLE_RATE) / f64::from(in_rate);
            let sinc = SincFixedIn::<f32>::new(ratio, 1.0, params, chunk, 1).map_err(|e| {
                Error::Config(format!("cannot build resampler for {in_rate} Hz: {e}"))
            })?;
            let (k, d, residual) = sinc_alignment(in_rate, chunk);
            tracing::debug!(
                in_rate,
                lead_zeros = k,
                dropped = d,
                residual_input_samples = residual,
                "sinc resampler alignment"
            );
            (Engine::Sinc(Box::new(sinc)), chunk, k, d)
        };
        let obuf_len = match &engine {
            Engine::PassThrough => 0,
            Engine::Fft(r) => r.output_frames_max(),
            Engine::Sinc(r) => r.output_frames_max(),
        };
        let mut acc = Vec::with_capacity(chunk_in.max(lead_zeros));
        acc.resize(lead_zeros, 0.0);
        tracing::debug!(in_rate, channels, chunk_in, "resampler ready");
        Ok(Self {
            in_rate,
            channels: usize::from(channels),
            engine,
            acc,
            chunk_in,
            obuf: vec![0.0; obuf_len],
            lead_zeros,
            drop_initial,
            to_drop: drop_initial,
            part_sum: 0.0,
            part_fill: 0,
            frames_in: 0,
            emitted: 0,
        })
    }

    /// Input sample rate.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// Input channel count.
    pub fn channels(&self) -> u16 {
        self.channels as u16
    }

    /// Downmixes and resamples `interleaved` (any length, frames may be split across calls) and appends the
    /// 16 kHz output that is final so far to `out`.
    pub fn process(&mut self, interleaved: &[f32], out: &mut Vec<f32>) {
        let ch = self.channels;
        let mut rest = interleaved;
        // Complete a frame split across calls.
        if self.part_fill > 0 {
            let take = (ch - self.part_fill).min(rest.len());
            for &s in &rest[..take] {
                self.part_sum += s;
            }
            self.part_fill += take;
            rest = &rest[take..];
            if self.part_fill < ch {
                return;
            }
            let mono = self.part_sum / ch as f32;
            self.part_sum = 0.0;
            self.part_fill = 0;
            self.push_mono(mono, out);
        }
        let whole = rest.len() / ch * ch;
        let (frames, tail) = rest.split_at(whole);
        if ch == 1 {
            self.push_mono_slice(frames, out);
        } else {
            for frame in frames.chunks_exact(ch) {
                // Same summation order as the split-frame path, so results do not depend on chunking.
                let mut sum = 0.0f32;
                for &s in frame {
                    sum += s;
                }
                self.push_mono(sum / ch as f32, out);
            }
        }
        for &s in tail {
            self.part_sum += s;
            self.part_fill += 1;
        }
    }

    /// Flushes the tail: after this the total output since construction (or the previous `finish`) is
    /// exactly `round(frames_in * 16000 / in_rate)` samples. A trailing incomplete frame is discarded.
    /// The resampler is then reset and can take a new stream.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let expected = (u128::from(self.frames_in) * u128::from(SAMPLE_RATE)
            + u128::from(self.in_rate / 2))
            / u128::from(self.in_rate);
        let expected = expected as u64;
        if !matches!(self.engine, Engine::PassThrough) {
            while self.emitted < expected {
                self.acc.resize(self.chunk_in, 0.0);
                let need = expected - self.emitted;
                if self.run_chunk(out, need) == 0 {
                    break;
                }
            }
            // Only reachable if the engine failed (logged in run_chunk): keep the length contract.
            while self.emitted < expected {
                out.push(0.0);
                self.emitted += 1;
            }
        }
        self.reset();
    }

    fn reset(&mut self) {
        match &mut self.engine {
            Engine::PassThrough => {}
            Engine::Fft(r) => r.reset(),
            Engine::Sinc(r) => r.reset(),
        }
        self.acc.clear();
        self.acc.resize(self.lead_zeros, 0.0);
        self.to_drop = self.drop_initial;
        self.part_sum = 0.0;
        self.part_fill = 0;
        self.frames_in = 0;
        self.emitted = 0;
    }

    #[inline]
    fn push_mono(&mut self, s: f32, out: &mut Vec<f32>) {
        self.frames_in += 1;
        if matches!(self.engine, Engine::PassThrough) {
            out.push(s);
            self.emitted += 1;
            return;
        }
        self.acc.push(s);
        if self.acc.len() == self.chunk_in {
            self.run_chunk(out, u64::MAX);
        }
    }

    fn push_mono_slice(&mut self, mut samples: &[f32], out: &mut Vec<f32>) {
        self.frames_in += samples.len() as u64;
        if matches!(self.engine, Engine::PassThrough) {
            out.extend_from_slice(samples);
            self.emitted += samples.len() as u64;
            return;
        }
        while !samples.is_empty() {
            let take = (self.chunk_in - self.acc.len()).min(samples.len());
            self.acc.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.acc.len() == self.chunk_in {
                self.run_chunk(out, u64::MAX);
            }
        }
    }

    /// Resamples the full `acc` chunk, appends at most `limit` output samples (after the initial drop).
    /// Returns the number of samples the engine produced (before dropping/limiting).
    fn run_chunk(&mut self, out: &mut Vec<f32>, limit: u64) -> usize {
        let input = std::slice::from_ref(&self.acc);
        let output = std::slice::from_mut(&mut self.obuf);
        let result = match &mut self.engine {
            Engine::PassThrough => Ok((0, 0)),
            Engine::Fft(r) => r.process_into_buffer(input, output, None),
            Engine::Sinc(r) => r.process_into_buffer(input, output, None),
        };
        self.acc.clear();
        let produced = match result {
            Ok((_, n)) => n,
            Err(e) => {
                // Buffers are sized from the engine itself, so this indicates a bug; never panic on audio.
                tracing::error!(error = %e, "resampler chunk failed; chunk dropped");
                0
            }
        };
        let skip = self.to_drop.min(produced);
        self.to_drop -= skip;
        let avail = (produced - skip) as u64;
        let n = avail.min(limit) as usize;
        out.extend_from_slice(&self.obuf[skip..skip + n]);
        self.emitted += n as u64;
        produced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(rate: u32, freq: f64, secs: f64, amp: f64) -> Vec<f32> {
        let n = (f64::from(rate) * secs).round() as usize;
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    fn run(rate: u32, channels: u16, input: &[f32], chunk: usize) -> Vec<f32> {
        let mut r = Resampler::new(rate, channels).expect("valid rate");
        let mut out = Vec::new();
        if chunk == 0 {
            r.process(input, &mut out);
        } else {
            for c in input.chunks(chunk) {
                r.process(c, &mut out);
            }
        }
        r.finish(&mut out);
        out
    }

    fn expected_len(n: usize, rate: u32) -> usize {
        (n as f64 * 16000.0 / f64::from(rate)).round() as usize
    }

    /// SNR (dB) of `got` against an ideal 16 kHz sine, skipping `margin` samples at both ends.
    fn snr_vs_ideal(got: &[f32], freq: f64, amp: f64, margin: usize) -> f64 {
        let (mut sig, mut err) = (0.0f64, 0.0f64);
        for (i, &v) in got.iter().enumerate().take(got.len() - margin).skip(margin) {
            let ideal = amp * (2.0 * PI * freq * i as f64 / 16000.0).sin();
            sig += ideal * ideal;
            err += (f64::from(v) - ideal).powi(2);
        }
        10.0 * (sig / err).log10()
    }

    const RATES: [u32; 11] = [
        8000, 11025, 16000, 22050, 32000, 37800, 44100, 44101, 48000, 96000, 384000,
    ];

    #[test]
    fn resample_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Resampler>();
    }

    #[test]
    fn resample_rejects_bad_config() {
        assert!(matches!(Resampler::new(0, 1), Err(Error::Config(_))));
        assert!(matches!(Resampler::new(48000, 0), Err(Error::Config(_))));
        assert!(matches!(Resampler::new(384_001, 2), Err(Error::Config(_))));
        assert!(Resampler::new(384_000, 2).is_ok());
        assert!(Resampler::new(1, 1).is_ok());
    }

    #[test]
    fn resample_length_after_finish() {
        for rate in RATES {
            for n in [0usize, 1, 7, 1000, rate as usize / 3 + 17] {
                let input = vec![0.1f32; n];
                let out = run(rate, 1, &input, 0);
                let want = expected_len(n, rate);
                assert!(
                    out.len().abs_diff(want) <= 1,
                    "rate {rate} n {n}: {} vs {want}",
                    out.len()
                );
            }
        }
    }

    #[test]
    fn resample_click_is_time_aligned() {
        for rate in RATES {
            let n = rate as usize; // 1 s
            for t in [0.2f64, 0.53711] {
                let mut input = vec![0.0f32; n];
                let at = (t * f64::from(rate)).round() as usize;
                input[at] = 1.0;
                let out = run(rate, 1, &input, 1000);
                let peak = out
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .map_or(0, |(i, _)| i);
                let want = at as f64 * 16000.0 / f64::from(rate);
                assert!(
                    (peak as f64 - want).abs() <= 2.0,
                    "rate {rate}: click at {want:.2} appeared at {peak}"
                );
            }
        }
    }

    #[test]
    fn resample_sine_snr_and_alignment() {
        // 1 kHz at 48 kHz vs the ideal 16 kHz sine (tests alignment as well as quality).
        for rate in [48000u32, 44100, 22050, 8000, 37800, 96000, 44101] {
            let out = run(rate, 1, &sine(rate, 1000.0, 1.0, 0.5), 4096);
            assert_eq!(out.len(), 16000);
            let snr = snr_vs_ideal(&out, 1000.0, 0.5, 800);
            println!("rate {rate}: 1 kHz SNR {snr:.1} dB");
            let floor = if rate == 44101 { 40.0 } else { 60.0 };
            assert!(snr > floor, "rate {rate}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn resample_anti_aliasing() {
        for (rate, freq) in [
            (48000u32, 10000.0),
            (44100, 9000.0),
            (96000, 30000.0),
            (44101, 10000.0),
        ] {
            let input = sine(rate, freq, 1.0, 0.5);
            let out = run(rate, 1, &input, 0);
            let rms_in = (input.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
                / input.len() as f64)
                .sqrt();
            let body = &out[800..out.len() - 800];
            let rms_out = (body.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
                / body.len() as f64)
                .sqrt();
            let att = 20.0 * (rms_in / rms_out.max(1e-20)).log10();
            println!("rate {rate}: {freq} Hz attenuated {att:.1} dB");
            assert!(
                att > 40.0,
                "rate {rate}: {freq} Hz only attenuated {att:.1} dB"
            );
        }
    }

    #[test]
    fn resample_stereo_downmix() {
        // Left = sine, right = -sine + 0.2: mono must be the constant 0.1.
        for rate in [16000u32, 48000] {
            let s = sine(rate, 440.0, 0.5, 0.5);
            let inter: Vec<f32> = s.iter().flat_map(|&v| [v, 0.2 - v]).collect();
            let out = run(rate, 2, &inter, 0);
            assert_eq!(out.len(), rate as usize / 2 * 16000 / rate as usize);
            for &v in &out[400..out.len() - 400] {
                assert!((v - 0.1).abs() < 1e-3, "rate {rate}: {v}");
            }
        }
        // Pass-through downmix is exact.
        let out = run(16000, 3, &[0.3, 0.6, 0.0, 1.0, 1.0, 1.0, 0.5], 1);
        assert_eq!(out.len(), 2);
        assert!((out[0] - 0.3).abs() < 1e-6 && (out[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn resample_chunking_independent() {
        for rate in [16000u32, 44100, 48000, 8000, 44101] {
            let s = sine(rate, 700.0, 0.7, 0.4);
            let inter: Vec<f32> = s.iter().flat_map(|&v| [v, 0.5 * v]).collect();
            let reference = run(rate, 2, &inter, 0);
            for chunk in [1usize, 3, 160, 999, 100_000] {
                let got = run(rate, 2, &inter, chunk);
                assert_eq!(got.len(), reference.len(), "rate {rate} chunk {chunk}");
                let diff = got
                    .iter()
                    .zip(reference.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff <= 1e-6, "rate {rate} chunk {chunk}: diff {diff}");
            }
        }
    }

    #[test]
    fn resample_no_growth_after_warmup_and_reuse_after_finish() {
        let mut r = Resampler::new(44100, 2).expect("valid");
        let input = vec![0.25f32; 2 * 44100];
        let mut out = Vec::new();
        r.process(&input, &mut out);
        let (acc_cap, obuf_len) = (r.acc.capacity(), r.obuf.len());
        for c in input.chunks(777) {
            r.process(c, &mut out);
        }
        assert_eq!(r.acc.capacity(), acc_cap);
        assert_eq!(r.obuf.len(), obuf_len);
        r.finish(&mut out);
        assert_eq!(out.len(), 2 * 16000);
        let mut again = Vec::new();
        r.process(&input, &mut again);
        r.finish(&mut again);
        assert_eq!(again.len(), 16000);
        // Same input prefix after a reset gives the same output prefix, bit for bit.
        assert_eq!(&again[..8000], &out[..8000]);
    }
}
