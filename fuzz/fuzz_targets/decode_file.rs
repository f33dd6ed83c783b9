//! `decode::open_file` on arbitrary bytes written to a temp file (with a .wav, .flac, .mp3 or .ogg name, so the
//! extension hint varies), then decoded to the end. Must never panic, and samples must be finite in [-1, 1].
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use whospoke::decode::open_file;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's hook aborts on every panic, even one whospoke catches (decode.rs wraps symphonia's probe in
    // catch_unwind). Put the default hook back: a panic that escapes open_file/read still aborts (libfuzzer-sys
    // catches it at the target boundary) and is reported as a crash.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let _ = std::panic::take_hook();
    });
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let ext = ["wav", "flac", "mp3", "ogg"][(sel & 3) as usize];
    let dir = std::env::temp_dir().join(format!("whospoke-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("input.{ext}"));
    {
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
    }
    if let Ok(mut src) = open_file(&path) {
        let fmt = src.format();
        assert!(fmt.validate("fuzz").is_ok(), "opened with {fmt:?}");
        let mut out = Vec::new();
        // Bounded: a tiny file can declare hours of audio; 4 M samples is plenty to exercise the decoder.
        while out.len() < 4_000_000 {
            let before = out.len();
            match src.read(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(n) => assert_eq!(out.len() - before, n * fmt.channels as usize),
            }
            assert!(out[before..].iter().all(|s| s.is_finite() && s.abs() <= 1.0));
        }
    }
});
