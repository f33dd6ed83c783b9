//! Finding and loading the ONNX Runtime shared library, and locating (and verifying) the model files.
//!
//! ONNX Runtime is loaded dynamically (`ort` with `load-dynamic`); `scripts/fetch-onnxruntime.sh` downloads the
//! pinned 1.31.1 build into the user cache. The models are the ONNX files in the repository's `models/`, exported
//! by `models/export_*.py` and pinned here by sha256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// ONNX Runtime version fetched by `scripts/fetch-onnxruntime.sh` (ort 2.0.0-rc.15 wraps ONNX Runtime 1.31).
pub const ORT_VERSION: &str = "1.31.1";

/// CAM++ speaker embedding model: `feats` [B, T, 80] -> `embedding` [B, 192].
pub const CAMPPLUS_FILE: &str = "campplus.onnx";
/// sha256 of `models/campplus.onnx` (models/export_campplus.py).
pub const CAMPPLUS_SHA256: &str =
    "433893672d30524f49c25d7c96e3d179b076f939767c2f438cef5f4e7e307feb";
/// CAM++ up to its statistics pooling: `feats` [B, T, 80] -> `frames` [B, 512, T'] (speaker-conditioned
/// embeddings; the pooling and the rest run in Rust with [`CAMPPLUS_HEAD_FILE`], see [`crate::embed::Head`]).
pub const CAMPPLUS_TRUNK_FILE: &str = "campplus_trunk.onnx";
/// sha256 of `models/campplus_trunk.onnx` (models/export_campplus_trunk.py, cut from campplus.onnx).
pub const CAMPPLUS_TRUNK_SHA256: &str =
    "1ceaf62f27890a6daf59152609c861903c2ae613bd2b3cc006a410da98460219";
/// The CAM++ trunk with 8-bit convolutions (models/quantize_campplus_trunk.py, from campplus_trunk.onnx; same
/// inputs and outputs).
pub const CAMPPLUS_TRUNK_INT8_FILE: &str = "campplus_trunk_int8.onnx";
/// sha256 of `models/campplus_trunk_int8.onnx`.
pub const CAMPPLUS_TRUNK_INT8_SHA256: &str =
    "710541f9ffd5111d4d1df5de6b94d33b0ca0af7b54d068e06c48b32d4d22b0ad";
/// CAM++'s dense layer and batch norm after the pooling (binary layout in models/README.md).
pub const CAMPPLUS_HEAD_FILE: &str = "campplus_head.bin";
/// sha256 of `models/campplus_head.bin` (models/export_campplus_trunk.py).
pub const CAMPPLUS_HEAD_SHA256: &str =
    "f92993b4262f2b03868fa0c52c9c470ee1837df42adad578911f4b2ca312ac9e";
/// pyannote segmentation-3.0: `waveform` [B, 1, samples] -> `log_probs` [B, frames, 7].
pub const SEGMENTATION_FILE: &str = "segmentation-3.0.onnx";
/// sha256 of `models/segmentation-3.0.onnx` (models/export_segmentation.py).
pub const SEGMENTATION_SHA256: &str =
    "fb7ff0edc96c439ec3333886d58172c4bbb67a3957f8dda78c500e5de2ef175a";
/// segmentation-3.0 with 8-bit LSTMs and matrix products (models/quantize_segmentation.py; same input and
/// output). Not batch-invariant: [`crate::segment::Segmenter`] runs it one window per call.
pub const SEGMENTATION_INT8_FILE: &str = "segmentation-3.0-int8.onnx";
/// sha256 of `models/segmentation-3.0-int8.onnx`.
pub const SEGMENTATION_INT8_SHA256: &str =
    "fab1eb8fcdc1e2f103b0ef8d7a005d3221b26ae39ca49cfbd164fb6730645802";

/// segmentation-3.0-int8.onnx split at its first convolution (models/split_segmentation.py): the convolution
/// alone, `waveform` [1, 1, n] -> `conv` [1, 80, (n - 251) / 10 + 1], run once over the stream.
pub const SEGMENTATION_SINCCONV_FILE: &str = "segmentation-3.0-sincconv.onnx";
/// sha256 of `models/segmentation-3.0-sincconv.onnx`.
pub const SEGMENTATION_SINCCONV_SHA256: &str =
    "5aa2085d8cc93bb0aa4f19db68c847395d8601bf3c9d304ecdf27eb827aedf04";
/// The rest of segmentation-3.0-int8.onnx: `conv` [1, 80, F], `mean` [1], `var` [1] -> `log_probs` [1, F', 7].
pub const SEGMENTATION_INT8_REST_FILE: &str = "segmentation-3.0-int8-rest.onnx";
/// sha256 of `models/segmentation-3.0-int8-rest.onnx`.
pub const SEGMENTATION_INT8_REST_SHA256: &str =
    "9b230fa26a459d5d0e560b917ea17b47f410f6bdaf7d56efdfbcd121e5cbee85";

const LIB_NAMES: [&str; 2] = ["libonnxruntime.so", "libonnxruntime.so.1.31.1"];

struct Loaded {
    path: PathBuf,
    env: ort::environment::Environment,
}

static ORT: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

/// Finds libonnxruntime (ORT_DYLIB_PATH, next to the executable, the user cache filled by
/// scripts/fetch-onnxruntime.sh, the repo's .cache) and initialises `ort` once. Idempotent. Error says exactly what
/// to do.
pub fn init_onnxruntime() -> Result<PathBuf> {
    loaded().map(|l| l.path.clone())
}

/// The process-wide ONNX Runtime environment (initialising ONNX Runtime first if needed). Sessions are built on it.
pub fn environment() -> Result<ort::environment::Environment> {
    loaded().map(|l| l.env.clone())
}

fn loaded() -> Result<&'static Loaded> {
    ORT.get_or_init(|| {
        let path = find_onnxruntime()?;
        load(&path)
    })
    .as_ref()
    .map_err(|e| Error::Runtime(e.clone()))
}

/// `${WHOSPOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whospoke}` (same logic as scripts/fetch-onnxruntime.sh).
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("WHOSPOKE_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("whospoke"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache").join("whospoke"))
}

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

fn find_onnxruntime() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!(
            "ORT_DYLIB_PATH is set to {} but no such file exists; point it at libonnxruntime.so (ONNX Runtime {}) \
             or unset it and run scripts/fetch-onnxruntime.sh",
            p.display(),
            ORT_VERSION
        ));
    }
    let mut dirs = Vec::new();
    if let Some(d) = exe_dir() {
        dirs.push(d);
    }
    let ort_dir = format!("onnxruntime-{ORT_VERSION}");
    if let Some(c) = cache_dir() {
        dirs.push(c.join(&ort_dir));
    }
    dirs.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".cache")
            .join(&ort_dir),
    );
    let mut looked = Vec::new();
    for d in &dirs {
        for name in LIB_NAMES {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
            looked.push(p.display().to_string());
        }
    }
    Err(format!(
        "the ONNX Runtime {ORT_VERSION} shared library was not found (looked for {}). Run \
         scripts/fetch-onnxruntime.sh (downloads the official onnxruntime=={ORT_VERSION} wheel with pip, verifies its \
         sha256 and installs libonnxruntime.so into {}), or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so \
         (ONNX Runtime 1.31)",
        looked.join(", "),
        cache_dir()
            .map(|c| c.join(&ort_dir).display().to_string())
            .unwrap_or_else(|| format!("$HOME/.cache/whospoke/{ort_dir}"))
    ))
}

fn load(path: &Path) -> std::result::Result<Loaded, String> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let hint = format!(
        "{} is not a usable ONNX Runtime {ORT_VERSION} library; run scripts/fetch-onnxruntime.sh or set \
         ORT_DYLIB_PATH to a libonnxruntime.so from ONNX Runtime 1.31",
        path.display()
    );
    // `ort` may panic (rather than return an error) on a library with an unexpected API; never let that escape.
    let attempt = std::panic::catch_unwind(|| -> std::result::Result<_, String> {
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        builder
            .with_name("whospoke")
            // No usage telemetry from a tool that listens to meetings.
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    });
    match attempt {
        Ok(Ok(env)) => {
            tracing::info!(path = %path.display(), "ONNX Runtime loaded");
            Ok(Loaded { path, env })
        }
        Ok(Err(e)) => Err(format!("{hint}: {e}")),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic while loading".into());
            Err(format!("{hint}: {why}"))
        }
    }
}

/// Paths of the verified model files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPaths {
    pub campplus: PathBuf,
    pub segmentation: PathBuf,
}

impl ModelPaths {
    /// `campplus.onnx` (the whole CAM++ graph: `--mode vad`, `--plain-embeddings`, enrolment), checked
    /// against its sha256 now.
    pub fn campplus_verified(&self) -> Result<PathBuf> {
        verify_model(&self.campplus, CAMPPLUS_SHA256)?;
        Ok(self.campplus.clone())
    }

    /// Paths of the CAM++ trunk and head beside `campplus` (speaker-conditioned embeddings), checked against
    /// their sha256 now (start-up hashes only the models a run uses).
    pub fn campplus_trunk_and_head(&self) -> Result<(PathBuf, PathBuf)> {
        self.campplus_trunk_and_head_in(false)
    }

    /// segmentation-3.0 (checked by [`locate_models`]), or its 8-bit version beside it, checked now.
    pub fn segmentation_in(&self, int8: bool) -> Result<PathBuf> {
        if !int8 {
            return Ok(self.segmentation.clone());
        }
        let p = self.segmentation.with_file_name(SEGMENTATION_INT8_FILE);
        verify_model(&p, SEGMENTATION_INT8_SHA256)?;
        Ok(p)
    }

    /// The 8-bit segmentation-3.0 split at its first convolution (front, rest), checked now.
    pub fn segmentation_split(&self) -> Result<(PathBuf, PathBuf)> {
        let front = self.segmentation.with_file_name(SEGMENTATION_SINCCONV_FILE);
        let rest = self
            .segmentation
            .with_file_name(SEGMENTATION_INT8_REST_FILE);
        verify_model(&front, SEGMENTATION_SINCCONV_SHA256)?;
        verify_model(&rest, SEGMENTATION_INT8_REST_SHA256)?;
        Ok((front, rest))
    }

    /// As [`ModelPaths::campplus_trunk_and_head`], with the 8-bit trunk when `int8`.
    pub fn campplus_trunk_and_head_in(&self, int8: bool) -> Result<(PathBuf, PathBuf)> {
        let (file, sum) = if int8 {
            (CAMPPLUS_TRUNK_INT8_FILE, CAMPPLUS_TRUNK_INT8_SHA256)
        } else {
            (CAMPPLUS_TRUNK_FILE, CAMPPLUS_TRUNK_SHA256)
        };
        let trunk = self.campplus.with_file_name(file);
        let head = self.campplus.with_file_name(CAMPPLUS_HEAD_FILE);
        verify_model(&trunk, sum)?;
        verify_model(&head, CAMPPLUS_HEAD_SHA256)?;
        Ok((trunk, head))
    }
}

/// Finds models/ (explicit dir, WHOSPOKE_MODELS, next to the executable, the compile-time repo path) and checks
/// segmentation-3.0's sha256 (the CAM++ files are checked when loaded: [`ModelPaths::campplus_verified`],
/// [`ModelPaths::campplus_trunk_and_head`]).
///
/// An explicit directory or WHOSPOKE_MODELS is authoritative (no fallback). Otherwise the first candidate
/// directory holding any of the model files is used.
pub fn locate_models(explicit: Option<&Path>) -> Result<ModelPaths> {
    let dir = if let Some(d) = explicit {
        d.to_path_buf()
    } else if let Some(d) = std::env::var_os("WHOSPOKE_MODELS").filter(|v| !v.is_empty()) {
        PathBuf::from(d)
    } else {
        let mut candidates = Vec::new();
        if let Some(e) = exe_dir() {
            candidates.push(e.join("models"));
            candidates.push(e.join("..").join("share").join("whospoke").join("models"));
        }
        candidates.push(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models"
        )));
        let found = candidates
            .iter()
            .find(|d| d.join(CAMPPLUS_FILE).is_file() || d.join(SEGMENTATION_FILE).is_file());
        match found {
            Some(d) => d.clone(),
            None => {
                let list: Vec<String> =
                    candidates.iter().map(|d| d.display().to_string()).collect();
                return Err(Error::Model {
                    path: PathBuf::from(CAMPPLUS_FILE),
                    why: format!(
                        "missing: no models directory found (looked in {}); pass the models directory explicitly \
                         or set WHOSPOKE_MODELS; restore it with `git checkout models/` or re-run \
                         models/export_*.py",
                        list.join(", ")
                    ),
                });
            }
        }
    };
    let campplus = dir.join(CAMPPLUS_FILE);
    let segmentation = dir.join(SEGMENTATION_FILE);
    // Only segmentation-3.0 is hashed here: each run hashes the CAM++ files it loads when it loads them
    // (the trunk and head in mode seg, campplus.onnx otherwise), so start-up hashes 34 MB, not 62 MB.
    // A missing campplus.onnx is still reported here, first, as before.
    std::fs::metadata(&campplus).map_err(|e| Error::Model {
        path: campplus.clone(),
        why: format!(
            "missing ({e}): restore it with `git checkout models/` or re-run models/export_*.py"
        ),
    })?;
    verify_model(&segmentation, SEGMENTATION_SHA256)?;
    Ok(ModelPaths {
        campplus,
        segmentation,
    })
}

/// Files already verified in this process: (path, length, mtime). Avoids re-hashing on repeated calls.
static VERIFIED: Mutex<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>> = Mutex::new(Vec::new());

/// Checks that `path` exists and has sha256 `expected` (lower-case hex).
pub fn verify_model(path: &Path, expected: &str) -> Result<()> {
    let fix = "restore it with `git checkout models/` or re-run models/export_*.py";
    let meta = std::fs::metadata(path).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        why: format!("missing ({e}): {fix}"),
    })?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Ok(v) = VERIFIED.lock() {
        if v.contains(&key) {
            return Ok(());
        }
    }
    let got = sha256_file(path).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        why: format!("missing or unreadable ({e}): {fix}"),
    })?;
    if got != expected {
        return Err(Error::Model {
            path: path.to_path_buf(),
            why: format!("checksum mismatch (expected {expected}, got {got}): {fix}"),
        });
    }
    if let Ok(mut v) = VERIFIED.lock() {
        v.push(key);
    }
    Ok(())
}

/// sha256 of a file as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Opens an ONNX model as a CPU session with `threads` intra-op threads (one inter-op thread, full
/// graph optimisation). The caller checks the model's inputs and outputs.
///
/// Start-up: building the session (parsing the model, optimising the graph, creating kernels) is most of
/// whospoke's start-up (~0.35 s for CAM++'s 3,100 nodes). The optimised graph is therefore kept in the user
/// cache (`cache_dir()/sessions/`, ONNX Runtime's own ORT format) and later runs load that (~0.25 s). Its name
/// is a hash of everything the optimised graph depends on: the model file (path, length, mtime), the
/// ONNX Runtime library file, and this CPU (model name and feature flags, since full optimisation is
/// CPU-specific). A cached graph that fails to load is deleted and the model is loaded from scratch;
/// `WHOSPOKE_NO_SESSION_CACHE=1` turns the cache off. Labels are byte-for-byte the same either way
/// (`tests/session_cache.rs`).
pub fn load_session(model: &Path, threads: usize) -> Result<ort::session::Session> {
    load_session_shaped(model, threads, &[])
}

/// As [`load_session`], with the model's symbolic input dimensions fixed (`dims`: name and size, e.g.
/// `("frames", 148)`): ONNX Runtime then plans every shape once, which makes the session faster to build
/// (CAM++'s int8 trunk: ~1.3 s -> ~0.5 s) at the price of accepting only those shapes.
pub fn load_session_shaped(
    model: &Path,
    threads: usize,
    dims: &[(&str, i64)],
) -> Result<ort::session::Session> {
    let fix = |b: ort::session::builder::SessionBuilder| {
        dims.iter().try_fold(b, |b, (name, size)| {
            b.with_dimension_override(*name, *size)
                .map_err(|e| format!("cannot fix input dimension {name}: {e}"))
        })
    };
    let shape: String = dims.iter().map(|(n, v)| format!("@{n}{v}")).collect();
    let cached = session_cache_path(model, &shape);
    if let Some(c) = cached.as_deref().filter(|c| c.is_file()) {
        match build_session(threads, |b| {
            let b = fix(b)?;
            b.with_config_entry("session.load_model_format", "ORT")
                .map_err(|e| e.to_string())?
                .commit_from_file(c)
                .map_err(|e| e.to_string())
        }) {
            Ok(s) => {
                tracing::debug!(model = %model.display(), cached = %c.display(), "session from the cache");
                return Ok(s);
            }
            Err(e) => {
                tracing::debug!(cached = %c.display(), "cached session unusable ({e}); rebuilding");
                let _ = std::fs::remove_file(c);
            }
        }
    }
    let merr = |why: String| Error::Model {
        path: model.to_path_buf(),
        why,
    };
    if let Some(c) = cached.as_deref() {
        // Written under a temporary name and renamed, so a concurrent run never reads half a file.
        let tmp = c.with_extension(format!("tmp{}", std::process::id()));
        let made = c.parent().map(std::fs::create_dir_all);
        if matches!(made, Some(Ok(()))) {
            let built = build_session(threads, |b| {
                fix(b)?
                    .with_optimized_model_path(&tmp)
                    .map_err(|e| e.to_string())?
                    .with_config_entry("session.save_model_format", "ORT")
                    .map_err(|e| e.to_string())?
                    .commit_from_file(model)
                    .map_err(|e| e.to_string())
            });
            if built.is_ok() && std::fs::rename(&tmp, c).is_ok() {
                tracing::debug!(model = %model.display(), cached = %c.display(), "session cached");
                remove_stale(c);
            } else {
                let _ = std::fs::remove_file(&tmp);
            }
            if let Ok(s) = built {
                return Ok(s);
            }
        }
    }
    build_session(threads, |b| {
        fix(b)?.commit_from_file(model).map_err(|e| e.to_string())
    })
    .map_err(|e| merr(format!("cannot load the model: {e}")))
}

/// The session options every model gets; `commit` adds the source and builds.
fn build_session(
    threads: usize,
    commit: impl FnOnce(
        ort::session::builder::SessionBuilder,
    ) -> std::result::Result<ort::session::Session, String>,
) -> std::result::Result<ort::session::Session, String> {
    use ort::session::builder::GraphOptimizationLevel;
    let env = environment().map_err(|e| e.to_string())?;
    let builder = ort::session::Session::builder(&env)
        .map_err(|e| format!("cannot create an ONNX Runtime session: {e}"))?;
    let cfg = |e: ort::Error<ort::session::builder::SessionBuilder>| {
        format!("cannot configure the ONNX Runtime session: {e}")
    };
    let builder = builder
        .with_intra_threads(threads.max(1))
        .map_err(cfg)?
        .with_inter_threads(1)
        .map_err(cfg)?
        // Idle pool threads sleep instead of spinning: the other pipeline threads need the cores.
        .with_intra_op_spinning(false)
        .map_err(cfg)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(cfg)?
        // No per-shape memory plans: windows come in several lengths and batch sizes, and a plan per
        // shape cost ~17 MB of arena with batched CAM++ (142 -> 125 MB peak RSS on dev_05) for no
        // measurable speed.
        .with_memory_pattern(false)
        .map_err(cfg)?
        // The 8-bit convolutions stay in ONNX Runtime's channels-first layout: its channels-last rewrite put
        // 322 transposes into the int8 CAM++ trunk (between the float batch norms, poolings and concats that
        // break the int8 chain), about 4 % of a window for no gain; the results are the same bits.
        .with_config_entry(
            "optimization.disable_specified_optimizers",
            DISABLED_OPTIMIZERS,
        )
        .map_err(cfg)?;
    commit(builder)
}

/// ONNX Runtime graph optimisers every session turns off (also part of the session cache key, since the
/// cached graph is the optimised one).
const DISABLED_OPTIMIZERS: &str = "NhwcTransformer";

/// `cache_dir()/sessions/STEM-HASH.ort` for `model`, or None (cache off, no cache directory, or no CPU
/// description to key it on).
fn session_cache_path(model: &Path, shape: &str) -> Option<PathBuf> {
    if std::env::var_os("WHOSPOKE_NO_SESSION_CACHE").is_some_and(|v| v != "0" && !v.is_empty()) {
        return None;
    }
    let stamp = |p: &Path| -> Option<String> {
        let m = std::fs::metadata(p).ok()?;
        let t = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(format!("{}|{}|{}", p.display(), m.len(), t.as_nanos()))
    };
    let model = std::fs::canonicalize(model).ok()?;
    let lib = loaded().ok()?.path.clone();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let cpu: Vec<&str> = cpuinfo
        .lines()
        .filter(|l| l.starts_with("model name") || l.starts_with("flags"))
        .take(2)
        .collect();
    if cpu.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for part in [
        stamp(&model)?,
        stamp(&lib)?,
        cpu.join("\n"),
        ORT_VERSION.into(),
        DISABLED_OPTIMIZERS.into(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = format!("{}{shape}", model.file_stem()?.to_string_lossy());
    Some(
        cache_dir()?
            .join("sessions")
            .join(format!("{stem}-{hex}.ort")),
    )
}

/// Removes other cached sessions of the same model (older model files, libraries or CPUs).
fn remove_stale(keep: &Path) {
    let (Some(dir), Some(name)) = (keep.parent(), keep.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Some((stem, _)) = name.rsplit_once('-') else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n != name
            && n.rsplit_once('-')
                .is_some_and(|(s, rest)| s == stem && rest.ends_with(".ort"))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = std::env::temp_dir().join(format!("whospoke-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let err = verify_model(&p, CAMPPLUS_SHA256).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        let err = verify_model(&dir.join("nope"), CAMPPLUS_SHA256)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn explicit_models_dir_is_authoritative() {
        let err = locate_models(Some(Path::new("/nonexistent/whospoke-models")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
        assert!(err.contains("git checkout models/"), "{err}");
    }
}
