//! Experiment helper (not part of the product; scripts/experiments/detection/README.md): dumps, for each recording given, the per-tick
//! (10 ms) inputs of the turn stage's speech decision: smoothed webrtc-vad flag, frame power,
//! segmentation P(speech) and P(overlap). `cargo run --release --example dump_ticks OUT_DIR FILE...`
use std::io::Write;
use whospoke::turns::Analysis;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(std::path::PathBuf::from) else {
        anyhow::bail!("usage: dump_ticks OUT_DIR FILE...");
    };
    std::fs::create_dir_all(&out)?;
    let models = whospoke::runtime::locate_models(None)?;
    let cfg = whospoke::pipeline::Config::default();
    for f in &args[1..] {
        let p = std::path::Path::new(f);
        let msgs = whospoke::tune::record(p, &cfg, &models)?;
        let mut vad: Vec<(u8, f32)> = Vec::new();
        let mut seg: Vec<(f32, f32)> = Vec::new();
        for m in &msgs {
            match m {
                Analysis::Frame {
                    start,
                    end,
                    speech,
                    power,
                    ..
                } => {
                    let (a, b) = ((*start / 160) as usize, (*end / 160) as usize);
                    if vad.len() < b {
                        vad.resize(b, (0, 0.0));
                    }
                    for v in &mut vad[a..b] {
                        *v = (u8::from(*speech), *power);
                    }
                }
                Analysis::Activity {
                    first_tick, values, ..
                } => {
                    let a = *first_tick as usize;
                    if seg.len() < a + values.len() {
                        seg.resize(a + values.len(), (-1.0, -1.0));
                    }
                    seg[a..a + values.len()].copy_from_slice(values);
                }
                _ => {}
            }
        }
        let stem = p
            .file_stem()
            .map_or_else(|| f.clone(), |s| s.to_string_lossy().into_owned());
        let mut w =
            std::io::BufWriter::new(std::fs::File::create(out.join(format!("{stem}.tsv")))?);
        for (i, (v, pw)) in vad.iter().enumerate() {
            let (ps, po) = seg.get(i).copied().unwrap_or((-1.0, -1.0));
            writeln!(w, "{v}\t{pw:.6}\t{ps:.4}\t{po:.4}")?;
        }
        eprintln!("{stem}: {} ticks", vad.len());
    }
    Ok(())
}
