//! Fault injection for tests: a panic or a slow-down in one pipeline stage, chosen by an environment variable.
//!
//! `WHOSPOKE_FAULT` holds one or more comma-separated faults (stream time in seconds):
//!
//! - `panic:STAGE@T`: panic once in STAGE when its stream time reaches T.
//! - `slow:STAGE:MS@T1-T2`: sleep MS milliseconds per chunk of work in STAGE while its stream time is in [T1, T2).
//! - `stall:STAGE:MS@T`: sleep MS milliseconds once, when STAGE's stream time reaches T (a stage stuck for a while,
//!   e.g. longer than ring A holds, so a live input overflows it).
//!
//! STAGE is `vad`, `segmentation`, `analysis` or `turns`. Example: `WHOSPOKE_FAULT=slow:vad:200@10-20` makes the VAD stage fall behind for
//! 10 s of audio (the input ring overflows on a live device). The variable is read once; when it is unset, [`hit`]
//! is one atomic load. A malformed value is reported once (warning) and ignored. This is a test hook
//! (docs/reliability.md), not a feature.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable read by [`hit`].
pub const ENV: &str = "WHOSPOKE_FAULT";

/// A pipeline stage that has a fault hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `vad_thread`: the consumer of the input ring (ring A).
    Vad,
    /// `turns_thread`: clustering and turns.
    Turns,
    /// `segmentation_thread`: segmentation-3.0.
    Segmentation,
    /// `analysis_thread`: fbank and CAM++ embeddings.
    Analysis,
}

impl Stage {
    fn parse(s: &str) -> Option<Stage> {
        match s {
            "vad" => Some(Stage::Vad),
            "turns" => Some(Stage::Turns),
            "segmentation" => Some(Stage::Segmentation),
            "analysis" => Some(Stage::Analysis),
            _ => None,
        }
    }
    /// The stage's name as written in `WHOSPOKE_FAULT`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Vad => "vad",
            Stage::Turns => "turns",
            Stage::Segmentation => "segmentation",
            Stage::Analysis => "analysis",
        }
    }
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Panic once.
    Panic,
    /// Sleep this long per call.
    Slow(Duration),
    /// Sleep this long once.
    Stall(Duration),
}

/// One parsed fault.
#[derive(Debug)]
pub struct Fault {
    pub stage: Stage,
    pub action: Action,
    /// Stream time (s) from which the fault is active.
    pub from: f64,
    /// Stream time (s) at which it stops (infinite for a panic).
    pub until: f64,
    fired: AtomicBool,
}

/// Parses a `WHOSPOKE_FAULT` value.
pub fn parse(spec: &str) -> Result<Vec<Fault>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| format!("{ENV}: bad fault `{item}`: {why}");
        let (what, when) = item
            .split_once('@')
            .ok_or_else(|| bad("expected KIND:STAGE[:MS]@TIME"))?;
        let parts: Vec<&str> = what.split(':').collect();
        let num = |s: &str| -> Result<f64, String> {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad(&format!("`{s}` is not a non-negative number")))
        };
        let stage = |s: &str| Stage::parse(s).ok_or_else(|| bad("stage must be `vad` or `turns`"));
        let fault = match parts.as_slice() {
            ["panic", s] => Fault {
                stage: stage(s)?,
                action: Action::Panic,
                from: num(when)?,
                until: f64::INFINITY,
                fired: AtomicBool::new(false),
            },
            ["slow", s, ms] => {
                let (a, b) = when
                    .split_once('-')
                    .ok_or_else(|| bad("a slow-down needs a span T1-T2"))?;
                let (from, until) = (num(a)?, num(b)?);
                if until <= from {
                    return Err(bad("the span's end must be after its start"));
                }
                let ms = num(ms)?;
                if ms > 60_000.0 {
                    return Err(bad("at most 60000 ms per chunk"));
                }
                Fault {
                    stage: stage(s)?,
                    action: Action::Slow(Duration::from_secs_f64(ms / 1000.0)),
                    from,
                    until,
                    fired: AtomicBool::new(false),
                }
            }
            ["stall", s, ms] => {
                let ms = num(ms)?;
                if ms > 600_000.0 {
                    return Err(bad("at most 600000 ms"));
                }
                Fault {
                    stage: stage(s)?,
                    action: Action::Stall(Duration::from_secs_f64(ms / 1000.0)),
                    from: num(when)?,
                    until: f64::INFINITY,
                    fired: AtomicBool::new(false),
                }
            }
            _ => {
                return Err(bad(
                    "expected panic:STAGE@T, slow:STAGE:MS@T1-T2 or stall:STAGE:MS@T",
                ))
            }
        };
        out.push(fault);
    }
    Ok(out)
}

static ACTIVE: AtomicBool = AtomicBool::new(true);
static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();

fn faults() -> &'static [Fault] {
    FAULTS.get_or_init(|| {
        let Some(spec) = std::env::var_os(ENV) else {
            return Vec::new();
        };
        match parse(&spec.to_string_lossy()) {
            Ok(f) => {
                if !f.is_empty() {
                    tracing::warn!("fault injection active ({ENV}={})", spec.to_string_lossy());
                }
                f
            }
            Err(e) => {
                tracing::warn!("{e}; no fault injected");
                Vec::new()
            }
        }
    })
}

/// The hook: called by `stage` with its current stream time in seconds; injects the configured faults.
#[inline]
pub fn hit(stage: Stage, stream_secs: f64) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let faults = faults();
    if faults.is_empty() {
        ACTIVE.store(false, Ordering::Relaxed);
        return;
    }
    for f in faults {
        if f.stage != stage || stream_secs < f.from || stream_secs >= f.until {
            continue;
        }
        match f.action {
            Action::Slow(d) => std::thread::sleep(d),
            Action::Stall(d) => {
                if !f.fired.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "injected fault ({ENV}): the {} stage stalls for {:.1} s",
                        stage.name(),
                        d.as_secs_f64()
                    );
                    std::thread::sleep(d);
                }
            }
            Action::Panic => {
                if !f.fired.swap(true, Ordering::Relaxed) {
                    panic!(
                        "injected fault ({ENV}): panic in the {} stage at {stream_secs:.2} s of stream time",
                        stage.name()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_panic_and_slow() {
        let f = parse("panic:turns@20, slow:vad:200@10-20,stall:vad:1500@3").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[2].action, Action::Stall(Duration::from_millis(1500)));
        assert_eq!(f[2].from, 3.0);
        assert_eq!(f[0].stage, Stage::Turns);
        assert_eq!(f[0].action, Action::Panic);
        assert_eq!(f[0].from, 20.0);
        assert_eq!(f[1].stage, Stage::Vad);
        assert_eq!(f[1].action, Action::Slow(Duration::from_millis(200)));
        assert_eq!((f[1].from, f[1].until), (10.0, 20.0));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_malformed_specs() {
        for bad in [
            "panic:turns",
            "panic:mic@3",
            "crash:vad@1",
            "slow:vad:200@10",
            "slow:vad:200@20-10",
            "slow:vad:x@1-2",
            "panic:vad@-1",
            "panic:vad@nan",
            "slow:vad:1e9@1-2",
            "stall:vad@3",
            "stall:vad:1e9@3",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
