//! Diarization scoring: RTTM reading, DER and JER exactly as the reference scorer
//! (`shared/eval/score.py`, built on pyannote.metrics 4.x) computes them.
//!
//! What is reproduced, and how:
//!
//! * **Scored region**: the whole file, `[0, end]`, where `end` is the larger of the audio duration
//!   (from `<uri>.wav` in the audio directory, or an explicit duration) and the latest segment end over
//!   reference and hypothesis. As in score.py, this only matters for segments outside the file.
//! * **Collar** (md-eval convention): `± collar` seconds around every reference segment boundary are
//!   removed from the scored region (pyannote's `collar` is the total width, `2 * collar`).
//! * **skip_overlap**: reference regions where two or more reference segments are active are removed.
//! * **Mapping**: optimal one-to-one mapping maximising the total co-occurrence duration between
//!   hypothesis and reference speakers (Hungarian algorithm); pairs with zero co-occurrence stay unmapped.
//! * **DER** components, computed on the exact elementary intervals between all boundaries (no frame
//!   sampling): in each interval with `R` active reference segments and `H` active hypothesis segments
//!   (counted with multiplicity, as pyannote counts tracks), `total += R`, `miss += max(0, R-H)`,
//!   `false alarm += max(0, H-R)`, `confusion += min(R, H) - correct`, each times the interval duration.
//! * **JER** (DIHARD-2, pyannote implementation): for each reference speaker, `(FA + MISS) / |ref ∪ hyp|`
//!   against its mapped hypothesis speaker (1 when unmapped), averaged over reference speakers; the
//!   corpus JER averages over all reference speakers of all files.
//!
//! Known residual difference: when two assignments are exactly tied (equal co-occurrence durations,
//! which takes grid-aligned synthetic segments), the solver may pick a different one than scipy. DER is
//! the same for every optimal assignment; JER can differ in that case (seen: 0.08 % on a fuzzed file).
//!
//! Measured agreement with score.py on the stored dev hypotheses is in `tests/eval_scorer.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use pathfinding::prelude::{kuhn_munkres, Matrix};
use serde::Serialize;

use crate::error::{Error, Result};

/// One speaker turn read from an RTTM `SPEAKER` line, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub speaker: String,
}

impl Segment {
    /// Convenience constructor.
    pub fn new(start: f64, end: f64, speaker: impl Into<String>) -> Self {
        Segment {
            start,
            end,
            speaker: speaker.into(),
        }
    }
}

/// Segments per uri, as read from one or more RTTM files.
pub type Rttm = BTreeMap<String, Vec<Segment>>;

/// Scoring options (defaults: no collar, overlap scored, durations from WAVs next to the reference).
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// ± seconds around each reference boundary not scored (md-eval convention; 0.25 == `md-eval -c 0.25`).
    pub collar: f64,
    /// Exclude reference regions with two or more active speakers.
    pub skip_overlap: bool,
    /// Where `<uri>.wav` lives, for the file durations. `None`: the reference directory (or the directory
    /// of the reference RTTM file), like score.py's default.
    pub audio_dir: Option<PathBuf>,
    /// Explicit file durations in seconds by uri; they take precedence over WAV headers.
    pub durations: Option<HashMap<String, f64>>,
}

/// Scores of one file. Times are seconds; rates are fractions (1.0 == 100 %).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileScore {
    pub uri: String,
    /// End of the scored region `[0, scored]`.
    pub scored: f64,
    /// Total reference speech in the scored region (overlapped speech counted once per speaker).
    pub total: f64,
    pub miss: f64,
    pub false_alarm: f64,
    pub confusion: f64,
    /// `(miss + false_alarm + confusion) / total`; 0 when both are 0, infinite when only `total` is 0.
    pub der: f64,
    /// Mean per-reference-speaker Jaccard error; NaN when the file has no reference speaker.
    pub jer: f64,
    /// Sum of the per-speaker Jaccard errors (numerator of `jer`).
    pub jer_error: f64,
    /// Reference speakers scored for JER (denominator of `jer`).
    pub jer_speakers: usize,
    /// Distinct reference / hypothesis labels in the file.
    pub ref_speakers: usize,
    pub hyp_speakers: usize,
    /// Whether the hypothesis had this uri at all (a missing one is scored as empty).
    pub has_hypothesis: bool,
}

impl FileScore {
    /// Whether the hypothesis found as many speakers as the reference has.
    pub fn count_correct(&self) -> bool {
        self.ref_speakers == self.hyp_speakers
    }
}

/// Per-file and corpus-level scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub collar: f64,
    pub skip_overlap: bool,
    pub files: Vec<FileScore>,
    /// Corpus totals in seconds (sums over files).
    pub total: f64,
    pub miss: f64,
    pub false_alarm: f64,
    pub confusion: f64,
    /// Time-weighted corpus DER: summed components / summed reference speech.
    pub der: f64,
    /// Corpus JER: mean over all reference speakers of all files.
    pub jer: f64,
    /// Unweighted mean of the per-file DERs.
    pub mean_file_der: f64,
    /// Number of files whose hypothesis speaker count equals the reference's.
    pub count_correct: usize,
    /// Non-fatal problems (missing hypothesis, hypothesis-only uris, segments past the audio end).
    pub warnings: Vec<String>,
}

fn rttm_err(path: &Path, line: usize, why: impl Into<String>) -> Error {
    Error::Rttm {
        path: path.to_path_buf(),
        line,
        why: why.into(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parse RTTM text. Blank lines, `;`/`#` comments and non-`SPEAKER` records are skipped. Zero-duration
/// segments are dropped but still declare their uri (like score.py).
fn parse_rttm(text: &str, path: &Path) -> Result<Rttm> {
    let mut out = Rttm::new();
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        let p: Vec<&str> = line.split_whitespace().collect();
        if p.is_empty() || p[0].starts_with(';') || p[0].starts_with('#') || p[0] != "SPEAKER" {
            continue;
        }
        if p.len() < 8 {
            return Err(rttm_err(
                path,
                ln,
                format!(
                    "malformed RTTM line: expected at least 8 fields, found {}: {}",
                    p.len(),
                    line.trim()
                ),
            ));
        }
        let num = |s: &str, what: &str| -> Result<f64> {
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(rttm_err(
                    path,
                    ln,
                    format!("malformed RTTM line: {what} {s:?} is not a finite number"),
                )),
            }
        };
        let start = num(p[3], "start time")?;
        let dur = num(p[4], "duration")?;
        if dur < 0.0 {
            return Err(rttm_err(
                path,
                ln,
                format!("malformed RTTM line: negative duration {}", p[4]),
            ));
        }
        let segs = out.entry(p[1].to_string()).or_default();
        if dur > 0.0 {
            segs.push(Segment::new(start, start + dur, p[7]));
        }
    }
    Ok(out)
}

/// Read an RTTM file, or every `*.rttm` file of a directory (sorted by name), into segments per uri.
///
/// In a directory, a file without any `SPEAKER` line declares its stem as a uri with no speech (an empty
/// hypothesis), as in score.py. Malformed lines give [`Error::Rttm`] with the file, line and reason.
pub fn read_rttm(path: impl AsRef<Path>) -> Result<Rttm> {
    let path = path.as_ref();
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut v = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| io_err(path, e))? {
            let p = entry.map_err(|e| io_err(path, e))?.path();
            if p.extension().is_some_and(|x| x == "rttm") && p.is_file() {
                v.push(p);
            }
        }
        v.sort();
        if v.is_empty() {
            return Err(io_err(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no .rttm files in this directory",
                ),
            ));
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut data = Rttm::new();
    for f in &files {
        let text = fs::read_to_string(f).map_err(|e| io_err(f, e))?;
        let parsed = parse_rttm(&text, f)?;
        if meta.is_dir() && parsed.is_empty() {
            if let Some(stem) = f.file_stem() {
                data.entry(stem.to_string_lossy().into_owned()).or_default();
            }
        }
        for (uri, segs) in parsed {
            data.entry(uri).or_default().extend(segs);
        }
    }
    Ok(data)
}

/// Read a `uri<TAB>seconds` file (blank lines, `#` comments and a `uri ...` header line allowed).
pub fn read_durations(path: impl AsRef<Path>) -> Result<HashMap<String, f64>> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let p: Vec<&str> = line.split_whitespace().collect();
        if p.is_empty() || p[0].starts_with('#') || (i == 0 && p[0] == "uri") {
            continue;
        }
        let d = p
            .get(1)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d >= 0.0)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{}:{}: expected `uri seconds`",
                    path.display(),
                    i + 1
                ))
            })?;
        out.insert(p[0].to_string(), d);
    }
    Ok(out)
}

/// Duration of a WAV file from its RIFF header (data bytes / block align / sample rate).
/// `None` when the file is missing or not a readable WAV.
pub fn wav_duration(path: impl AsRef<Path>) -> Option<f64> {
    let mut f = fs::File::open(path.as_ref()).ok()?;
    let file_len = f.metadata().ok()?.len();
    let mut hdr = [0u8; 12];
    f.read_exact(&mut hdr).ok()?;
    if &hdr[0..4] != b"RIFF" || &hdr[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12u64;
    let mut fmt: Option<(u32, u16)> = None; // (sample rate, block align)
    while pos + 8 <= file_len {
        let mut ch = [0u8; 8];
        f.read_exact(&mut ch).ok()?;
        let size = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]) as u64;
        pos += 8;
        match &ch[0..4] {
            b"fmt " => {
                let mut b = vec![0u8; size.min(64) as usize];
                f.read_exact(&mut b).ok()?;
                if b.len() < 16 {
                    return None;
                }
                let rate = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                let align = u16::from_le_bytes([b[12], b[13]]);
                fmt = Some((rate, align));
            }
            b"data" => {
                let (rate, align) = fmt?;
                if rate == 0 || align == 0 {
                    return None;
                }
                // a streamed WAV may carry a size of 0 or 0xFFFFFFFF: trust the file length instead
                let bytes = size.min(file_len - pos);
                return Some((bytes / align as u64) as f64 / rate as f64);
            }
            _ => {}
        }
        pos += size + (size & 1);
        f.seek(SeekFrom::Start(pos)).ok()?;
    }
    None
}

/// Sorted, merged intervals.
fn merge(mut iv: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    iv.retain(|(a, b)| b > a);
    iv.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(iv.len());
    for (a, b) in iv {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `[lo, hi]` minus the union of `removed`.
fn gaps(lo: f64, hi: f64, removed: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut t = lo;
    for &(a, b) in &merge(removed.to_vec()) {
        if b <= t {
            continue;
        }
        if a >= hi {
            break;
        }
        if a > t {
            out.push((t, a));
        }
        t = t.max(b);
    }
    if hi > t {
        out.push((t, hi));
    }
    out
}

/// Regions where at least two reference segments are active.
fn overlap_regions(segs: &[(f64, f64, usize)]) -> Vec<(f64, f64)> {
    let mut ev: Vec<(f64, i32)> = Vec::with_capacity(2 * segs.len());
    for &(s, e, _) in segs {
        ev.push((s, 1));
        ev.push((e, -1));
    }
    // at equal times, process ends first: touching segments do not overlap
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut out = Vec::new();
    let mut n = 0;
    let mut open = 0.0;
    for (t, d) in ev {
        let before = n;
        n += d;
        if before < 2 && n >= 2 {
            open = t;
        } else if before >= 2 && n < 2 && t > open {
            out.push((open, t));
        }
    }
    out
}

fn label_index(segs: &[Segment]) -> (Vec<String>, Vec<(f64, f64, usize)>) {
    let labels: Vec<String> = segs
        .iter()
        .map(|s| s.speaker.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let idx: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let tracks = segs
        .iter()
        .filter(|s| s.end > s.start)
        .map(|s| (s.start, s.end, idx[s.speaker.as_str()]))
        .collect();
    (labels, tracks)
}

/// Optimal one-to-one mapping maximising co-occurrence: `map[r] = Some(h)` for each reference label `r`.
/// Pairs with zero co-occurrence stay unmapped (as in pyannote's HungarianMapper).
fn hungarian(cooc: &[Vec<f64>], nr: usize, nh: usize) -> Vec<Option<usize>> {
    let mut map = vec![None; nr];
    if nr == 0 || nh == 0 {
        return map;
    }
    // integer weights (nanoseconds) for the solver; ties beyond 1 ns are irrelevant
    let w = |r: usize, h: usize| (cooc[r][h] * 1e9).round() as i64;
    if nr <= nh {
        let m = Matrix::from_fn(nr, nh, |(r, h)| w(r, h));
        let (_, assign) = kuhn_munkres(&m);
        for (r, &h) in assign.iter().enumerate() {
            if cooc[r][h] > 0.0 {
                map[r] = Some(h);
            }
        }
    } else {
        let m = Matrix::from_fn(nh, nr, |(h, r)| w(r, h));
        let (_, assign) = kuhn_munkres(&m);
        for (h, &r) in assign.iter().enumerate() {
            if cooc[r][h] > 0.0 {
                map[r] = Some(h);
            }
        }
    }
    map
}

/// One elementary interval of the scored region with the active track counts per label.
struct Piece {
    dur: f64,
    r: Vec<u32>,
    h: Vec<u32>,
}

/// Score one file. `duration` is the audio duration when known; the scored region is
/// `[0, max(duration, latest segment end)]`.
pub fn score_file(
    uri: &str,
    reference: &[Segment],
    hypothesis: &[Segment],
    duration: Option<f64>,
    collar: f64,
    skip_overlap: bool,
) -> FileScore {
    let (rl, rt) = label_index(reference);
    let (hl, ht) = label_index(hypothesis);
    let (nr, nh) = (rl.len(), hl.len());
    let end = rt
        .iter()
        .chain(ht.iter())
        .map(|t| t.1)
        .fold(duration.unwrap_or(0.0).max(0.0), f64::max);

    // scored region: [0, end] minus collars and (optionally) reference overlap
    let mut removed = Vec::new();
    if collar > 0.0 {
        for &(s, e, _) in &rt {
            removed.push((s - collar, s + collar));
            removed.push((e - collar, e + collar));
        }
    }
    if skip_overlap {
        removed.extend(overlap_regions(&rt));
    }
    let uem = if end > 0.0 {
        gaps(0.0, end, &removed)
    } else {
        Vec::new()
    };

    // elementary intervals between all boundaries, kept when inside the scored region
    let mut times: Vec<f64> = Vec::with_capacity(2 * (rt.len() + ht.len() + uem.len()));
    for &(s, e, _) in rt.iter().chain(ht.iter()) {
        times.push(s);
        times.push(e);
    }
    for &(a, b) in &uem {
        times.push(a);
        times.push(b);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times.dedup();
    // events: (time, is_hyp, label, +1/-1)
    let mut ev: Vec<(f64, bool, usize, i32)> = Vec::with_capacity(2 * (rt.len() + ht.len()));
    for &(s, e, l) in &rt {
        ev.push((s, false, l, 1));
        ev.push((e, false, l, -1));
    }
    for &(s, e, l) in &ht {
        ev.push((s, true, l, 1));
        ev.push((e, true, l, -1));
    }
    ev.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rc = vec![0i64; nr];
    let mut hc = vec![0i64; nh];
    let mut pieces: Vec<Piece> = Vec::new();
    let (mut ei, mut ui) = (0usize, 0usize);
    for w in times.windows(2) {
        let (t0, t1) = (w[0], w[1]);
        while ei < ev.len() && ev[ei].0 <= t0 {
            let (_, is_h, l, d) = ev[ei];
            if is_h {
                hc[l] += d as i64;
            } else {
                rc[l] += d as i64;
            }
            ei += 1;
        }
        let mid = 0.5 * (t0 + t1);
        while ui < uem.len() && uem[ui].1 <= mid {
            ui += 1;
        }
        if ui >= uem.len() || uem[ui].0 > mid {
            continue;
        }
        if rc.iter().all(|&c| c == 0) && hc.iter().all(|&c| c == 0) {
            continue;
        }
        pieces.push(Piece {
            dur: t1 - t0,
            r: rc.iter().map(|&c| c.max(0) as u32).collect(),
            h: hc.iter().map(|&c| c.max(0) as u32).collect(),
        });
    }

    // co-occurrence (track pairs, with multiplicity) and the optimal mapping
    let mut cooc = vec![vec![0.0; nh]; nr];
    for p in &pieces {
        for (r, &cr) in p.r.iter().enumerate() {
            if cr == 0 {
                continue;
            }
            for (h, &ch) in p.h.iter().enumerate() {
                if ch > 0 {
                    cooc[r][h] += p.dur * (cr * ch) as f64;
                }
            }
        }
    }
    let map = hungarian(&cooc, nr, nh);

    // DER components
    let (mut total, mut miss, mut fa, mut conf) = (0.0, 0.0, 0.0, 0.0);
    for p in &pieces {
        let n_r: u32 = p.r.iter().sum();
        let n_h: u32 = p.h.iter().sum();
        let correct: u32 = map
            .iter()
            .enumerate()
            .filter_map(|(r, m)| m.map(|h| p.r[r].min(p.h[h])))
            .sum();
        total += p.dur * n_r as f64;
        miss += p.dur * n_r.saturating_sub(n_h) as f64;
        fa += p.dur * n_h.saturating_sub(n_r) as f64;
        conf += p.dur * (n_r.min(n_h) - correct) as f64;
    }
    let err = miss + fa + conf;
    let der = if total > 0.0 {
        err / total
    } else if err == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };

    // JER over the reference speakers present in the scored region
    let mut jer_error = 0.0;
    let mut jer_speakers = 0usize;
    for (r, m) in map.iter().enumerate() {
        let present: f64 = pieces.iter().filter(|p| p.r[r] > 0).map(|p| p.dur).sum();
        if present <= 0.0 {
            continue;
        }
        jer_speakers += 1;
        jer_error += match *m {
            None => 1.0,
            Some(h) => {
                let (mut union, mut e) = (0.0, 0.0);
                for p in &pieces {
                    let (a, b) = (p.r[r] > 0, p.h[h] > 0);
                    if a || b {
                        union += p.dur;
                    }
                    if a != b {
                        e += p.dur;
                    }
                }
                if union > 0.0 {
                    e / union
                } else {
                    0.0
                }
            }
        };
    }
    let jer = if jer_speakers > 0 {
        jer_error / jer_speakers as f64
    } else {
        f64::NAN
    };

    FileScore {
        uri: uri.to_string(),
        scored: end,
        total,
        miss,
        false_alarm: fa,
        confusion: conf,
        der,
        jer,
        jer_error,
        jer_speakers,
        ref_speakers: nr,
        hyp_speakers: nh,
        has_hypothesis: true,
    }
}

/// Score already-loaded reference and hypothesis segments. Durations come from `opts.durations` only
/// (`audio_dir` is not consulted here; see [`evaluate`]).
pub fn evaluate_segments(reference: &Rttm, hypothesis: &Rttm, opts: &EvalOptions) -> Report {
    let empty: Vec<Segment> = Vec::new();
    let mut warnings = Vec::new();
    let mut files = Vec::with_capacity(reference.len());
    for (uri, rsegs) in reference {
        let hsegs = hypothesis.get(uri);
        if hsegs.is_none() {
            warnings.push(format!("{uri}: no hypothesis (scored as empty)"));
        }
        let hsegs = hsegs.unwrap_or(&empty);
        let dur = opts.durations.as_ref().and_then(|d| d.get(uri).copied());
        if let Some(d) = dur {
            let last = rsegs
                .iter()
                .chain(hsegs)
                .map(|s| s.end)
                .fold(f64::NEG_INFINITY, f64::max);
            if last > d + 0.01 {
                warnings.push(format!(
                    "{uri}: segments end at {last:.2}s > audio duration {d:.2}s (scored up to the end)"
                ));
            }
        }
        let mut fs = score_file(uri, rsegs, hsegs, dur, opts.collar, opts.skip_overlap);
        fs.has_hypothesis = hypothesis.contains_key(uri);
        files.push(fs);
    }
    for uri in hypothesis.keys() {
        if !reference.contains_key(uri) {
            warnings.push(format!(
                "{uri}: in hypothesis but not in reference (ignored)"
            ));
        }
    }
    Report::from_files(files, opts.collar, opts.skip_overlap, warnings)
}

/// Score a hypothesis (RTTM file or directory of `*.rttm`) against a reference (same).
///
/// Every reference uri is scored (a missing hypothesis counts as empty); hypothesis-only uris are
/// ignored with a warning. Durations: `opts.durations`, else `<uri>.wav` in `opts.audio_dir` (default:
/// the reference directory), else the latest segment end.
pub fn evaluate(reference: &Path, hypothesis: &Path, opts: &EvalOptions) -> Result<Report> {
    let r = read_rttm(reference)?;
    let h = read_rttm(hypothesis)?;
    let audio_dir = match &opts.audio_dir {
        Some(d) => d.clone(),
        None if reference.is_dir() => reference.to_path_buf(),
        None => reference
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let mut durations = opts.durations.clone().unwrap_or_default();
    for uri in r.keys() {
        if !durations.contains_key(uri) {
            if let Some(d) = wav_duration(audio_dir.join(format!("{uri}.wav"))) {
                durations.insert(uri.clone(), d);
            }
        }
    }
    let opts = EvalOptions {
        durations: Some(durations),
        ..opts.clone()
    };
    Ok(evaluate_segments(&r, &h, &opts))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// A fraction as a percentage, `{:7.2}`, or `nan`/`inf` right-aligned like score.py.
fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:7.2}", 100.0 * v)
    } else if v.is_nan() {
        format!("{:>7}", "nan")
    } else if v > 0.0 {
        format!("{:>7}", "inf")
    } else {
        format!("{:>7}", "-inf")
    }
}

impl Report {
    /// Aggregate per-file scores (time-weighted DER, speaker-averaged JER).
    pub fn from_files(
        files: Vec<FileScore>,
        collar: f64,
        skip_overlap: bool,
        warnings: Vec<String>,
    ) -> Report {
        let total: f64 = files.iter().map(|f| f.total).sum();
        let miss: f64 = files.iter().map(|f| f.miss).sum();
        let false_alarm: f64 = files.iter().map(|f| f.false_alarm).sum();
        let confusion: f64 = files.iter().map(|f| f.confusion).sum();
        let jer_err: f64 = files.iter().map(|f| f.jer_error).sum();
        let jer_n: usize = files.iter().map(|f| f.jer_speakers).sum();
        let mean_file_der = if files.is_empty() {
            f64::NAN
        } else {
            files.iter().map(|f| f.der).sum::<f64>() / files.len() as f64
        };
        Report {
            collar,
            skip_overlap,
            total,
            miss,
            false_alarm,
            confusion,
            der: ratio(miss + false_alarm + confusion, total),
            jer: ratio(jer_err, jer_n as f64),
            mean_file_der,
            count_correct: files.iter().filter(|f| f.count_correct()).count(),
            files,
            warnings,
        }
    }

    /// Corpus miss / false alarm / confusion as fractions of the reference speech.
    pub fn rates(&self) -> (f64, f64, f64) {
        (
            ratio(self.miss, self.total),
            ratio(self.false_alarm, self.total),
            ratio(self.confusion, self.total),
        )
    }

    /// Per-file table and corpus line, in score.py's layout (percentages with 2 decimals).
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<28} {:>8} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "uri", "ref_s", "#ref", "#hyp", "DER%", "miss%", "FA%", "conf%", "JER%"
        );
        for f in &self.files {
            let _ = writeln!(
                s,
                "{:<28} {:8.1} {:4} {:4} {} {} {} {} {}",
                f.uri,
                f.total,
                f.ref_speakers,
                f.hyp_speakers,
                pct(f.der),
                pct(ratio(f.miss, f.total)),
                pct(ratio(f.false_alarm, f.total)),
                pct(ratio(f.confusion, f.total)),
                pct(f.jer)
            );
        }
        let (m, fa, c) = self.rates();
        let _ = writeln!(
            s,
            "{:<28} {:8.1} {:4} {:4} {} {} {} {} {}   collar=+-{:?}s skip_overlap={} speaker_count_correct={}/{}",
            format!("AGGREGATE ({} files)", self.files.len()),
            self.total,
            "",
            "",
            pct(self.der),
            pct(m),
            pct(fa),
            pct(c),
            pct(self.jer),
            self.collar,
            if self.skip_overlap { "True" } else { "False" },
            self.count_correct,
            self.files.len()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(v: &[(f64, f64, &str)]) -> Vec<Segment> {
        v.iter().map(|&(s, e, k)| Segment::new(s, e, k)).collect()
    }

    #[test]
    fn gaps_and_merge() {
        assert_eq!(
            gaps(0.0, 10.0, &[(-1.0, 1.0), (2.0, 3.0), (2.5, 4.0)]),
            vec![(1.0, 2.0), (4.0, 10.0)]
        );
        assert_eq!(gaps(0.0, 5.0, &[]), vec![(0.0, 5.0)]);
        assert_eq!(
            overlap_regions(&[(0.0, 5.0, 0), (3.0, 8.0, 1), (8.0, 9.0, 0)]),
            vec![(3.0, 5.0)]
        );
    }

    #[test]
    fn confusion_and_mapping() {
        let r = segs(&[(0.0, 10.0, "a"), (10.0, 20.0, "b")]);
        let h = segs(&[(0.0, 12.0, "x"), (12.0, 20.0, "y")]);
        let f = score_file("u", &r, &h, None, 0.0, false);
        assert!((f.total - 20.0).abs() < 1e-9);
        assert!((f.confusion - 2.0).abs() < 1e-9);
        assert_eq!(f.miss + f.false_alarm, 0.0);
        // JER: a vs x: |x \ a| = 2, union 12 -> 1/6; b vs y: miss 2 of union 10 -> 0.2
        assert!((f.jer - (2.0 / 12.0 + 0.2) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn collar_removes_boundaries() {
        let r = segs(&[(1.0, 5.0, "a")]);
        let h = segs(&[(1.2, 4.8, "x")]);
        let f = score_file("u", &r, &h, Some(10.0), 0.25, false);
        assert!((f.total - 3.5).abs() < 1e-9);
        assert!(f.der.abs() < 1e-12);
        assert_eq!(f.scored, 10.0);
    }

    #[test]
    fn wav_header_duration() {
        let dir = std::env::temp_dir().join(format!("whospoke-eval-wav-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.wav");
        let n: u32 = 16000 * 3 / 2; // 1.5 s of 16-bit mono
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + 2 * n).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&16000u32.to_le_bytes());
        b.extend_from_slice(&32000u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(2 * n).to_le_bytes());
        b.resize(b.len() + 2 * n as usize, 0);
        fs::write(&p, b).unwrap();
        assert_eq!(wav_duration(&p), Some(1.5));
        assert_eq!(wav_duration(dir.join("missing.wav")), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
