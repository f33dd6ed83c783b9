//! Voice profiles of known speakers: enrollment, the on-disk format, and live matching.
//!
//! A profile is one plain JSON file per person in the profile directory (default
//! `$XDG_DATA_HOME/whospoke/profiles`, else `~/.local/share/whospoke/profiles`):
//!
//! ```json
//! {"format":"whospoke-profile","version":1,"name":"Alice",
//!  "created":"2025-01-31T10:00:00Z","updated":"2025-01-31T10:00:00Z",
//!  "speech_seconds":42.3,"centroid":[0.01, ...192 values, unit length...],"windows":54,
//!  "self_similarity_mean":0.78,"self_similarity_p10":0.66,"sources":["alice.wav"]}
//! ```
//!
//! - `format` is always `whospoke-profile`; `version` is [`VERSION`]. A file with another format or
//!   version is refused with a message naming the file and both versions.
//! - `centroid`: the robust mean of the unit CAM++ embeddings (192-d) of the speaker's speech windows
//!   (1.5 s every 0.75 s over webrtc-vad speech), re-normalised to unit length. Robust: the 20 % of
//!   windows least similar to the plain mean are dropped and the mean is taken again.
//! - `windows`: how many windows went into it; `speech_seconds`: how much speech.
//! - `self_similarity_mean` / `_p10`: cosine similarity of the windows to the centroid (mean and
//!   10th percentile): how consistent the voice was; used to judge matches.
//! - `sources`: the recordings (and, for `--from-session`, the RTTM and speaker label) it came from.
//!
//! Enrolling again into an existing profile adds to it: the centroids are averaged weighted by speech
//! seconds, the statistics likewise.
//!
//! Matching ([`Identifier`]), always against the best profile with a margin over the second best:
//! - a new voice (a window no current speaker claims) is named from its first windows
//!   ([`Identifier::match_new_voice`]): one window of at least `naming_window` (0.75 s) at the
//!   profile's `window_threshold` (its own `self_similarity_p10`: as typical as 90 % of the enrollment
//!   windows), or one shorter window (0.5-0.75 s) at it that leads the second best profile by
//!   `short_window_margin`, or the mean of the
//!   voice's windows within `new_voice_span` (two or more, short ones included) at its `threshold`,
//!   or two windows within `new_voice_span` at its `threshold`; the turn stage then starts a speaker,
//!   already named, from that window when it holds 1 s of speech or more (enough to move a
//!   centroid), else from between it (or the mean) and the profile's centroid;
//! - a cluster speaker is compared through its centroid: at `threshold` once it holds
//!   `min_windows` windows, at `window_threshold` before.
//!
//! A profile names at most one speaker at a time; a name, once given, moves only to a clearly better
//! match; a user's name (rename) is never overridden.
//!
//! "Remember this voice" ([`profile_from_windows`], [`save_or_merge`]): the dashboard asks the turn
//! stage to build a profile from a speaker's kept session windows and save it in the profile
//! directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::{dot, normalize};
use crate::embed::{Embedder, EMBEDDING_DIM};
use crate::fbank::Fbank;
use crate::vad::{VadConfig, VadGate};
use crate::{Error, Result, SAMPLE_RATE};

/// The `format` field of every profile file.
pub const FORMAT: &str = "whospoke-profile";
/// The profile format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Least speech (seconds) a profile is built from.
pub const MIN_SPEECH_SECONDS: f64 = 5.0;
/// Default cosine similarity (cluster centroid vs profile centroid) at which a speaker is named.
pub const DEFAULT_MATCH_THRESHOLD: f32 = 0.5;
/// Default margin of the best profile over the second best.
pub const DEFAULT_MATCH_MARGIN: f32 = 0.05;

/// One person's voice profile (the JSON file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: String,
    pub version: u32,
    pub name: String,
    /// UTC, RFC 3339.
    pub created: String,
    /// UTC, RFC 3339.
    pub updated: String,
    pub speech_seconds: f64,
    /// Unit vector, [`EMBEDDING_DIM`] values.
    pub centroid: Vec<f32>,
    pub windows: usize,
    pub self_similarity_mean: f32,
    pub self_similarity_p10: f32,
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Profile {
    /// Parses and checks a profile file's text (`what` names it in errors).
    pub fn from_json(text: &str, what: &str) -> Result<Self> {
        let bad = |why: String| Error::Config(format!("profile {what}: {why}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        match v.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => {
                return Err(bad(format!(
                    "not a whospoke profile (format {other:?}, expected \"{FORMAT}\")"
                )))
            }
        }
        match v.get("version").and_then(|f| f.as_u64()) {
            Some(n) if n == VERSION as u64 => {}
            Some(n) => {
                return Err(bad(format!(
                    "format version {n} is not supported by this whospoke (it reads version {VERSION}); \
                     re-enroll the speaker or use a matching whospoke release"
                )))
            }
            None => return Err(bad("no format version".into())),
        }
        let p: Profile =
            serde_json::from_value(v).map_err(|e| bad(format!("malformed fields: {e}")))?;
        if p.centroid.len() != EMBEDDING_DIM || p.centroid.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!(
                "centroid must be {EMBEDDING_DIM} finite values, has {}",
                p.centroid.len()
            )));
        }
        if p.name.trim().is_empty() {
            return Err(bad("empty name".into()));
        }
        Ok(p)
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read profile {}: {e}", path.display())))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Pretty JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile always serialises")
    }

    /// Adds another enrollment of the same person, weighted by speech seconds.
    pub fn merge(&mut self, other: &Profile) {
        let (a, b) = (self.speech_seconds.max(0.0), other.speech_seconds.max(0.0));
        let tot = (a + b).max(1e-9);
        let mut c: Vec<f32> = self
            .centroid
            .iter()
            .zip(&other.centroid)
            .map(|(x, y)| ((*x as f64 * a + *y as f64 * b) / tot) as f32)
            .collect();
        if normalize(&mut c) {
            self.centroid = c;
        }
        let w = |x: f32, y: f32| ((x as f64 * a + y as f64 * b) / tot) as f32;
        self.self_similarity_mean = w(self.self_similarity_mean, other.self_similarity_mean);
        self.self_similarity_p10 = w(self.self_similarity_p10, other.self_similarity_p10);
        self.speech_seconds = a + b;
        self.windows += other.windows;
        self.updated = other.updated.clone();
        for s in &other.sources {
            if !self.sources.contains(s) {
                self.sources.push(s.clone());
            }
        }
    }
}

/// The default profile directory: `$XDG_DATA_HOME/whospoke/profiles`, else
/// `$HOME/.local/share/whospoke/profiles`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map(|b| b.join("whospoke").join("profiles"))
}

/// A directory of profile files.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    pub dir: PathBuf,
}

impl ProfileStore {
    /// The store in `dir`, or in [`default_dir`].
    pub fn open(dir: Option<&Path>) -> Result<Self> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => default_dir().ok_or_else(|| {
                Error::Config(
                    "no profile directory: set HOME or XDG_DATA_HOME, or give --profiles DIR"
                        .into(),
                )
            })?,
        };
        Ok(Self { dir })
    }

    /// The `*.json` files, sorted (none if the directory does not exist).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read the profile directory {}: {e}",
                    self.dir.display()
                )))
            }
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        v.sort();
        Ok(v)
    }

    /// Every profile; the first unreadable or incompatible file is an error naming it.
    pub fn load_all(&self) -> Result<Vec<Profile>> {
        self.files()?.iter().map(|p| Profile::load(p)).collect()
    }

    /// The profile called `name` and its file, if any.
    pub fn find(&self, name: &str) -> Result<Option<(PathBuf, Profile)>> {
        for f in self.files()? {
            let p = Profile::load(&f)?;
            if p.name == name {
                return Ok(Some((f, p)));
            }
        }
        Ok(None)
    }

    /// Saves a profile (replacing the file of the same name), atomically. Returns the path.
    pub fn save(&self, p: &Profile) -> Result<PathBuf> {
        let io = |e: std::io::Error| {
            Error::Config(format!("cannot write to {}: {e}", self.dir.display()))
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let path = match self.find(&p.name)? {
            Some((f, _)) => f,
            None => {
                let stem = file_stem(&p.name);
                let mut k = 1;
                loop {
                    let c = if k == 1 {
                        self.dir.join(format!("{stem}.json"))
                    } else {
                        self.dir.join(format!("{stem}-{k}.json"))
                    };
                    if !c.exists() {
                        break c;
                    }
                    k += 1;
                }
            }
        };
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, p.to_json() + "\n").map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }

    /// Deletes the profile called `name`; false if there is none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        match self.find(name)? {
            Some((f, _)) => {
                std::fs::remove_file(&f)
                    .map_err(|e| Error::Config(format!("cannot remove {}: {e}", f.display())))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// A file name for a person's name: letters, digits, `-`, `_` and `.` kept, the rest `_`.
fn file_stem(name: &str) -> String {
    let s: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "profile".into()
    } else {
        s
    }
}

/// Now, UTC, RFC 3339 to the second.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Enrollment
// ---------------------------------------------------------------------------------------------

/// Enrollment settings.
#[derive(Debug, Clone)]
pub struct EnrollConfig {
    /// Window, seconds.
    pub window: f64,
    /// Step, seconds.
    pub step: f64,
    /// VAD used to keep speech.
    pub vad: VadConfig,
    /// Least speech, seconds.
    pub min_speech: f64,
    /// Share of windows dropped (least similar to the first-pass mean) before the final mean.
    pub drop_fraction: f64,
}

impl Default for EnrollConfig {
    fn default() -> Self {
        Self {
            window: 1.5,
            step: 0.75,
            vad: VadConfig::default(),
            min_speech: MIN_SPEECH_SECONDS,
            drop_fraction: 0.2,
        }
    }
}

/// Decodes an audio file to 16 kHz mono.
pub fn decode_16k(path: &Path) -> Result<Vec<f32>> {
    let mut src = crate::decode::open_file(path)?;
    let f = src.format();
    let mut rs = crate::resample::Resampler::new(f.sample_rate, f.channels)?;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        buf.clear();
        if src.read(&mut buf)? == 0 {
            break;
        }
        rs.process(&buf, &mut out);
    }
    rs.finish(&mut out);
    Ok(out)
}

/// Cuts `[start, end)` seconds spans out of 16 kHz audio and joins them.
pub fn select_spans(audio: &[f32], spans: &[(f64, f64)]) -> Vec<f32> {
    let sr = SAMPLE_RATE as f64;
    let mut out = Vec::new();
    for &(s, e) in spans {
        let a = ((s.max(0.0) * sr) as usize).min(audio.len());
        let b = ((e.max(0.0) * sr) as usize).min(audio.len());
        if b > a {
            out.extend_from_slice(&audio[a..b]);
        }
    }
    out
}

/// Keeps the samples webrtc-vad (smoothed as in the live pipeline) calls speech.
pub fn speech_only(audio: &[f32], vad: &VadConfig) -> Result<Vec<f32>> {
    let mut gate = VadGate::new(vad)?;
    let mut leveler = crate::level::Leveler::new(&vad.level, vad.frame_ms);
    let flen = gate.frame_len();
    let mut leveled = audio.to_vec();
    let mut decisions = Vec::with_capacity(audio.len() / flen + 1);
    for fr in leveled.chunks_mut(flen) {
        // The same automatic gain as the live pipeline, so quiet recordings enroll too.
        leveler.process(fr);
        let voiced = fr.len() == flen && gate.classify(fr);
        decisions.extend(gate.smoother().push(voiced));
    }
    decisions.extend(gate.smoother().drain());
    let mut out = Vec::new();
    for (fr, d) in leveled.chunks(flen).zip(decisions) {
        if d {
            out.extend_from_slice(fr);
        }
    }
    Ok(out)
}

/// Unit CAM++ embeddings of `window`-second windows every `step` seconds over `speech` (a speech
/// segment shorter than a window but at least 1 s gets one window).
pub fn window_embeddings(
    speech: &[f32],
    embedder: &mut Embedder,
    cfg: &EnrollConfig,
) -> Result<Vec<Vec<f32>>> {
    let feats = Fbank::new().compute(speech);
    let n = feats.nrows();
    let win = (cfg.window * 100.0).round() as usize;
    let step = ((cfg.step * 100.0).round() as usize).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|k| k * step)
        .take_while(|s| s + win <= n)
        .collect();
    if starts.is_empty() && n >= 100 {
        starts.push(0);
    }
    let mut out = Vec::with_capacity(starts.len());
    for s in starts {
        let e = (s + win).min(n);
        let mut v = embedder.embed(feats.slice(ndarray::s![s..e, ..]))?;
        if normalize(&mut v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// Robust centroid and statistics of unit embeddings: (centroid, similarity mean, 10th percentile).
pub fn robust_centroid(units: &[Vec<f32>], drop_fraction: f64) -> Option<(Vec<f32>, f32, f32)> {
    let first = units.first()?;
    let mean = |sel: &mut dyn Iterator<Item = &Vec<f32>>| {
        let mut m = vec![0.0f32; first.len()];
        for u in sel {
            m.iter_mut().zip(u).for_each(|(a, b)| *a += b);
        }
        normalize(&mut m).then_some(m)
    };
    let m1 = mean(&mut units.iter())?;
    let mut order: Vec<(f32, usize)> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (dot(u, &m1), i))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let keep = ((units.len() as f64 * (1.0 - drop_fraction)).ceil() as usize).clamp(1, units.len());
    let c = mean(&mut order[..keep].iter().map(|&(_, i)| &units[i]))?;
    let mut sims: Vec<f32> = units.iter().map(|u| dot(u, &c)).collect();
    sims.sort_by(|a, b| a.total_cmp(b));
    let mean_sim = sims.iter().sum::<f32>() / sims.len() as f32;
    let p10 = sims[((sims.len() - 1) as f64 * 0.1).round() as usize];
    Some((c, mean_sim, p10))
}

/// One recording to enroll from: a file, optionally restricted to `[start, end)` spans (seconds).
#[derive(Debug, Clone)]
pub struct EnrollSource {
    pub path: PathBuf,
    pub spans: Option<Vec<(f64, f64)>>,
    /// How the source is recorded in the profile's `sources`.
    pub label: String,
}

/// Builds a new profile for `name` from `sources` (not saved). Refuses less than
/// `cfg.min_speech` seconds of speech.
pub fn enroll(
    name: &str,
    sources: &[EnrollSource],
    embedder: &mut Embedder,
    cfg: &EnrollConfig,
) -> Result<Profile> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Config("a profile needs a non-empty name".into()));
    }
    let mut units = Vec::new();
    let mut speech_samples = 0usize;
    for s in sources {
        let audio = decode_16k(&s.path)?;
        let audio = match &s.spans {
            Some(sp) => select_spans(&audio, sp),
            None => audio,
        };
        let speech = speech_only(&audio, &cfg.vad)?;
        speech_samples += speech.len();
        units.extend(window_embeddings(&speech, embedder, cfg)?);
    }
    let speech_seconds = speech_samples as f64 / SAMPLE_RATE as f64;
    if speech_seconds < cfg.min_speech || units.is_empty() {
        return Err(Error::Config(format!(
            "not enough speech to enroll {name}: {speech_seconds:.1} s found, at least {:.0} s needed \
             (give a longer recording, or several)",
            cfg.min_speech
        )));
    }
    let sources = sources.iter().map(|s| s.label.clone()).collect();
    new_profile(name, &units, speech_seconds, sources, cfg.drop_fraction)
        .ok_or_else(|| Error::Inference("enrollment produced no usable embedding".into()))
}

/// A fresh profile from unit window embeddings (robust centroid and its self-similarity), or None
/// if no embedding is usable.
fn new_profile(
    name: &str,
    units: &[Vec<f32>],
    speech_seconds: f64,
    sources: Vec<String>,
    drop_fraction: f64,
) -> Option<Profile> {
    let (centroid, mean, p10) = robust_centroid(units, drop_fraction)?;
    let now = utc_now();
    Some(Profile {
        format: FORMAT.into(),
        version: VERSION,
        name: name.to_string(),
        created: now.clone(),
        updated: now,
        speech_seconds,
        centroid,
        windows: units.len(),
        self_similarity_mean: mean,
        self_similarity_p10: p10,
        sources,
    })
}

/// Builds a new profile for `name` from unit window embeddings already computed (a live session's
/// trusted windows of one speaker, "remember this voice"), covering `speech_seconds` of speech.
/// Refuses less than `min_speech` seconds.
pub fn profile_from_windows(
    name: &str,
    windows: &[Vec<f32>],
    speech_seconds: f64,
    source: &str,
    min_speech: f64,
) -> Result<Profile> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Config("a profile needs a non-empty name".into()));
    }
    if speech_seconds < min_speech || windows.is_empty() {
        return Err(Error::Config(format!(
            "not enough speech yet to remember {name}: {speech_seconds:.1} s heard, at least \
             {min_speech:.0} s needed (let them talk a little longer)"
        )));
    }
    let units: Vec<Vec<f32>> = windows
        .iter()
        .filter(|w| w.len() == EMBEDDING_DIM)
        .filter_map(|w| {
            let mut u = w.clone();
            normalize(&mut u).then_some(u)
        })
        .collect();
    new_profile(
        name,
        &units,
        speech_seconds,
        vec![source.to_string()],
        EnrollConfig::default().drop_fraction,
    )
    .ok_or_else(|| Error::Inference("no usable embedding to build a profile from".into()))
}

/// Saves `new` in `store`, added to the profile of the same name if there is one (like `whospoke
/// enroll` without `--replace`). Returns the file and whether a profile was updated (not created).
pub fn save_or_merge(store: &ProfileStore, new: &Profile) -> Result<(PathBuf, bool)> {
    let (profile, updated) = match store.find(&new.name)? {
        Some((_, mut old)) => {
            old.merge(new);
            (old, true)
        }
        None => (new.clone(), false),
    };
    Ok((store.save(&profile)?, updated))
}

/// The `[start, end)` spans of `speaker` in an RTTM file (every recording in it).
pub fn rttm_spans(rttm: &Path, speaker: &str) -> Result<Vec<(f64, f64)>> {
    let all = crate::eval::read_rttm(rttm)?;
    let mut v: Vec<(f64, f64)> = all
        .values()
        .flatten()
        .filter(|s| s.speaker == speaker)
        .map(|s| (s.start, s.end))
        .collect();
    if v.is_empty() {
        let mut labels: Vec<&str> = all.values().flatten().map(|s| s.speaker.as_str()).collect();
        labels.sort();
        labels.dedup();
        return Err(Error::Config(format!(
            "speaker {speaker} does not appear in {} (speakers there: {})",
            rttm.display(),
            labels.join(", ")
        )));
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

/// A profile as the live matcher needs it.
#[derive(Debug, Clone)]
pub struct KnownSpeaker {
    pub name: String,
    /// Unit vector.
    pub centroid: Vec<f32>,
    /// Cosine similarity at which a cluster speaker's centroid (`MatchConfig::min_windows` windows
    /// or more) is named after this profile.
    pub threshold: f32,
    /// Cosine similarity at which fewer windows (one window of a new voice, or a speaker's first
    /// windows) name it: the 10th percentile of the profile's own enrollment windows
    /// (`self_similarity_p10`), never below `threshold`. A single window is noisier than a
    /// centroid, so it must look as typical of the voice as 90 % of the windows the profile was
    /// built from.
    pub window_threshold: f32,
}

impl KnownSpeaker {
    /// From a stored profile with the match threshold `threshold`.
    pub fn from_profile(p: &Profile, threshold: f32) -> Self {
        let mut c = p.centroid.clone();
        normalize(&mut c);
        let p10 = if p.self_similarity_p10.is_finite() {
            p.self_similarity_p10.min(1.0)
        } else {
            1.0
        };
        Self {
            name: p.name.clone(),
            centroid: c,
            threshold,
            window_threshold: p10.max(threshold),
        }
    }
}

/// Matching settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchConfig {
    /// Windows a speaker's centroid must hold to be named at a profile's `threshold` (with fewer it
    /// must reach the profile's `window_threshold`).
    pub min_windows: usize,
    /// The best profile must beat the second best by this much.
    pub margin: f32,
    /// A named speaker changes name (or a name moves to another speaker) only for a match this much
    /// better.
    pub switch_margin: f32,
    /// Seconds of stream time over which the windows of a new voice count as evidence together
    /// (see [`Identifier::match_new_voice`]).
    pub new_voice_span: f64,
    /// A short window (0.5-1 s of speech) names a new voice alone only when it reaches the profile's
    /// `window_threshold` and leads the second best profile by this much (see
    /// [`Identifier::match_new_voice`]).
    pub short_window_margin: f32,
    /// Seconds of speech a window needs to name a new voice by itself at a profile's
    /// `window_threshold` (shorter windows need `short_window_margin` as well). With profiles loaded
    /// the analysis stage embeds one extra window when a speech region reaches this length
    /// (`analysis::WindowConfig::naming_window`), so that a known voice whose first turn is short is
    /// named three quarters of a second into its next one rather than a full second.
    pub naming_window: f64,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            min_windows: 3,
            margin: DEFAULT_MATCH_MARGIN,
            switch_margin: 0.1,
            new_voice_span: 6.0,
            short_window_margin: 0.25,
            naming_window: 0.75,
        }
    }
}

/// The unit vector halfway between the unit vector `v` and a profile's `centroid` (a new voice's speaker
/// starts there when short windows named it); `v` itself if they cancel out.
fn toward(v: Vec<f32>, centroid: &[f32]) -> Vec<f32> {
    let mut seed: Vec<f32> = v.iter().zip(centroid).map(|(a, b)| a + b).collect();
    if normalize(&mut seed) {
        seed
    } else {
        v
    }
}

/// How much speech a window of a new voice holds, as [`Identifier::match_new_voice`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowLength {
    /// Under [`MatchConfig::naming_window`]: names a voice alone only far ahead of every other
    /// profile (`short_window_margin`).
    Short,
    /// At least `naming_window`, but too short to move a centroid (the clusterer's trusted
    /// window, 1 s): names a voice alone; the speaker starts between it and the profile.
    Naming,
    /// Long enough to move a centroid: names a voice alone and the speaker starts from it.
    Trusted,
}

/// A change of name decided by [`Identifier::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct NameChange {
    /// Cluster speaker index.
    pub speaker: usize,
    /// The profile that now names it, or None: back to its `S` label.
    pub profile: Option<usize>,
    /// Cosine similarity of the speaker's centroid to that profile.
    pub similarity: f32,
}

/// Names cluster speakers after profiles (pure logic, no I/O).
#[derive(Debug, Clone)]
pub struct Identifier {
    pub known: Vec<KnownSpeaker>,
    pub cfg: MatchConfig,
    /// Per speaker: the profile naming it.
    held: Vec<Option<usize>>,
    /// Speakers named by the user: never touched.
    pinned: Vec<bool>,
    /// Recent windows of a new voice that no current speaker claims and whose best profile is free
    /// (see [`Identifier::match_new_voice`]).
    recent: Vec<Evidence>,
}

/// One window of a new voice, kept as evidence for naming it.
#[derive(Debug, Clone)]
struct Evidence {
    /// Stream time of its end (seconds).
    time: f64,
    /// Unit embedding.
    unit: Vec<f32>,
    /// Its best profile.
    profile: usize,
    /// Its similarity to that profile.
    similarity: f32,
}

/// A new voice named by [`Identifier::match_new_voice`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewVoice {
    /// The profile naming it.
    pub profile: usize,
    /// Similarity of the evidence (the window, or the mean of the voice's recent windows) to it.
    pub similarity: f32,
    /// Unit vector to start the speaker from: the window that named it, or (named from several
    /// windows) their mean together with the profile's centroid.
    pub seed: Vec<f32>,
}

impl Identifier {
    pub fn new(known: Vec<KnownSpeaker>, cfg: MatchConfig) -> Self {
        Self {
            known,
            cfg,
            held: Vec::new(),
            pinned: Vec::new(),
            recent: Vec::new(),
        }
    }

    fn grow(&mut self, n: usize) {
        if self.held.len() < n {
            self.held.resize(n, None);
            self.pinned.resize(n, false);
        }
    }

    /// The profile naming `speaker`.
    pub fn held(&self, speaker: usize) -> Option<usize> {
        self.held.get(speaker).copied().flatten()
    }

    /// The user named `speaker`: it keeps that name; its profile (if any) is free again.
    pub fn pin(&mut self, speaker: usize) {
        self.grow(speaker + 1);
        self.pinned[speaker] = true;
        self.held[speaker] = None;
    }

    /// The best profile for the unit vector `v`: (profile, similarity, second best similarity).
    fn best_profile(&self, v: &[f32]) -> Option<(usize, f32, f32)> {
        let mut best: Option<(usize, f32)> = None;
        let mut second = -1.0f32;
        for (p, k) in self.known.iter().enumerate() {
            let s = dot(v, &k.centroid);
            match best {
                Some((_, b)) if s <= b => second = second.max(s),
                Some((_, b)) => {
                    second = second.max(b);
                    best = Some((p, s));
                }
                None => best = Some((p, s)),
            }
        }
        best.map(|(p, s)| (p, s, second))
    }

    /// Whether profile `p` names some speaker.
    fn is_held(&self, p: usize) -> bool {
        self.held.contains(&Some(p))
    }

    /// Whether a window of a new voice (unit vector `window` ending at stream time `time`, which
    /// the clusterer would not confidently give to any existing speaker) is a known voice.
    ///
    /// A window is evidence for its best profile when that profile names nobody yet, leads the
    /// second best by `margin`, and the window resembles it clearly more (`switch_margin`) than any
    /// current speaker, none of whose centroids matches the profile itself. The voice is named when
    /// - a window of at least `naming_window` seconds of speech ([`WindowLength::Naming`] or
    ///   [`WindowLength::Trusted`]; "long" below) reaches the profile's
    ///   `window_threshold` (it looks as typical of the voice as 90 % of the profile's own
    ///   windows), or
    /// - a shorter window does, leading the second best profile by `short_window_margin` (a known
    ///   voice whose first turn is short is then named from the start of its next turn instead of a
    ///   second later), or
    /// - the mean of the profile's evidence windows of the last `new_voice_span` seconds (this one
    ///   and at least one earlier, short ones included) reaches the profile's `threshold`, with
    ///   `margin` over the second best profile and clearly more like it than any current speaker:
    ///   the accumulated evidence of the voice's first windows, which are often short (a first
    ///   turn of 1 s yields only windows under 1 s), or
    /// - a long window reaches the profile's `threshold`, as did another evidence window within
    ///   `new_voice_span` seconds (two windows that agree with the profile agree with each other).
    ///
    /// A shorter window names a voice by itself only under the stricter bar above. The speaker
    /// starts from the window that named it when it is [`WindowLength::Trusted`], else between
    /// it and the profile's centroid: a window too short to move a centroid makes a poor one by
    /// itself (in reverberant, noisy copies of the dev set, a speaker started from one 0.75 s
    /// window drew too few of the voice's next windows, and a second speaker grew beside it). On the dev set
    /// no window of a never-enrolled speaker reached the default `threshold` (0.5): best-profile
    /// similarity at most 0.47, 99th percentile 0.37-0.40, over 2036 windows of three enrolment
    /// splits (the calibration line of `scripts/enroll-eval.sh` at 410a715); a mean of several
    /// windows of one voice is less noisy than its windows.
    ///
    /// The caller then starts a speaker from [`NewVoice::seed`] and calls [`Identifier::seed`].
    pub fn match_new_voice(
        &mut self,
        window: &[f32],
        time: f64,
        length: WindowLength,
        centroids: &[Vec<f32>],
        taken: impl Fn(&str) -> bool,
    ) -> Option<NewVoice> {
        let span = self.cfg.new_voice_span;
        self.recent.retain(|e| (time - e.time).abs() <= span);
        let (p, s, second) = self.best_profile(window)?;
        let k = &self.known[p];
        tracing::debug!(
            "new-voice window at {time:.2} s ({length:?}): best {} {s:.3} (window threshold {:.3}), second {second:.3}",
            k.name,
            k.window_threshold,
        );
        if s - second < self.cfg.margin || self.is_held(p) || taken(&k.name) {
            return None;
        }
        for c in centroids {
            if dot(window, c) + self.cfg.switch_margin > s || dot(c, &k.centroid) >= k.threshold {
                return None;
            }
        }
        let named = |id: &mut Self, similarity: f32, seed: Vec<f32>| {
            id.recent.retain(|e| e.profile != p);
            Some(NewVoice {
                profile: p,
                similarity,
                seed,
            })
        };
        let long = length != WindowLength::Short;
        let alone = s >= k.window_threshold && (long || s - second >= self.cfg.short_window_margin);
        let backed = long
            && s >= k.threshold
            && self
                .recent
                .iter()
                .any(|e| e.profile == p && e.similarity >= k.threshold);
        if alone || backed {
            let seed = match length {
                WindowLength::Trusted => window.to_vec(),
                // Too short to move a centroid, so too short to start one alone.
                _ => toward(window.to_vec(), &k.centroid),
            };
            return named(self, s, seed);
        }
        self.recent.push(Evidence {
            time,
            unit: window.to_vec(),
            profile: p,
            similarity: s,
        });
        // Accumulated evidence: the mean of this profile's recent windows.
        let mut mean = vec![0.0f32; window.len()];
        let mut n = 0;
        for e in self.recent.iter().filter(|e| e.profile == p) {
            mean.iter_mut().zip(&e.unit).for_each(|(m, x)| *m += x);
            n += 1;
        }
        if n < 2 || !normalize(&mut mean) {
            return None;
        }
        let (q, ms, msecond) = self.best_profile(&mean)?;
        let k = &self.known[p];
        tracing::debug!(
            "new voice's {n} windows against {}: mean similarity {ms:.3}, second {msecond:.3}",
            k.name
        );
        let claimed = centroids
            .iter()
            .any(|c| dot(&mean, c) + self.cfg.switch_margin > ms);
        if q == p && ms >= k.threshold && ms - msecond >= self.cfg.margin && !claimed {
            // Short windows alone make a poor centroid (the clusterer never moves a centroid
            // with them): the speaker starts from their mean together with the profile's centroid,
            // and the session's trusted windows take over from there.
            return named(self, ms, toward(mean, &k.centroid));
        }
        None
    }

    /// Speaker `speaker` (just started from a window that matched profile `p`) is named after it.
    pub fn seed(&mut self, speaker: usize, p: usize) {
        self.grow(speaker + 1);
        if !self.pinned[speaker] {
            self.held[speaker] = Some(p);
        }
    }

    /// Compares every speaker with the profiles; returns the name changes. A centroid of at least
    /// `min_windows` windows is named at the profile's `threshold`; one of fewer windows (a
    /// speaker's first windows) only at its stricter `window_threshold`.
    /// `taken(name)` says whether a name is used by a speaker the identifier does not manage (a
    /// user's rename); such profiles are skipped.
    pub fn check(
        &mut self,
        centroids: &[Vec<f32>],
        counts: &[usize],
        taken: impl Fn(&str) -> bool,
    ) -> Vec<NameChange> {
        self.grow(centroids.len());
        let mut changes = Vec::new();
        if self.known.is_empty() {
            return changes;
        }
        let sim = |i: usize, p: usize| dot(&centroids[i], &self.known[p].centroid);
        for (i, centroid) in centroids.iter().enumerate() {
            let n = counts.get(i).copied().unwrap_or(0);
            if self.pinned[i] || n == 0 {
                continue;
            }
            let Some((p, s, second)) = self.best_profile(centroid) else {
                continue;
            };
            let threshold = if n >= self.cfg.min_windows {
                self.known[p].threshold
            } else {
                self.known[p].window_threshold
            };
            if s < threshold || s - second < self.cfg.margin {
                continue;
            }
            if self.held[i] == Some(p) || taken(&self.known[p].name) {
                continue;
            }
            if let Some(q) = self.held[i] {
                // Already named: only a clearly better profile renames it.
                if s < sim(i, q) + self.cfg.switch_margin {
                    continue;
                }
            }
            let holder = (0..self.held.len()).find(|&j| j != i && self.held[j] == Some(p));
            if let Some(j) = holder {
                // The name is another speaker's: it moves only to a clearly better match.
                if s < sim(j, p) + self.cfg.switch_margin {
                    continue;
                }
                self.held[j] = None;
                changes.push(NameChange {
                    speaker: j,
                    profile: None,
                    similarity: sim(j, p),
                });
            }
            self.held[i] = Some(p);
            changes.push(NameChange {
                speaker: i,
                profile: Some(p),
                similarity: s,
            });
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..EMBEDDING_DIM)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        normalize(&mut v);
        v
    }

    fn mix(a: &[f32], b: &[f32], w: f32) -> Vec<f32> {
        let mut v: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + w * y).collect();
        normalize(&mut v);
        v
    }

    fn known(names: &[(&str, u64)]) -> Vec<KnownSpeaker> {
        names
            .iter()
            .map(|&(n, s)| KnownSpeaker {
                name: n.into(),
                centroid: unit(s),
                threshold: DEFAULT_MATCH_THRESHOLD,
                window_threshold: 0.7,
            })
            .collect()
    }

    #[test]
    fn names_confident_matches_only_and_one_speaker_per_profile() {
        let k = known(&[("Alice", 1), ("Bob", 2)]);
        let mut id = Identifier::new(k.clone(), MatchConfig::default());
        // Speaker 0 ~ Alice, speaker 1 unknown, speaker 2 ~ Alice but less.
        let c = vec![
            mix(&k[0].centroid, &unit(10), 0.5),
            unit(11),
            mix(&k[0].centroid, &unit(12), 0.9),
        ];
        let ch = id.check(&c, &[5, 5, 5], |_| false);
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert_eq!((ch[0].speaker, ch[0].profile), (0, Some(0)));
        // Fewer windows than `min_windows`: only the stricter window threshold names.
        let strict: Vec<KnownSpeaker> = k
            .iter()
            .map(|x| KnownSpeaker {
                window_threshold: 0.95,
                ..x.clone()
            })
            .collect();
        let mut id2 = Identifier::new(strict, MatchConfig::default());
        assert!(id2.check(&c, &[2, 2, 2], |_| false).is_empty());
        let mut id2 = Identifier::new(k.clone(), MatchConfig::default());
        let ch = id2.check(&c, &[2, 2, 2], |_| false);
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert_eq!((ch[0].speaker, ch[0].profile), (0, Some(0)));
        // Stable: checking again changes nothing.
        assert!(id.check(&c, &[5, 5, 5], |_| false).is_empty());
        // A user's name blocks the profile.
        let mut id3 = Identifier::new(k, MatchConfig::default());
        assert!(id3.check(&c, &[5, 5, 5], |n| n == "Alice").is_empty());
    }

    #[test]
    fn a_window_too_short_to_move_a_centroid_names_but_does_not_seed_alone() {
        let k = known(&[("Alice", 1), ("Bob", 2)]);
        let none = |_: &str| false;
        let typical = mix(&k[0].centroid, &unit(20), 0.5);
        let weak = mix(&k[0].centroid, &unit(21), 1.33);
        // A trusted window starts the speaker from itself.
        let mut id = Identifier::new(k.clone(), MatchConfig::default());
        let m = id
            .match_new_voice(&typical, 1.0, WindowLength::Trusted, &[], none)
            .expect("a typical trusted window");
        assert_eq!(m.seed, typical);
        // A naming-length window names alone as well (no `short_window_margin` needed), but the
        // speaker starts between it and the profile.
        let strict = MatchConfig {
            short_window_margin: 2.0,
            ..MatchConfig::default()
        };
        let mut id = Identifier::new(k.clone(), strict.clone());
        let m = id
            .match_new_voice(&typical, 1.0, WindowLength::Naming, &[], none)
            .expect("a typical naming window");
        assert_eq!(m.profile, 0);
        assert!(dot(&m.seed, &k[0].centroid) > dot(&typical, &k[0].centroid) + 0.01);
        let mut id = Identifier::new(k.clone(), strict.clone());
        assert_eq!(
            id.match_new_voice(&typical, 1.0, WindowLength::Short, &[], none),
            None
        );
        // Named by two agreeing windows at `threshold`, the newer naming-length: the same seed.
        let mut id = Identifier::new(k.clone(), strict.clone());
        assert_eq!(
            id.match_new_voice(&weak, 1.0, WindowLength::Short, &[], none),
            None
        );
        let m = id
            .match_new_voice(&weak, 1.3, WindowLength::Naming, &[], none)
            .expect("two agreeing windows");
        assert!(dot(&m.seed, &k[0].centroid) > dot(&weak, &k[0].centroid) + 0.01);
    }

    #[test]
    fn new_voice_named_from_one_typical_window_or_two_agreeing_ones() {
        let k = known(&[("Alice", 1), ("Bob", 2)]);
        let cfg = MatchConfig::default();
        let none = |_: &str| false;
        // cos(mix(a, x, w), a) = 1 / sqrt(1 + w^2) for a random x: 0.89, 0.6.
        let typical = mix(&k[0].centroid, &unit(20), 0.5);
        let weak = mix(&k[0].centroid, &unit(21), 1.33);
        let mut id = Identifier::new(k.clone(), cfg.clone());
        assert_eq!(
            id.match_new_voice(&typical, 1.0, WindowLength::Trusted, &[], none)
                .map(|m| m.profile),
            Some(0)
        );
        // Above `threshold` but below `window_threshold`: a second such window is needed, and it
        // must come within `new_voice_span`.
        let mut id = Identifier::new(k.clone(), cfg.clone());
        assert_eq!(
            id.match_new_voice(&weak, 1.0, WindowLength::Trusted, &[], none),
            None
        );
        assert_eq!(
            id.match_new_voice(&weak, 9.0, WindowLength::Trusted, &[], none),
            None
        );
        assert_eq!(
            id.match_new_voice(&weak, 10.0, WindowLength::Trusted, &[], none)
                .map(|m| m.profile),
            Some(0)
        );
        // A short window names by itself only when typical of the voice (`window_threshold`) and
        // far ahead of every other profile (`short_window_margin`); the speaker then starts
        // between the window and the profile.
        let mut id = Identifier::new(k.clone(), cfg.clone());
        let m = id
            .match_new_voice(&typical, 1.0, WindowLength::Short, &[], none)
            .expect("a typical short window");
        assert_eq!(m.profile, 0);
        assert!(dot(&m.seed, &k[0].centroid) > dot(&typical, &k[0].centroid));
        let strict = MatchConfig {
            short_window_margin: 2.0,
            ..cfg.clone()
        };
        let mut id = Identifier::new(k.clone(), strict);
        assert_eq!(
            id.match_new_voice(&typical, 1.0, WindowLength::Short, &[], none),
            None
        );
        // ... and a short window that does not name backs a long one.
        let mut id = Identifier::new(k.clone(), cfg.clone());
        assert_eq!(
            id.match_new_voice(&weak, 1.0, WindowLength::Short, &[], none),
            None
        );
        assert_eq!(
            id.match_new_voice(&weak, 1.5, WindowLength::Trusted, &[], none)
                .map(|m| m.profile),
            Some(0)
        );
        // Accumulated evidence: two short windows, each below `threshold` (0.47 < 0.5), whose
        // mean reaches it (about 0.6: their noise differs), name the voice; the speaker starts
        // between their mean and the profile.
        let mut id = Identifier::new(k.clone(), cfg.clone());
        let short = |seed| mix(&k[0].centroid, &unit(seed), 1.9);
        assert!(dot(&short(23), &k[0].centroid) < k[0].threshold);
        assert_eq!(
            id.match_new_voice(&short(23), 1.0, WindowLength::Short, &[], none),
            None
        );
        let m = id
            .match_new_voice(&short(24), 1.5, WindowLength::Short, &[], none)
            .expect("named from two windows");
        assert_eq!(m.profile, 0);
        assert!(m.similarity >= k[0].threshold, "{}", m.similarity);
        assert!(dot(&m.seed, &k[0].centroid) > m.similarity);
        // ... but not when they are further apart than `new_voice_span`.
        let mut id = Identifier::new(k.clone(), cfg.clone());
        assert_eq!(
            id.match_new_voice(&short(23), 1.0, WindowLength::Short, &[], none),
            None
        );
        assert_eq!(
            id.match_new_voice(&short(24), 9.0, WindowLength::Short, &[], none),
            None
        );
        // An unknown voice never; a window that an existing speaker explains about as well, never.
        let mut id = Identifier::new(k.clone(), cfg.clone());
        for t in 0..5 {
            assert_eq!(
                id.match_new_voice(&unit(30 + t), t as f64, WindowLength::Trusted, &[], none),
                None
            );
        }
        let near = vec![mix(&typical, &unit(22), 0.2)];
        assert_eq!(
            id.match_new_voice(&typical, 1.0, WindowLength::Trusted, &near, none),
            None
        );
        // A profile already naming a speaker, or blocked by a user's name, is not offered again.
        id.seed(0, 0);
        assert_eq!(
            id.match_new_voice(&typical, 2.0, WindowLength::Trusted, &[unit(40)], none),
            None
        );
        let mut id = Identifier::new(k, cfg);
        assert_eq!(
            id.match_new_voice(&typical, 1.0, WindowLength::Trusted, &[], |n| n == "Alice"),
            None
        );
    }

    #[test]
    fn robust_centroid_ignores_outliers() {
        let base = unit(5);
        let mut units: Vec<Vec<f32>> = (0..16).map(|k| mix(&base, &unit(100 + k), 0.4)).collect();
        units.extend((0..3).map(|k| unit(200 + k)));
        let (c, mean, p10) = robust_centroid(&units, 0.2).unwrap();
        assert!(dot(&c, &base) > 0.95);
        assert!(p10 < mean && mean < 1.0);
    }

    #[test]
    fn date_format() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[10] == b'T');
    }
}
