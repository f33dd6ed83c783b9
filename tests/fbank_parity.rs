//! Parity of `whospoke::fbank` with torchaudio.compliance.kaldi.fbank (CAM++ settings) on real speech.

use std::path::{Path, PathBuf};

use whospoke::fbank::{Fbank, StreamingFbank, NUM_BINS};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/campplus-ref")
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(bytes.len() % 4, 0, "{} is not f32 data", path.display());
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn fbank_matches_torchaudio_kaldi() {
    let mut fbank = Fbank::new();
    for clip in ["clip0", "clip1"] {
        let wav = read_f32(&data_dir().join(format!("{clip}_wav.f32")));
        let reference = read_f32(&data_dir().join(format!("{clip}_fbank_raw.f32")));
        assert_eq!(wav.len(), 48_000);
        assert_eq!(reference.len(), 298 * NUM_BINS);

        let feats = fbank.compute(&wav);
        assert_eq!(feats.dim(), (298, NUM_BINS));
        let (arg, max_diff) = feats
            .iter()
            .zip(reference.iter())
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .fold(
                (0, 0.0f32),
                |best, (i, d)| if d > best.1 { (i, d) } else { best },
            );
        println!(
            "{clip}: worst at frame {} bin {}: ours {} torchaudio {}",
            arg / NUM_BINS,
            arg % NUM_BINS,
            feats[[arg / NUM_BINS, arg % NUM_BINS]],
            reference[arg]
        );
        let mean_diff = feats
            .iter()
            .zip(reference.iter())
            .map(|(a, b)| f64::from((a - b).abs()))
            .sum::<f64>()
            / reference.len() as f64;
        println!("{clip}: max |diff| = {max_diff:e}, mean |diff| = {mean_diff:e}");
        assert!(max_diff <= 1e-3, "{clip}: max |diff| {max_diff} > 1e-3");

        // The streaming path gives the same numbers bit for bit.
        let mut streaming = StreamingFbank::new();
        let mut rows = 0usize;
        for chunk in wav.chunks(333) {
            streaming.push(chunk, |i, v| {
                let row = feats.row(i as usize);
                assert!(v
                    .iter()
                    .zip(row.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
                rows += 1;
            });
        }
        assert_eq!(rows, 298);
    }
}
