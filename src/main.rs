//! whospoke command line: a thin layer over the library pipeline.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use whospoke::analysis::{SegConfig, WindowConfig};
use whospoke::cluster::ClusterConfig;
use whospoke::decode::{self, InputFormat, RawSampleFormat};
use whospoke::events::Event;
use whospoke::output::{Format, LabelWriter, Progress, RttmFile, SinkError};
use whospoke::pipeline::{self, Config, Source};
use whospoke::turns::{SpeechSource, TurnConfig};
use whospoke::vad::VadConfig;

/// Real-time streaming speaker diarization: who is speaking now.
///
/// With no INPUT, listens to the default microphone (or, on a machine without one, plays a bundled
/// demo conversation in real time). INPUT may be an audio file (WAV, FLAC, MP3, OGG) or `-` for raw
/// PCM on stdin.
///
/// Examples:
///   whospoke                                   live from the default microphone
///   whospoke --device "USB" --format jsonl     live from a named device, JSON lines on stdout
///   whospoke meeting.wav --format rttm > meeting.rttm
///   sox in.wav -t raw -r 16000 -e signed -b 16 -c 1 - | whospoke - --rate 16000 --format jsonl
///   whospoke devices                           list input devices
///   whospoke eval REF HYP --collar 0.25        score RTTM files (DER, JER)
///   whospoke enroll Alice alice1.wav alice2.wav  remember Alice's voice; runs then name her
///   whospoke profiles                          list voice profiles (`profiles remove NAME`)
#[derive(Parser, Debug)]
#[command(
    name = "whospoke",
    version,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List audio input devices (names to pass to --device).
    Devices,
    /// Score RTTM hypotheses against references: DER (miss, false alarm, confusion), JER, speaker counts.
    Eval(EvalArgs),
    /// Build (or add to) the voice profile of one person from recordings of them, so that runs name
    /// them. With --from-session, only that speaker's segments of a run's RTTM are used.
    Enroll(EnrollArgs),
    /// List voice profiles (name, speech, last update); `profiles remove NAME` deletes one.
    Profiles(ProfilesArgs),
    /// Search the labelling thresholds on a folder of labelled recordings (audio files with
    /// same-named .rttm references) and print the best settings as command-line flags.
    Tune(TuneArgs),
}

#[derive(Args, Debug)]
struct TuneArgs {
    /// Folder of audio files (wav, flac, mp3, ogg), each with a same-named .rttm reference.
    dir: PathBuf,
    /// Seconds not scored on each side of every reference boundary (as `whospoke eval --collar`).
    #[arg(long, default_value_t = 0.0)]
    collar: f64,
    /// Labels final this many seconds behind live (as `--latency` of a run).
    #[arg(long, default_value_t = TurnConfig::default().final_delay, value_name = "SECONDS")]
    latency: f64,
    /// Settings shown in the table.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Score the second pass's labels (what `--rttm FILE` gets) instead of the live final labels.
    #[arg(long)]
    second_pass: bool,
    /// Analyse with the lighter shared-trunk embeddings (as `--shared-trunk` of a run).
    #[arg(long)]
    shared_trunk: bool,
    /// Directory holding the ONNX models.
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct EnrollArgs {
    /// The person's name, as runs will show it.
    name: String,
    /// Recordings of that person alone (or, with --from-session, the session's audio).
    #[arg(required = true)]
    audio: Vec<PathBuf>,
    /// Use only the segments of --speaker in this RTTM (e.g. from `whospoke --rttm`).
    #[arg(long, value_name = "RTTM", requires = "speaker")]
    from_session: Option<PathBuf>,
    /// The speaker label in the --from-session RTTM (e.g. S2).
    #[arg(long, value_name = "LABEL", requires = "from_session")]
    speaker: Option<String>,
    /// Replace an existing profile of that name instead of adding to it.
    #[arg(long)]
    replace: bool,
    /// Profile directory [default: $XDG_DATA_HOME/whospoke/profiles].
    #[arg(long, value_name = "DIR")]
    profiles: Option<PathBuf>,
    /// Directory holding the ONNX models.
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ProfilesArgs {
    #[command(subcommand)]
    action: Option<ProfilesAction>,
    /// Profile directory [default: $XDG_DATA_HOME/whospoke/profiles].
    #[arg(long, value_name = "DIR", global = true)]
    profiles: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ProfilesAction {
    /// Delete the profile of NAME.
    Remove { name: String },
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Reference RTTM file or directory of *.rttm.
    reference: PathBuf,
    /// Hypothesis RTTM file or directory of *.rttm.
    hypothesis: PathBuf,
    /// Seconds not scored on each side of every reference boundary (md-eval convention).
    #[arg(long, default_value_t = 0.0)]
    collar: f64,
    /// Do not score regions where two or more reference speakers overlap.
    #[arg(long)]
    skip_overlap: bool,
    /// Directory holding <uri>.wav, whose lengths bound the scored region (default: the reference directory).
    #[arg(long)]
    audio_dir: Option<PathBuf>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Audio file, or `-` for raw PCM on stdin. Default: the microphone.
    input: Option<String>,

    /// Input device name (exact, or a case-insensitive part of it); see `whospoke devices`.
    #[arg(long, short = 'd', value_name = "NAME")]
    device: Option<String>,

    /// When the input device disappears mid-stream (unplugged, sound server restarted): keep trying
    /// to reopen it for SECS seconds (silence fills the gap) before finalising and exiting with an
    /// error; 0 gives up at once.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_reopen_timeout)]
    reopen_timeout: f64,

    /// Output format on stdout [default: jsonl when stdout is not a terminal, text otherwise].
    #[arg(long, short = 'f', value_enum)]
    format: Option<Format>,

    /// Also write the final RTTM to FILE (appended turn by turn, rewritten sorted at the end, with
    /// the second pass's labels).
    #[arg(long, value_name = "FILE")]
    rttm: Option<PathBuf>,

    /// At the end, re-cluster the whole session and relabel the final turns that change (relabel
    /// events; the --rttm file gets the refined labels). On by default with --rttm.
    #[arg(long, conflicts_with = "no_second_pass")]
    second_pass: bool,
    /// No second pass, even with --rttm.
    #[arg(long)]
    no_second_pass: bool,

    /// Pace a file in real time, like a microphone (default: as fast as possible).
    #[arg(long)]
    realtime: bool,

    /// Show the live dashboard (default when stdout is a terminal).
    #[arg(long, conflicts_with = "no_tui")]
    tui: bool,
    /// Never show the dashboard.
    #[arg(long)]
    no_tui: bool,
    /// No progress line on stderr (shown while a file or stdin runs faster than real time, stderr is a
    /// terminal and the labels go to a file).
    #[arg(long)]
    no_progress: bool,

    /// stdin: sample rate of the raw PCM.
    #[arg(long, default_value_t = 16000, value_name = "HZ")]
    rate: u32,
    /// stdin: channel count of the raw PCM.
    #[arg(long, default_value_t = 1)]
    channels: u16,
    /// stdin: sample format of the raw PCM.
    #[arg(long, value_enum, default_value_t = RawFormatArg::S16le)]
    sample_format: RawFormatArg,

    /// Pipeline mode: `seg` adds pyannote segmentation-3.0 for final speech boundaries and
    /// overlapped speech; `vad` is the lighter webrtc-vad-only path.
    #[arg(long, value_enum, default_value_t = Mode::Seg)]
    mode: Mode,
    /// Segmentation window, seconds (mode seg).
    #[arg(long, default_value_t = SegConfig::default().window, value_name = "SECONDS")]
    seg_window: f64,
    /// Segmentation step, seconds (mode seg).
    #[arg(long, default_value_t = SegConfig::default().step, value_name = "SECONDS")]
    seg_step: f64,
    /// Which detector decides final speech boundaries (mode seg).
    #[arg(long, value_enum, default_value_t = SpeechSource::Both)]
    speech: SpeechSource,
    /// Embed windows without speaker-conditioned weights (mode seg; by default each window's frames are
    /// weighted by how surely its main speaker speaks alone there, per segmentation-3.0).
    #[arg(long)]
    plain_embeddings: bool,
    /// Arithmetic of the models in mode seg: int8 runs CAM++'s trunk with 8-bit convolutions and
    /// segmentation-3.0 with 8-bit LSTMs (each about 1.9x faster per window on a CPU with AVX-512
    /// VNNI: docs/performance.md; the same accuracy on the dev set: docs/accuracy.md); fp32 runs the
    /// float models.
    #[arg(long, value_enum, default_value_t = Precision::Int8)]
    precision: Precision,
    /// Lighter embeddings (mode seg): CAM++'s trunk runs once over consecutive chunks of speech and each
    /// window pools the trunk frames it covers, instead of every overlapping window going through the whole
    /// network (about two thirds of the embedding work; slightly less accurate: docs/accuracy.md).
    #[arg(long)]
    shared_trunk: bool,
    /// With --shared-trunk: context on each side of a trunk chunk, seconds; a window's embedding waits this
    /// long for the audio after it.
    #[arg(long, default_value_t = 0.16, value_name = "SECONDS")]
    trunk_margin: f64,
    /// Speech probability at which a 10 ms tick counts as speech (mode seg).
    #[arg(long, default_value_t = SegConfig::default().speech_threshold, value_name = "P")]
    speech_threshold: f32,
    /// Probability of two voices at which a tick counts as overlapped speech and gets a second
    /// speaker in the final labels (mode seg; lower: more overlap found, more of it wrong).
    #[arg(long, default_value_t = SegConfig::default().overlap_threshold, value_name = "P")]
    overlap_threshold: f32,
    /// Extend each final speech region up to this many seconds into the adjacent audio whose speech
    /// probability still reaches --speech-extend-threshold (mode seg; 0 = off). Fewer clipped word
    /// edges; on the dev set it helps with a 0.25 s collar, not without (docs/accuracy.md).
    #[arg(long, default_value_t = TurnConfig::default().extend_max, value_name = "SECONDS")]
    speech_extend_max: f64,
    /// Speech probability that still extends a speech region (see --speech-extend-max).
    #[arg(long, default_value_t = TurnConfig::default().extend_threshold, value_name = "P")]
    speech_extend_threshold: f32,
    /// Extend each final speech region up to this many seconds into the adjacent audio that stands
    /// --energy-extend-db above the recording's floor and at most --energy-extend-below-speech under
    /// its speech level: the quiet onsets and decays of words that the detectors clip (0 = off;
    /// docs/accuracy.md, "Speech edges by energy").
    #[arg(long, default_value_t = TurnConfig::default().energy_extend_max, value_name = "SECONDS")]
    energy_extend_max: f64,
    /// How far above the floor (the quietest tenth of the last 30 s) audio must be to extend a speech
    /// region (see --energy-extend-max).
    #[arg(long, default_value_t = TurnConfig::default().energy_extend_db, value_name = "DB")]
    energy_extend_db: f32,
    /// How far below the speech level (the median level of the last 30 s of speech) audio may be
    /// and still extend a speech region (see --energy-extend-max).
    #[arg(long, default_value_t = TurnConfig::default().energy_extend_below_speech, value_name = "DB")]
    energy_extend_below_speech: f32,
    /// Trim up to this many seconds from each end of a final speech region where the audio lies more
    /// than --energy-trim-below-speech under the speech level: near-silence the segmentation model
    /// spills into (0 = off).
    #[arg(long, default_value_t = TurnConfig::default().energy_trim_max, value_name = "SECONDS")]
    energy_trim_max: f64,
    /// How far below the speech level audio at a speech region's edge must be to be trimmed (see
    /// --energy-trim-max).
    #[arg(long, default_value_t = TurnConfig::default().energy_trim_below_speech, value_name = "DB")]
    energy_trim_below_speech: f32,
    /// A pause shorter than this inside one speaker's speech does not end their turn in the final
    /// labels (the NIST RT convention is 0.3 s; 0 = every pause the detectors hear splits the turn).
    #[arg(long, default_value_t = TurnConfig::default().min_pause, value_name = "SECONDS")]
    min_pause: f64,
    /// Seconds after which labels become final (labels are tentative before).
    #[arg(long, default_value_t = TurnConfig::default().final_delay, value_name = "SECONDS")]
    latency: f64,
    /// Longest embedding window, seconds.
    #[arg(long, default_value_t = WindowConfig::default().window, value_name = "SECONDS")]
    window: f64,
    /// Step between embedding windows inside speech, seconds.
    #[arg(long, default_value_t = WindowConfig::default().step, value_name = "SECONDS")]
    step: f64,
    /// Cosine similarity at which a window joins a known speaker (higher = more speakers).
    #[arg(long, default_value_t = ClusterConfig::default().assign_threshold, value_name = "COS")]
    threshold: f32,
    /// Cosine similarity below which a window may start a new speaker.
    #[arg(long, default_value_t = ClusterConfig::default().new_speaker_threshold, value_name = "COS")]
    new_speaker_threshold: f32,
    /// Cosine similarity at or above which a window moves its speaker's centroid.
    #[arg(long, default_value_t = ClusterConfig::default().update_threshold, value_name = "COS")]
    update_threshold: f32,
    /// Most speakers to tell apart (0 = no limit).
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_speakers: usize,
    /// VAD aggressiveness, 0 (keeps most) to 3 (rejects most non-speech).
    #[arg(long, default_value_t = VadConfig::default().aggressiveness, value_parser = clap::value_parser!(u8).range(0..=3))]
    vad_aggressiveness: u8,
    /// VAD frame length in ms: 10, 20 or 30.
    #[arg(long, default_value_t = VadConfig::default().frame_ms, value_parser = parse_frame_ms, value_name = "MS")]
    vad_frame_ms: u32,
    /// Speech continues this long after the last voiced frame, ms.
    #[arg(long, default_value_t = VadConfig::default().hangover_ms, value_name = "MS")]
    vad_hangover_ms: u32,
    /// Audio before a speech onset that is included in the speech, ms.
    #[arg(long, default_value_t = VadConfig::default().preroll_ms, value_name = "MS")]
    vad_preroll_ms: u32,
    /// Do not raise quiet input (by default input whose loud frames are under -20 dBFS is raised
    /// towards it, by at most 30 dB, before speech detection: docs/accuracy.md, "Quiet input").
    #[arg(long)]
    no_auto_gain: bool,
    /// ONNX Runtime threads for the embedding model.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CAM++ sessions that embed windows in parallel, 1 or 2 [default: 2 for a file or stdin on a machine
    /// with 2+ cores and --threads 1, else 1]. Files and stdin run ahead of real time, so several windows
    /// wait at once; the labels are the same either way; a second session costs ~35 MB of memory and some
    /// CPU for less wall time (docs/performance.md: the default row against `--embed-sessions 1`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=2))]
    embed_sessions: Option<u64>,
    /// Directory holding the ONNX models (default: found next to the binary or in the source tree).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Voice profiles naming known speakers [default: $XDG_DATA_HOME/whospoke/profiles, used when it
    /// holds any]; see `whospoke enroll`.
    #[arg(long, value_name = "DIR", conflicts_with = "no_profiles")]
    profiles: Option<PathBuf>,
    /// Do not name speakers from voice profiles.
    #[arg(long)]
    no_profiles: bool,
    /// Cosine similarity at which a speaker's voice matches a profile.
    #[arg(long, default_value_t = whospoke::profiles::DEFAULT_MATCH_THRESHOLD, value_name = "COS")]
    match_threshold: f32,
    /// Log more (-v info, -vv debug) to stderr.
    #[arg(long, short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// webrtc-vad + sliding CAM++ windows + segmentation-3.0 for boundaries and overlaps.
    Seg,
    /// webrtc-vad + sliding CAM++ windows only (lighter).
    Vad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Precision {
    /// models/campplus_trunk_int8.onnx and the 8-bit segmentation-3.0 (models/segmentation-3.0-sincconv.onnx +
    /// segmentation-3.0-int8-rest.onnx, split from segmentation-3.0-int8.onnx).
    Int8,
    /// models/campplus_trunk.onnx and models/segmentation-3.0.onnx.
    Fp32,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RawFormatArg {
    S16le,
    S32le,
    F32le,
    U8,
}

fn parse_frame_ms(s: &str) -> std::result::Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v @ (10 | 20 | 30)) => Ok(v),
        _ => Err(format!("must be 10, 20 or 30, not {s}")),
    }
}

/// `print!` / `println!` for the subcommands' reports (eval, tune, profiles, devices): when the reader has
/// gone away (`whospoke eval REF HYP | head -1`), whospoke ends quietly with status 0, as it does for labels,
/// instead of std's panic on a broken pipe.
macro_rules! print {
    ($($arg:tt)*) => { emit(format_args!($($arg)*), false) };
}
macro_rules! println {
    () => { emit(format_args!(""), true) };
    ($($arg:tt)*) => { emit(format_args!($($arg)*), true) };
}

fn emit(args: std::fmt::Arguments, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("whospoke: error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    one_line_panics();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("whospoke: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// A panic (a bug, or the `WHOSPOKE_FAULT` test hook) prints one line naming the thread instead of the default
/// message and backtrace; `Running::join` turns it into the error main reports. RUST_BACKTRACE=1 restores the
/// default output.
fn one_line_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if whospoke::decode::panic_is_quiet() {
            return; // a decoder panic that decode catches and reports as an error
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| !v.is_empty() && v != "0") {
            return default(info);
        }
        let thread = std::thread::current();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "whospoke: the {} thread panicked{at}: {}",
            thread.name().unwrap_or("unnamed"),
            info.payload_as_str().unwrap_or("(no message)")
        );
    }));
}

/// `{e:#}` without repeating a cause the text before it already quotes (library errors embed their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out
}

/// Logs to stderr, or to `file` while the dashboard owns the terminal.
fn init_logging(verbose: u8, file: Option<std::fs::File>) {
    let default = match verbose {
        0 => "whospoke=warn",
        1 => "whospoke=info",
        _ => "whospoke=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHOSPOKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(|| LogWriter).try_init(),
    };
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Devices) => {
            init_logging(cli.run.verbose, None);
            devices()
        }
        Some(Command::Eval(a)) => {
            init_logging(cli.run.verbose, None);
            eval(a)
        }
        Some(Command::Enroll(a)) => {
            init_logging(cli.run.verbose, None);
            enroll(a)
        }
        Some(Command::Profiles(a)) => {
            init_logging(cli.run.verbose, None);
            profiles(a)
        }
        Some(Command::Tune(a)) => {
            init_logging(cli.run.verbose, None);
            tune(a)
        }
        None => diarize(cli.run),
    }
}

fn devices() -> Result<ExitCode> {
    let list = whospoke::capture::list_input_devices().context("cannot list input devices")?;
    if list.is_empty() {
        eprintln!("no audio input devices found");
        return Ok(ExitCode::from(1));
    }
    for d in list {
        println!(
            "{}{}  ({} Hz, {} ch)",
            if d.is_default { "* " } else { "  " },
            d.name,
            d.sample_rate,
            d.channels
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(a: EvalArgs) -> Result<ExitCode> {
    let opts = whospoke::eval::EvalOptions {
        collar: a.collar,
        skip_overlap: a.skip_overlap,
        audio_dir: a.audio_dir,
        durations: None,
    };
    let report = whospoke::eval::evaluate(&a.reference, &a.hypothesis, &opts)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", report.to_table());
    if let Some(p) = a.json {
        let f =
            std::fs::File::create(&p).with_context(|| format!("cannot write {}", p.display()))?;
        serde_json::to_writer_pretty(f, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Finds the bundled demo conversation.
fn tune(a: TuneArgs) -> Result<ExitCode> {
    use whospoke::tune;
    let files = tune::labelled_files(&a.dir)?;
    if files.is_empty() {
        bail!(
            "{}: no audio file with a same-named .rttm reference",
            a.dir.display()
        );
    }
    let models = whospoke::runtime::locate_models(a.models.as_deref())?;
    // The configuration a run `whospoke FILE --latency L` would use.
    let latency = a.latency.to_string();
    let mut run_args = vec!["whospoke", "x", "--no-tui", "--latency", latency.as_str()];
    if a.shared_trunk {
        run_args.push("--shared-trunk");
    }
    let cli = Cli::try_parse_from(run_args)?;
    let mut base = config(&cli.run, false);
    base.validate()?;
    base.turns.second_pass = a
        .second_pass
        .then(whospoke::recluster::ReclusterConfig::default);
    let mut recorded = Vec::with_capacity(files.len());
    for (k, f) in files.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let r = tune::prepare(f, &base, &models)
            .with_context(|| format!("cannot analyse {}", f.audio.display()))?;
        eprintln!(
            "tune: [{}/{}] analysed {} ({} messages, {:.1} s)",
            k + 1,
            files.len(),
            f.audio.display(),
            r.msgs.len(),
            t0.elapsed().as_secs_f64()
        );
        recorded.push(r);
    }
    let grid = tune::grid();
    let outcome = tune::search(&recorded, &base, &grid, a.collar, |k, n, s, r| {
        if k % 20 == 0 || k == n {
            eprintln!(
                "tune: [{k}/{n}] settings scored (last: {} -> DER {:.2} %)",
                s.flags(),
                100.0 * r.der
            );
        }
    })?;
    let d = tune::Setting::default_setting();
    println!(
        "# {} files, collar {} s, latency {} s, {}; corpus DER of each setting (replayed turn stage)",
        recorded.len(),
        a.collar,
        a.latency,
        if a.second_pass {
            "second-pass labels (--rttm FILE)"
        } else {
            "live final labels (stdout)"
        }
    );
    println!("| rank | --threshold | --new-speaker-threshold | --update-threshold | --speech-threshold | --overlap-threshold | --speech-extend-max | --min-pause | DER % | miss % | FA % | confusion % | speakers right |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |rank: String, s: &tune::Setting, r: &whospoke::eval::Report| {
        let t = if r.total > 0.0 { r.total } else { 1.0 };
        println!(
            "| {rank} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{} |",
            s.assign,
            s.new_speaker,
            s.update,
            s.speech,
            s.overlap,
            s.extend_max,
            s.min_pause,
            100.0 * r.der,
            100.0 * r.miss / t,
            100.0 * r.false_alarm / t,
            100.0 * r.confusion / t,
            r.count_correct,
            r.files.len()
        );
    };
    for (k, (s, r)) in outcome.ranked.iter().take(a.top.max(1)).enumerate() {
        row((k + 1).to_string(), s, r);
    }
    row("defaults".into(), &d, &outcome.default);
    let (rs, rr) = &outcome.recommended;
    row("recommended".into(), rs, rr);
    println!();
    if let Some(l) = outcome.leave_one_out {
        println!(
            "leave-one-out DER: {:.2} % (each file labelled with the setting chosen on the other files; defaults {:.2} %)",
            100.0 * l,
            100.0 * outcome.default.der
        );
    }
    println!(
        "recommended (closest to the defaults within {} points of the best): {}",
        tune::NEAR_BEST,
        rs.flags()
    );
    println!(
        "recommended DER {:.2} % (defaults {:.2} %, best {:.2} %)",
        100.0 * rr.der,
        100.0 * outcome.default.der,
        100.0 * outcome.ranked[0].1.der
    );
    Ok(ExitCode::SUCCESS)
}

fn demo_path() -> Option<PathBuf> {
    let mut c = Vec::new();
    if let Some(d) = std::env::var_os("WHOSPOKE_ASSETS") {
        c.push(PathBuf::from(d).join("demo/demo.flac"));
    }
    if let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        c.push(exe.join("assets/demo/demo.flac"));
        c.push(exe.join("../share/whospoke/assets/demo/demo.flac"));
    }
    c.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/demo/demo.flac"
    )));
    c.into_iter().find(|p| p.is_file())
}

fn config(a: &RunArgs, live: bool) -> Config {
    Config {
        vad: VadConfig {
            frame_ms: a.vad_frame_ms,
            aggressiveness: a.vad_aggressiveness,
            hangover_ms: a.vad_hangover_ms,
            preroll_ms: a.vad_preroll_ms,
            level: whospoke::level::LevelConfig {
                enabled: !a.no_auto_gain,
                ..Default::default()
            },
            ..VadConfig::default()
        },
        windows: WindowConfig {
            window: a.window,
            step: a.step,
            min_window: WindowConfig::default().min_window.min(a.window),
            trusted_window: WindowConfig::default().trusted_window.min(a.window),
            // The pipeline sets it when voice profiles are loaded.
            naming_window: None,
            trunk_margin: a.shared_trunk.then_some(a.trunk_margin),
            trunk_int8: a.precision == Precision::Int8,
        },
        seg: SegConfig {
            enabled: a.mode == Mode::Seg,
            window: a.seg_window,
            step: a.seg_step,
            speech_threshold: a.speech_threshold,
            overlap_threshold: a.overlap_threshold,
            weighted_embeddings: !a.plain_embeddings,
            int8: a.precision == Precision::Int8,
        },
        cluster: ClusterConfig {
            assign_threshold: a.threshold,
            new_speaker_threshold: a.new_speaker_threshold.min(a.threshold),
            update_threshold: a.update_threshold,
            max_speakers: a.max_speakers,
            ..ClusterConfig::default()
        },
        turns: TurnConfig {
            final_delay: a.latency,
            speech_source: a.speech,
            speech_threshold: a.speech_threshold,
            overlap_threshold: a.overlap_threshold,
            extend_threshold: a.speech_extend_threshold,
            extend_max: a.speech_extend_max,
            energy_extend_max: a.energy_extend_max,
            energy_extend_db: a.energy_extend_db,
            energy_extend_below_speech: a.energy_extend_below_speech,
            energy_trim_max: a.energy_trim_max,
            energy_trim_below_speech: a.energy_trim_below_speech,
            min_pause: a.min_pause,
            second_pass: (a.second_pass || (a.rttm.is_some() && !a.no_second_pass))
                .then(whospoke::recluster::ReclusterConfig::default),
            ..TurnConfig::default()
        },
        threads: a.threads,
        embed_sessions: a.embed_sessions.map(|n| n as usize),
        ring_seconds: if live { 4.0 } else { 2.0 },
        ..Config::default()
    }
}

// --- Voice profiles (src/profiles.rs) ------------------------------------------------------------

fn enroll(a: EnrollArgs) -> Result<ExitCode> {
    use whospoke::profiles::{self, EnrollSource, ProfileStore};
    let store = ProfileStore::open(a.profiles.as_deref())?;
    let spans = match (&a.from_session, &a.speaker) {
        (Some(rttm), Some(spk)) => {
            if a.audio.len() != 1 {
                bail!("--from-session takes the session's one audio file");
            }
            Some(profiles::rttm_spans(rttm, spk)?)
        }
        _ => None,
    };
    let sources: Vec<EnrollSource> = a
        .audio
        .iter()
        .map(|p| EnrollSource {
            path: p.clone(),
            spans: spans.clone(),
            label: match (&a.from_session, &a.speaker) {
                (Some(r), Some(s)) => format!("{} ({} in {})", p.display(), s, r.display()),
                _ => p.display().to_string(),
            },
        })
        .collect();
    let models = whospoke::runtime::locate_models(a.models.as_deref())?;
    whospoke::runtime::init_onnxruntime()?;
    let mut embedder = whospoke::embed::Embedder::new(&models.campplus_verified()?, 1)?;
    let new = profiles::enroll(
        &a.name,
        &sources,
        &mut embedder,
        &profiles::EnrollConfig::default(),
    )?;
    let (profile, verb) = match store.find(new.name.as_str())? {
        Some((_, mut old)) if !a.replace => {
            old.merge(&new);
            (old, "updated")
        }
        _ => (new.clone(), "created"),
    };
    let path = store.save(&profile)?;
    eprintln!(
        "whospoke: {verb} the profile of {} ({:.1} s of speech from this enrollment, {:.1} s in all; window similarity mean {:.2}, 10th percentile {:.2}): {}",
        profile.name,
        new.speech_seconds,
        profile.speech_seconds,
        new.self_similarity_mean,
        new.self_similarity_p10,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn profiles(a: ProfilesArgs) -> Result<ExitCode> {
    let store = whospoke::profiles::ProfileStore::open(a.profiles.as_deref())?;
    match a.action {
        Some(ProfilesAction::Remove { name }) => {
            if store.remove(&name)? {
                eprintln!("whospoke: removed the profile of {name}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "whospoke: no profile called {name} in {}",
                    store.dir.display()
                );
                Ok(ExitCode::from(1))
            }
        }
        None => {
            let files = store.files()?;
            if files.is_empty() {
                eprintln!(
                    "no voice profiles in {} (create one with `whospoke enroll NAME AUDIO...`)",
                    store.dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<24} {:>10}  {:<10}", "NAME", "SPEECH", "UPDATED");
            for f in files {
                match whospoke::profiles::Profile::load(&f) {
                    Ok(p) => println!(
                        "{:<24} {:>9.1}s  {}",
                        p.name,
                        p.speech_seconds,
                        p.updated.get(..10).unwrap_or(&p.updated)
                    ),
                    Err(e) => eprintln!("warning: {e}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The voice profiles a run uses: none with --no-profiles; those in --profiles DIR (which must
/// exist) or in the default directory (if it holds any).
fn run_profiles(a: &RunArgs) -> Result<Vec<whospoke::profiles::KnownSpeaker>> {
    if a.no_profiles {
        return Ok(Vec::new());
    }
    if let Some(d) = &a.profiles {
        if !d.is_dir() {
            bail!("the profile directory {} does not exist", d.display());
        }
    }
    let Ok(store) = whospoke::profiles::ProfileStore::open(a.profiles.as_deref()) else {
        return Ok(Vec::new());
    };
    let list = store.load_all().context(
        "cannot load the voice profiles (fix or remove the file, or run with --no-profiles)",
    )?;
    if !list.is_empty() {
        tracing::info!(
            "{} voice profile(s) from {}",
            list.len(),
            store.dir.display()
        );
    }
    Ok(list
        .iter()
        .map(|p| whospoke::profiles::KnownSpeaker::from_profile(p, a.match_threshold))
        .collect())
}
// -------------------------------------------------------------------------------------------------

fn uri_for(input: &Option<String>, mic: bool) -> String {
    match input.as_deref() {
        Some("-") => "stdin".into(),
        Some(p) if !mic => Path::new(p)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input".into()),
        _ => "mic".into(),
    }
}

fn diarize(a: RunArgs) -> Result<ExitCode> {
    let stdout_tty = std::io::stdout().is_terminal();
    let format = a.format.unwrap_or(if stdout_tty {
        Format::Text
    } else {
        Format::Jsonl
    });
    let tui = tui_target(&a, stdout_tty)?;
    let log_file = match &tui {
        Some(_) => Some(open_log_file()?),
        None => None,
    };
    init_logging(
        a.verbose,
        log_file.as_ref().and_then(|(f, _)| f.try_clone().ok()),
    );
    if a.input.is_some() && a.device.is_some() {
        bail!("give either an input file (or `-`) or --device, not both");
    }
    // Check everything that can be checked before audio flows.
    let models = whospoke::runtime::locate_models(a.models.as_deref())?;
    whospoke::runtime::init_onnxruntime()?;

    let (source, live, uri) = match a.input.as_deref() {
        Some("-") => {
            let fmt = InputFormat {
                sample_rate: a.rate,
                channels: a.channels,
            };
            let sf = match a.sample_format {
                RawFormatArg::S16le => RawSampleFormat::S16Le,
                RawFormatArg::S32le => RawSampleFormat::S32Le,
                RawFormatArg::F32le => RawSampleFormat::F32Le,
                RawFormatArg::U8 => RawSampleFormat::U8,
            };
            let src = decode::open_raw(Box::new(std::io::stdin()), "stdin", fmt, sf)?;
            (
                Source::Stream {
                    source: src,
                    realtime: a.realtime,
                },
                false,
                "stdin".to_string(),
            )
        }
        Some(path) => {
            let src = decode::open_file(Path::new(path))?;
            (
                Source::Stream {
                    source: src,
                    realtime: a.realtime,
                },
                a.realtime,
                uri_for(&a.input, false),
            )
        }
        None => {
            let has_input = a.device.is_some()
                || whospoke::capture::list_input_devices()
                    // ALSA's `null` device only makes zeros: it is not a microphone.
                    .map(|l| {
                        l.iter()
                            .any(|d| d.is_default || !d.name.starts_with("null"))
                    })
                    .unwrap_or(false);
            if has_input {
                (
                    Source::Microphone {
                        device: a.device.clone(),
                        reopen_timeout: std::time::Duration::from_secs_f64(a.reopen_timeout),
                    },
                    true,
                    "mic".to_string(),
                )
            } else {
                let demo = demo_path().context(
                    "no audio input device found, and the bundled demo (assets/demo/demo.flac) is missing",
                )?;
                eprintln!(
                    "whospoke: no microphone found; playing the bundled demo conversation {} in real time \
                     (give a file, `-`, or --device to choose an input)",
                    demo.display()
                );
                let src = decode::open_file(&demo)?;
                (
                    Source::Stream {
                        source: src,
                        realtime: true,
                    },
                    true,
                    "demo".to_string(),
                )
            }
        }
    };
    let progress = match &source {
        Source::Stream { source, .. } if progress_wanted(&a, live, tui.is_some()) => {
            let name = match a.input.as_deref() {
                Some("-") | None => "stdin".to_string(),
                Some(path) => Path::new(path)
                    .file_name()
                    .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned()),
            };
            Some(Progress::new(&name, source.duration()))
        }
        _ => None,
    };
    let rttm = match &a.rttm {
        Some(p) => Some(RttmFile::create(p, &uri)?.join_pauses_below(a.min_pause)),
        None => None,
    };
    let mut cfg = config(&a, live);
    cfg.profiles = run_profiles(&a)?;
    cfg.profile_dir = a.profiles.clone();
    let running = pipeline::start(source, cfg, &models)?;
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, running.stop.clone())
            .context("cannot install signal handlers")?;
    }
    // stdout carries labels unless the dashboard draws on it.
    let labels_to_stdout = !matches!(tui, Some(None));
    let writer = labels_to_stdout.then(|| LabelWriter::new(std::io::stdout(), format, &uri));
    let (result, rttm) = match tui {
        None => pump(&running.events, &running.stop, writer, rttm, None, progress),
        Some(tty) => {
            let (tx, rx) = crossbeam_channel::unbounded();
            let exit_on_end = Arc::new(AtomicBool::new(live));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
                signal_hook::flag::register(sig, exit_on_end.clone())
                    .context("cannot install signal handlers")?;
            }
            let (events, stop) = (running.events.clone(), running.stop.clone());
            let sink = std::thread::Builder::new()
                .name("sinks".into())
                .spawn(move || pump(&events, &stop, writer, rttm, Some(tx), None))
                .context("cannot start the output thread")?;
            let opts = whospoke::tui::TuiOptions {
                input_name: uri.clone(),
                color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
                tty_path: tty,
                exit_on_end,
            };
            // Everything else that would print on the terminal (ALSA/JACK chatter, stray stderr)
            // goes to the log file while the dashboard is up.
            let redirect = log_file.as_ref().map(|(f, _)| StderrRedirect::to(f));
            let shown = whospoke::tui::run(rx, running.controls.clone(), opts);
            drop(redirect);
            if shown.is_err() {
                running.request_stop();
            }
            let joined = sink
                .join()
                .unwrap_or_else(|_| (Err(anyhow::anyhow!("the output thread panicked")), None));
            if let Some((_, path)) = &log_file {
                eprintln!("whospoke: log written to {}", path.display());
            }
            // A dashboard that failed still lets the pipeline finish and the RTTM be written.
            match shown {
                Ok(_) => joined,
                Err(e) => (Err(e.into()), joined.1),
            }
        }
    };
    let joined = running.join();
    if let Some(r) = rttm {
        r.finish()?;
    }
    // The pipeline's own failure (a lost device, a panicked thread) is the root cause of any
    // sink or dashboard error that followed it: report it first.
    joined?;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `--reopen-timeout`: seconds, 0..=86400.
fn parse_reopen_timeout(v: &str) -> std::result::Result<f64, String> {
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{v:?} is not a number of seconds"))?;
    if (0.0..=86_400.0).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("must be 0..=86400 seconds, not {v}"))
    }
}

/// Where the dashboard draws: None = no dashboard; Some(None) = on stdout; Some(Some(tty)) = on the
/// controlling terminal while labels go to the redirected stdout.
fn tui_target(a: &RunArgs, stdout_tty: bool) -> Result<Option<Option<PathBuf>>> {
    if a.no_tui {
        return Ok(None);
    }
    if stdout_tty {
        return Ok(Some(None));
    }
    if !a.tui {
        return Ok(None);
    }
    let tty = PathBuf::from("/dev/tty");
    match std::fs::OpenOptions::new().read(true).write(true).open(&tty) {
        Ok(f) if f.is_terminal() => Ok(Some(Some(tty))),
        _ => bail!(
            "--tui needs a terminal, and this process has none (stdout is redirected and /dev/tty cannot be opened); \
             drop --tui to stream labels only"
        ),
    }
}

/// Opens the dashboard's log file: $XDG_STATE_HOME/whospoke/whospoke.log (or ~/.local/state/...).
fn open_log_file() -> Result<(std::fs::File, PathBuf)> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("whospoke");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
    let path = dir.join("whospoke.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    Ok((f, path))
}

/// Points file descriptor 2 at a file while alive; restores it on drop.
struct StderrRedirect {
    saved: i32,
}

impl StderrRedirect {
    fn to(f: &std::fs::File) -> Option<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: dup/dup2 on valid descriptors; the saved descriptor is restored and closed on drop.
        unsafe {
            let saved = libc::dup(2);
            if saved < 0 {
                return None;
            }
            if libc::dup2(f.as_raw_fd(), 2) < 0 {
                libc::close(saved);
                return None;
            }
            Some(Self { saved })
        }
    }
}

impl Drop for StderrRedirect {
    fn drop(&mut self) {
        // SAFETY: restores the descriptor saved in `to`.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
        }
    }
}

/// Moves events from the pipeline to stdout, the RTTM file and the dashboard until the stream ends.
fn pump(
    events: &crossbeam_channel::Receiver<Event>,
    stop: &AtomicBool,
    mut writer: Option<LabelWriter<std::io::Stdout>>,
    mut rttm: Option<RttmFile>,
    dashboard: Option<crossbeam_channel::Sender<Event>>,
    mut progress: Option<Progress>,
) -> (Result<()>, Option<RttmFile>) {
    let mut first_error: Option<anyhow::Error> = None;
    let request_stop = || stop.store(true, Ordering::SeqCst);
    for ev in events.iter() {
        if let Some(p) = progress.as_mut() {
            if let Some(text) = p.update(&ev) {
                draw_progress(&text, p.shown());
            }
        }
        if let Some(f) = rttm.as_mut() {
            if let Err(e) = f.write(&ev) {
                if first_error.is_none() {
                    first_error = Some(e.into());
                    request_stop();
                }
            }
        }
        if let Some(w) = writer.as_mut() {
            match w.write(&ev) {
                Ok(()) => {}
                Err(SinkError::Closed) => {
                    // The reader went away (`| head`): stop quietly, still finishing the RTTM file.
                    writer = None;
                    request_stop();
                }
                Err(SinkError::Failed(e)) => {
                    writer = None;
                    first_error
                        .get_or_insert(anyhow::Error::new(e).context("cannot write to stdout"));
                    request_stop();
                }
            }
        }
        if let Event::End { speakers, .. } = &ev {
            if speakers.is_empty() && dashboard.is_none() {
                eprintln!("whospoke: no speech found");
            }
        }
        if let Some(d) = &dashboard {
            let _ = d.send(ev);
        }
    }
    if let Some(w) = writer.as_mut() {
        let _ = w.flush();
    }
    if progress.is_some_and(|p| p.shown()) {
        draw_progress("\r\x1b[K", false);
    }
    (first_error.map_or(Ok(()), Err), rttm)
}

/// Set while the progress line is on stderr: a log line clears it first ([`LogWriter`]).
static PROGRESS_ON_SCREEN: AtomicBool = AtomicBool::new(false);

fn draw_progress(text: &str, on_screen_after: bool) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
    let _ = e.flush();
    PROGRESS_ON_SCREEN.store(on_screen_after, Ordering::SeqCst);
}

/// stderr for `tracing`, erasing the progress line before a log line is written over it.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut e = std::io::stderr().lock();
        if PROGRESS_ON_SCREEN.swap(false, Ordering::SeqCst) {
            e.write_all(b"\r\x1b[K")?;
        }
        e.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether a progress line suits this run: not live, no dashboard, stderr on a terminal, and stdout
/// redirected to a file or /dev/null (not a pipe, whose reader may print on the same terminal).
fn progress_wanted(a: &RunArgs, live: bool, dashboard: bool) -> bool {
    if a.no_progress || live || dashboard || !std::io::stderr().is_terminal() {
        return false;
    }
    let out = std::io::stdout();
    if out.is_terminal() {
        return false;
    }
    use std::os::unix::fs::FileTypeExt;
    let fd = std::os::fd::AsFd::as_fd(&out);
    match fd.try_clone_to_owned().map(std::fs::File::from) {
        Ok(f) => f
            .metadata()
            .map(|m| m.file_type().is_file() || m.file_type().is_char_device())
            .unwrap_or(false),
        Err(_) => false,
    }
}
