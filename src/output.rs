//! Sinks: the label formats on stdout (JSON lines, RTTM, text) and the RTTM file.
//!
//! stdout carries labels only (logs go to stderr). Each line is flushed as soon as it is written so a
//! reading program sees labels live. A closed stdout (`| head`) is reported as
//! [`SinkError::Closed`] so the caller can stop quietly.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::events::{Event, Status, Turn};
use crate::{Error, Result};

/// Output format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (schema: docs/jsonl-schema.md).
    Jsonl,
    /// Standard RTTM, final turns only.
    Rttm,
    /// Lines for people.
    Text,
}

/// Why a sink stopped.
#[derive(Debug)]
pub enum SinkError {
    /// The reader went away (broken pipe): stop quietly.
    Closed,
    /// Any other write error.
    Failed(io::Error),
}

impl From<io::Error> for SinkError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            SinkError::Closed
        } else {
            SinkError::Failed(e)
        }
    }
}

/// Replaces whitespace in a speaker name so an RTTM line keeps its ten fields.
pub fn rttm_name(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join("_")
}

/// One RTTM line (no trailing newline).
pub fn rttm_line(uri: &str, t: &Turn) -> String {
    format!(
        "SPEAKER {} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>",
        rttm_name(uri),
        t.start,
        (t.end - t.start).max(0.0),
        rttm_name(&t.speaker)
    )
}

fn clock(t: f64) -> String {
    let t = t.max(0.0);
    let m = (t / 60.0).floor() as u64;
    let s = t - m as f64 * 60.0;
    format!("{m:02}:{s:05.2}")
}

/// Writes events to a stream in one format.
pub struct LabelWriter<W: Write> {
    out: W,
    format: Format,
    uri: String,
}

impl<W: Write> LabelWriter<W> {
    /// New writer; `uri` names the recording in RTTM lines.
    pub fn new(out: W, format: Format, uri: &str) -> Self {
        Self {
            out,
            format,
            uri: uri.to_string(),
        }
    }

    /// Writes one event (if the format shows it) and flushes.
    pub fn write(&mut self, ev: &Event) -> std::result::Result<(), SinkError> {
        match self.format {
            Format::Jsonl => {
                match ev {
                    Event::Turn {
                        arrived: Some(at), ..
                    } => {
                        // The object, then `delay`: seconds from the newest audio entering
                        // whospoke to this line (0.1 ms).
                        let mut line = serde_json::to_string(ev).map_err(io::Error::from)?;
                        let d = (at.elapsed().as_secs_f64() * 1e4).round() / 1e4;
                        if line.ends_with('}') {
                            line.pop();
                            line.push_str(&format!(",\"delay\":{d}}}"));
                        }
                        self.out.write_all(line.as_bytes())?;
                    }
                    _ => serde_json::to_writer(&mut self.out, ev).map_err(io::Error::from)?,
                }
                self.out.write_all(b"\n")?;
            }
            Format::Rttm => {
                if let Event::Turn { turn, .. } = ev {
                    if turn.status == Status::Final {
                        writeln!(self.out, "{}", rttm_line(&self.uri, turn))?;
                    }
                }
            }
            Format::Text => self.write_text(ev)?,
        }
        self.out.flush()?;
        Ok(())
    }

    fn write_text(&mut self, ev: &Event) -> io::Result<()> {
        match ev {
            Event::Start {
                input,
                sample_rate,
                channels,
                ..
            } => writeln!(
                self.out,
                "# listening to {input} ({sample_rate} Hz, {channels} ch)"
            ),
            Event::Turn { turn, .. } if turn.status == Status::Final => writeln!(
                self.out,
                "{} - {}  {:<8} ({:.1} s, confidence {:.2})",
                clock(turn.start),
                clock(turn.end),
                turn.speaker,
                turn.end - turn.start,
                turn.confidence
            ),
            Event::Speaker { time, speaker } => {
                writeln!(self.out, "# {} new speaker {speaker}", clock(*time))
            }
            Event::Relabel {
                id,
                from,
                to,
                start,
                end,
                ..
            } => writeln!(
                self.out,
                "# turn {id} ({} - {}) changed from {from} to {to}",
                clock(*start),
                clock(*end)
            ),
            Event::Rename { from, to, .. } => writeln!(self.out, "# {from} is now called {to}"),
            Event::Identified {
                speaker,
                name,
                similarity,
                ..
            } => writeln!(
                self.out,
                "# {speaker} recognised as {name} (similarity {similarity:.2})"
            ),
            Event::Device {
                time,
                device,
                state,
                gap_start,
                gap,
                reason,
            } => writeln!(
                self.out,
                "# {} {}",
                clock(*time),
                crate::events::device_message(device, *state, *gap_start, *gap, reason)
            ),
            Event::Dropped {
                time,
                samples,
                total,
                reason,
            } => writeln!(
                self.out,
                "# {} WARNING: {samples} samples of audio lost ({total} in all): {reason}",
                clock(*time)
            ),
            Event::End {
                time,
                speakers,
                dropped_samples,
            } => {
                let who = if speakers.is_empty() {
                    "no speech found".to_string()
                } else {
                    format!("{} speaker(s): {}", speakers.len(), speakers.join(", "))
                };
                writeln!(
                    self.out,
                    "# end at {}: {who}; {dropped_samples} samples dropped",
                    clock(*time)
                )
            }
            _ => Ok(()),
        }
    }

    /// Flushes the stream.
    pub fn flush(&mut self) -> std::result::Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}

/// The `--rttm FILE` output: final turns appended line by line as they are decided (a crash leaves
/// every complete line), rewritten sorted with the speakers' final names at the end (atomically,
/// through a temporary file and a rename). Final turns relabelled by the second pass carry their
/// refined speaker in the rewrite.
pub struct RttmFile {
    path: PathBuf,
    uri: String,
    file: BufWriter<File>,
    turns: Vec<Turn>,
    join_below: f64,
}

impl RttmFile {
    /// Creates (truncates) the file now, so an unwritable path fails before any audio is processed.
    pub fn create(path: &Path, uri: &str) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::Output {
            what: path.display().to_string(),
            source: e,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            uri: uri.to_string(),
            file: BufWriter::new(file),
            turns: Vec::new(),
            join_below: 0.0,
        })
    }

    /// In the rewrite at the end, also join two turns of one speaker separated by a pause shorter
    /// than `secs` (the run's `--min-pause`): after the second pass, neighbours that were different
    /// speakers live may have become the same one.
    pub fn join_pauses_below(mut self, secs: f64) -> Self {
        self.join_below = secs.max(0.0);
        self
    }

    fn err(&self, e: io::Error) -> Error {
        Error::Output {
            what: self.path.display().to_string(),
            source: e,
        }
    }

    /// Takes an event: final turns are appended; renames update the names used at the end.
    pub fn write(&mut self, ev: &Event) -> Result<()> {
        match ev {
            Event::Turn { turn, .. } if turn.status == Status::Final => {
                writeln!(self.file, "{}", rttm_line(&self.uri, turn)).map_err(|e| self.err(e))?;
                self.file.flush().map_err(|e| self.err(e))?;
                self.turns.push(turn.clone());
            }
            // A final turn relabelled (the second pass at the end of the stream): the rewrite at
            // the end carries its new speaker. Relabels of tentative turns match no line here.
            Event::Relabel { id, to, .. } => {
                for t in self.turns.iter_mut().filter(|t| t.id == *id) {
                    t.speaker = to.clone();
                }
            }
            Event::Rename { from, to, .. }
            | Event::Identified {
                speaker: from,
                name: to,
                ..
            } => {
                for t in self.turns.iter_mut().filter(|t| &t.speaker == from) {
                    t.speaker = to.clone();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Rewrites the file sorted by start time, atomically.
    pub fn finish(mut self) -> Result<()> {
        self.file.flush().map_err(|e| self.err(e))?;
        let turns = std::mem::take(&mut self.turns);
        // Consecutive pieces of one speaker's long turn (finalised piece by piece) become one line,
        // and so do one speaker's turns a pause shorter than `join_below` apart.
        let turns = join_pieces(
            turns,
            self.join_below,
            |t| (t.start, t.end, t.speaker.as_str()),
            |t, end| t.end = end,
        );
        let tmp = self.path.with_extension("rttm.tmp");
        let write = || -> io::Result<()> {
            let mut f = BufWriter::new(File::create(&tmp)?);
            for t in &turns {
                writeln!(f, "{}", rttm_line(&self.uri, t))?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.err(e))
    }
}

/// Sorts turns by start and joins each into the previous turn of the same speaker (among the last four)
/// that it touches or follows by a pause shorter than `join_below` seconds, unless another speaker's
/// turn lies in that pause (the pause is then that speaker's speech, not a pause): what the `--rttm`
/// file's rewrite does ([`RttmFile::finish`]), shared with `whospoke tune`'s replays of it. `span`
/// gives (start, end, speaker), `set_end` extends a turn.
pub fn join_pieces<T>(
    mut turns: Vec<T>,
    join_below: f64,
    span: impl Fn(&T) -> (f64, f64, &str),
    set_end: impl Fn(&mut T, f64),
) -> Vec<T> {
    turns.sort_by(|a, b| span(a).0.total_cmp(&span(b).0));
    let join = join_below.max(1e-6);
    let mut merged: Vec<T> = Vec::with_capacity(turns.len());
    for t in turns {
        let (start, end, speaker) = span(&t);
        let n = merged.len();
        let cont = (n.saturating_sub(4)..n).rev().find(|&i| {
            let (_, m_end, m_speaker) = span(&merged[i]);
            m_speaker == speaker
                && start >= m_end - 1e-6
                && start - m_end < join
                && !merged[n.saturating_sub(16)..].iter().any(|o| {
                    let (o_start, o_end, o_speaker) = span(o);
                    o_speaker != speaker && o_start < start - 1e-6 && o_end > m_end + 1e-6
                })
        });
        match cont {
            Some(i) => {
                let m_end = span(&merged[i]).1;
                set_end(&mut merged[i], m_end.max(end));
            }
            None => merged.push(t),
        }
    }
    merged
}

/// The one-line progress report on stderr while a recording is processed faster than real time with its
/// labels redirected (`whospoke meeting.wav --format rttm > meeting.rttm`): how much of the input is done,
/// the speed, and how many speakers so far. Fed every event; [`Progress::update`] returns the line to
/// draw at most every `every` of wall time (and always at the end, to clear it).
pub struct Progress {
    input: String,
    total: Option<f64>,
    started: std::time::Instant,
    last_draw: Option<std::time::Instant>,
    every: std::time::Duration,
    processed: f64,
    speakers: usize,
}

impl Progress {
    /// `total` = the input's length in seconds, if known.
    pub fn new(input: &str, total: Option<f64>) -> Self {
        Progress {
            input: input.to_string(),
            total: total.filter(|t| t.is_finite() && *t > 0.0),
            started: std::time::Instant::now(),
            last_draw: None,
            every: std::time::Duration::from_millis(250),
            processed: 0.0,
            speakers: 0,
        }
    }

    /// Takes one event; returns what to write to stderr now, if anything: `\r` + the line + erase to the
    /// end of the line, or, at the end of the stream, just the erase (the line disappears).
    pub fn update(&mut self, ev: &Event) -> Option<String> {
        match ev {
            Event::End { .. } => {
                return self.last_draw.take().map(|_| "\r\x1b[K".to_string());
            }
            Event::Speaker { .. } => self.speakers += 1,
            _ => {}
        }
        self.processed = self.processed.max(ev.time());
        let now = std::time::Instant::now();
        if self.last_draw.is_some_and(|t| now - t < self.every) {
            return None;
        }
        self.last_draw = Some(now);
        let wall = (now - self.started).as_secs_f64();
        Some(format!("\r{}\x1b[K", self.line(wall)))
    }

    /// True while a progress line is on the screen (a log line must clear it first).
    pub fn shown(&self) -> bool {
        self.last_draw.is_some()
    }

    /// The progress text after `wall` seconds of processing.
    pub fn line(&self, wall: f64) -> String {
        let mut s = match self.total {
            Some(total) => format!(
                "whospoke: {} / {} of {} ({:.0} %)",
                short_clock(self.processed),
                short_clock(total),
                self.input,
                (100.0 * self.processed / total).clamp(0.0, 100.0)
            ),
            None => format!(
                "whospoke: {} of {}",
                short_clock(self.processed),
                self.input
            ),
        };
        if wall >= 0.5 && self.processed > 0.0 {
            s.push_str(&format!(", {:.0}x real time", self.processed / wall));
            if let Some(total) = self.total {
                let left = (total - self.processed).max(0.0) * wall / self.processed;
                s.push_str(&format!(", {} left", short_clock(left)));
            }
        }
        let n = self.speakers;
        s.push_str(&format!(", {n} speaker{}", if n == 1 { "" } else { "s" }));
        s
    }
}

/// `m:ss` (or `h:mm:ss` from an hour on), whole seconds.
fn short_clock(t: f64) -> String {
    let t = t.max(0.0).round() as u64;
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(id: u64, spk: &str, s: f64, e: f64, status: Status) -> Event {
        Event::Turn {
            time: e,
            turn: Turn {
                id,
                speaker: spk.into(),
                start: s,
                end: e,
                status,
                confidence: 0.9,
            },
            arrived: None,
        }
    }

    #[test]
    fn rttm_only_final_turns() {
        let mut buf = Vec::new();
        {
            let mut w = LabelWriter::new(&mut buf, Format::Rttm, "my file");
            w.write(&turn(1, "S1", 0.5, 1.25, Status::Tentative))
                .unwrap();
            w.write(&turn(1, "S1", 0.5, 1.5, Status::Final)).unwrap();
        }
        let s = String::from_utf8(buf).unwrap();
        assert_eq!(s, "SPEAKER my_file 1 0.500 1.000 <NA> <NA> S1 <NA> <NA>\n");
    }

    #[test]
    fn jsonl_schema_fields() {
        let mut buf = Vec::new();
        LabelWriter::new(&mut buf, Format::Jsonl, "x")
            .write(&turn(7, "S2", 1.0, 2.0, Status::Final))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["type"], "turn");
        assert_eq!(v["id"], 7);
        assert_eq!(v["speaker"], "S2");
        assert_eq!(v["status"], "final");
        assert_eq!(v["start"], 1.0);
        assert_eq!(v["end"], 2.0);
    }

    #[test]
    fn broken_pipe_is_closed() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = LabelWriter::new(Broken, Format::Jsonl, "x");
        assert!(matches!(
            w.write(&turn(1, "S1", 0.0, 1.0, Status::Final)),
            Err(SinkError::Closed)
        ));
    }

    #[test]
    fn rttm_file_is_valid_after_each_turn_and_renamed_at_end() {
        let dir = std::env::temp_dir().join(format!("whospoke-rttm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("out.rttm");
        let mut f = RttmFile::create(&p, "meet").unwrap();
        f.write(&turn(2, "S2", 3.0, 4.0, Status::Final)).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
        f.write(&turn(1, "S1", 1.0, 2.0, Status::Final)).unwrap();
        f.write(&Event::Rename {
            time: 5.0,
            from: "S2".into(),
            to: "Ann Lee".into(),
        })
        .unwrap();
        // The second pass moves turn 1 to S2 (now Ann Lee); a tentative turn's relabel changes nothing.
        f.write(&Event::Relabel {
            time: 6.0,
            id: 1,
            from: "S1".into(),
            to: "Ann Lee".into(),
            start: 1.0,
            end: 2.0,
        })
        .unwrap();
        f.write(&Event::Relabel {
            time: 6.0,
            id: 9,
            from: "S2".into(),
            to: "S1".into(),
            start: 7.0,
            end: 8.0,
        })
        .unwrap();
        f.finish().unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(" 1.000 1.000 <NA> <NA> Ann_Lee "), "{s}");
        assert!(lines[1].contains(" Ann_Lee "));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rttm_rewrite_joins_one_speakers_turns_across_a_short_pause() {
        let dir = std::env::temp_dir().join(format!("whospoke-rttm-join-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = |join: f64| {
            let p = dir.join(format!("out-{join}.rttm"));
            let mut f = RttmFile::create(&p, "meet")
                .unwrap()
                .join_pauses_below(join);
            // S1 1-2 s; S2 2.2-3 s, which the second pass gives to S1; S1 again after 0.5 s.
            f.write(&turn(1, "S1", 1.0, 2.0, Status::Final)).unwrap();
            f.write(&turn(2, "S2", 2.2, 3.0, Status::Final)).unwrap();
            f.write(&turn(3, "S1", 3.5, 4.0, Status::Final)).unwrap();
            f.write(&Event::Relabel {
                time: 6.0,
                id: 2,
                from: "S2".into(),
                to: "S1".into(),
                start: 2.2,
                end: 3.0,
            })
            .unwrap();
            f.finish().unwrap();
            std::fs::read_to_string(&p).unwrap()
        };
        let joined = lines(0.3);
        assert_eq!(joined.lines().count(), 2, "{joined}");
        assert!(joined.contains(" 1.000 2.000 <NA> <NA> S1 "), "{joined}");
        assert!(joined.contains(" 3.500 0.500 <NA> <NA> S1 "), "{joined}");
        assert_eq!(lines(0.0).lines().count(), 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rttm_rewrite_does_not_join_across_another_speakers_turn() {
        type T = (f64, f64, &'static str);
        fn span(t: &T) -> (f64, f64, &str) {
            (t.0, t.1, t.2)
        }
        fn set_end(t: &mut T, e: f64) {
            t.1 = e;
        }
        // S2 pauses 0.2 s while S3 speaks (the second pass gave S3 the turn in between, and a
        // second voice of S2 overlaps its start): the pause is S3's speech, not S2's.
        let turns = vec![
            (55.8, 56.22, "S2"),
            (56.22, 56.46, "S3"),
            (56.22, 56.26, "S2"),
            (56.46, 57.55, "S2"),
        ];
        let got = join_pieces(turns, 0.3, span, set_end);
        assert_eq!(
            got,
            vec![
                (55.8, 56.26, "S2"),
                (56.22, 56.46, "S3"),
                (56.46, 57.55, "S2")
            ]
        );
        // Without the other speaker in the pause the turns join.
        let got = join_pieces(vec![(1.0, 2.0, "S1"), (2.2, 3.0, "S1")], 0.3, span, set_end);
        assert_eq!(got, vec![(1.0, 3.0, "S1")]);
    }

    #[test]
    fn progress_line_counts_time_speed_and_speakers_and_is_erased_at_the_end() {
        let mut p = Progress::new("meeting.wav", Some(3725.0));
        // The first event draws at once; the next ones within 250 ms do not.
        let first = p
            .update(&turn(1, "S1", 0.5, 2.0, Status::Tentative))
            .unwrap();
        assert!(
            first.starts_with("\rwhospoke: 0:02 / 1:02:05 of meeting.wav (0 %)"),
            "{first:?}"
        );
        assert!(first.ends_with("0 speakers\x1b[K"), "{first:?}");
        let spk = Event::Speaker {
            time: 2.5,
            speaker: "S1".into(),
        };
        assert_eq!(p.update(&spk), None);
        assert!(p.shown());
        p.processed = 1862.5;
        // Half the input in 62 s of wall time: 30x real time, about a minute left.
        assert_eq!(
            p.line(62.0),
            "whospoke: 31:03 / 1:02:05 of meeting.wav (50 %), 30x real time, 1:02 left, 1 speaker"
        );
        assert_eq!(
            p.update(&Event::End {
                time: 3725.0,
                speakers: vec!["S1".into()],
                dropped_samples: 0,
            }),
            Some("\r\x1b[K".to_string())
        );
        assert!(!p.shown());
        // Unknown length (stdin), two speakers, too early to know the speed.
        let mut q = Progress::new("stdin", None);
        q.speakers = 2;
        q.processed = 75.0;
        assert_eq!(q.line(0.2), "whospoke: 1:15 of stdin, 2 speakers");
        // Nothing drawn, nothing to erase.
        let mut r = Progress::new("x.wav", None);
        let end = Event::End {
            time: 0.0,
            speakers: vec![],
            dropped_samples: 0,
        };
        assert_eq!(r.update(&end), None);
    }
}
