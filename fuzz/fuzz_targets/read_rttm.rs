//! `eval::read_rttm` on arbitrary text (through a temp file): must return Ok or a clean error, never panic; what
//! it accepts must be scorable against itself with zero error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whospoke::eval::{evaluate_segments, read_rttm, EvalOptions};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("whospoke-fuzz-rttm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("input.rttm");
    std::fs::write(&path, data).unwrap();
    if let Ok(rttm) = read_rttm(&path) {
        let opts = EvalOptions::default();
        let _ = evaluate_segments(&rttm, &rttm, &opts);
    }
});
