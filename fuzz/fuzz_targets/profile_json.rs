//! `profiles::Profile::from_json` on arbitrary text (a voice profile file is read from disk at every run): must
//! return Ok or a clean error, never panic. What it accepts must satisfy the documented checks (a non-empty name,
//! a centroid of EMBEDDING_DIM finite values), survive a write/read round trip unchanged, and merge with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whospoke::embed::EMBEDDING_DIM;
use whospoke::profiles::Profile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Profile::from_json(text, "fuzz input") else {
        return;
    };
    assert!(!p.name.trim().is_empty());
    assert_eq!(p.centroid.len(), EMBEDDING_DIM);
    assert!(p.centroid.iter().all(|x| x.is_finite()));
    let again =
        Profile::from_json(&p.to_json(), "round trip").expect("a written profile reads back");
    assert_eq!(again.name, p.name);
    assert_eq!(again.centroid, p.centroid);
    let mut merged = p.clone();
    merged.merge(&p);
    assert_eq!(merged.centroid.len(), EMBEDDING_DIM);
});
