//! whospoke: real-time streaming speaker diarization.
//!
//! Pipeline (one module per stage; see docs/architecture.md):
//! capture/decode -> ring -> `vad` thread (resample + `level` gain + webrtc-vad) -> ring -> `analysis` thread
//! (incremental `fbank` + CAM++, `segment`ation) -> `turns` thread (`cluster`ing, tentative/final turns)
//! -> events -> sinks (`output`, `tui`).

pub mod analysis;
pub mod assign;
pub mod capture;
pub mod cluster;
pub mod decode;
pub mod embed;
pub mod embed_worker;
pub mod error;
pub mod eval;
pub mod events;
pub mod fault;
pub mod fbank;
pub mod level;
pub mod output;
pub mod pipeline;
pub mod profiles;
pub mod recluster;
pub mod resample;
pub mod ring;
pub mod runtime;
pub mod segment;
pub mod tui;
pub mod tune;
pub mod turns;
pub mod vad;

pub use error::{Error, Result};

/// Sample rate of everything after the resampler.
pub const SAMPLE_RATE: u32 = 16_000;
