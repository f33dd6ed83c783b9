//! `decode::open_raw` over arbitrary bytes: the first two bytes pick the sample format, channel count and rate;
//! the rest is the stream, delivered in reads of varying size. Must never panic; samples must be finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whospoke::decode::{open_raw, InputFormat, RawSampleFormat};

/// Hands out `data` in reads of 1..=`step` bytes.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl std::io::Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        self.step = self.step % 7 + 1;
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let sf = match data[0] & 3 {
        0 => RawSampleFormat::S16Le,
        1 => RawSampleFormat::S32Le,
        2 => RawSampleFormat::F32Le,
        _ => RawSampleFormat::U8,
    };
    let channels = ((data[0] >> 2) & 7) as u16; // 0..=7: 0 must be refused
    let rate = [0u32, 8000, 16000, 44100, 48000, 384_000, 384_001, u32::MAX][(data[1] & 7) as usize];
    let reader = Chunked {
        data: data[2..].to_vec(),
        pos: 0,
        step: (data[1] >> 3) as usize + 1,
    };
    let fmt = InputFormat {
        sample_rate: rate,
        channels,
    };
    let Ok(mut src) = open_raw(Box::new(reader), "fuzz", fmt, sf) else {
        assert!(fmt.validate("fuzz").is_err(), "valid format refused: {fmt:?}");
        return;
    };
    let mut out = Vec::new();
    let mut frames = 0usize;
    loop {
        let before = out.len();
        match src.read(&mut out) {
            Ok(0) => break,
            Ok(n) => {
                assert_eq!(out.len() - before, n * channels as usize);
                frames += n;
            }
            Err(_) => break,
        }
    }
    assert_eq!(frames, (data.len() - 2) / (sf.bytes() * channels as usize));
    assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
});
