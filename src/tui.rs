//! The live terminal dashboard (ratatui + crossterm).
//!
//! Split in three parts so that everything but the terminal itself is testable:
//! - [`DashboardState`]: built from pipeline [`Event`]s ([`DashboardState::apply`]) and key presses
//!   ([`DashboardState::handle_key`], which returns the [`Action`] to take);
//! - [`draw`]: a pure function of the state onto a ratatui [`Frame`] (tests use `TestBackend`);
//! - [`run`]: the terminal loop (raw mode, alternate screen, ~12 fps redraw, non-blocking drain of
//!   the event channel, terminal restored on every exit path including panics).
//!
//! Screen at 80x24 (3 speakers, S2 renamed Alice; `█` final, `░` tentative, one colour per
//! speaker; with `NO_COLOR` a glyph per speaker instead; on tall screens the name is also shown
//! in block letters):
//! ```text
//!  whospoke   meeting.wav                                                00:00:30
//! ┌ Now speaking ────────────────────────────┐┌ Input ───────────────────────────┐
//! │                                          ││Level ██████████████······  -18 dB│
//! │                   Alice                  ││● SPEECH   time 00:00:30          │
//! │                 speaker 2                ││in meeting.wav (16 kHz mono)      │
//! └──────────────────────────────────────────┘└──────────────────────────────────┘
//! ┌ Speaker track · last 60 s ───────────────────────────────────────────────────┐
//! │S1        ┊█████████████        ┊           ┊          ┊          ┊           │
//! │          ┊█████████████        ┊           ┊          ┊          ┊           │
//! │Alice     ┊          ┊  ███████████  ░░░░░░░┊          ┊          ┊           │
//! │          ┊          ┊  ███████████  ░░░░░░░┊          ┊          ┊           │
//! │S3        ┊          ┊        ░░░░░         ┊          ┊          ┊           │
//! │          ┊          ┊        ░░░░░         ┊          ┊          ┊           │
//! │                                                                              │
//! │          |0:00      |0:10      |0:20       |0:30      |0:40      |0:50       │
//! └──────────────────────────────────────────────────────── █ final  ░ tentative ┘
//! ┌ Speakers ────────────────────────────────────────────────────────────────────┐
//! │#     Speaker      Talk     Share  Turns                                      │
//! │1  ██ S1               0:11    35%      1 █████████████                       │
//! │2  ██ Alice ◀          0:16    52%      2 ███████████████████                 │
//! │3  ██ S3               0:04    13%      1 █████                               │
//! └──────────────────────────────────────────────────────────────────────────────┘
//!  lag 0.5 s │ dropped 1600 smp (0.10 s) │ load 35% of real time │ 3 speakers
//!   q  quit   space  pause   r  rename   m  remember voice   ?  keys
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::backend::CrosstermBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};

use crate::events::{Control, Event, Health, Status};
use crate::{Error, Result};

/// Seconds of stream time shown across the width of the speaker track.
pub const WINDOW_SECS: f64 = 60.0;
/// Width of the speaker-name column at the left of each lane of the track (cells).
pub const LANE_LABEL_WIDTH: u16 = 10;
/// Fixed speaker palette (colour mode): speaker `n` (in order of appearance) gets `PALETTE[n % len]`.
pub const PALETTE: [Color; 10] = [
    Color::Cyan,
    Color::Yellow,
    Color::Magenta,
    Color::Green,
    Color::LightBlue,
    Color::LightRed,
    Color::LightGreen,
    Color::LightMagenta,
    Color::Blue,
    Color::Red,
];
/// Glyph of a final stretch in colour mode.
pub const FINAL_GLYPH: &str = "█";
/// Glyph of a tentative stretch (both modes).
pub const TENTATIVE_GLYPH: &str = "░";
/// Per-speaker glyphs of final stretches when colours are off (`NO_COLOR`).
pub const NO_COLOR_GLYPHS: [&str; 10] = ["█", "▓", "#", "=", "%", "@", "&", "+", "*", "$"];

/// Redraw period (~12.5 fps).
const FRAME: Duration = Duration::from_millis(80);
/// Longest name accepted when renaming.
const MAX_NAME: usize = 24;

/// How the dashboard is set up by the binary.
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    /// Input shown in the header until the `Start` event names it.
    pub input_name: String,
    /// Colours on (false when `NO_COLOR` is set: distinct glyphs per speaker instead).
    pub color: bool,
    /// Terminal to draw on: `None` = stdout; `Some("/dev/tty")` when stdout is redirected.
    pub tty_path: Option<PathBuf>,
    /// Return as soon as the stream has ended instead of waiting for `q` (read when the stream
    /// ends, so the caller can decide late, e.g. after a signal).
    pub exit_on_end: Arc<AtomicBool>,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuitReason {
    /// The user quit (q / Esc / Ctrl-C) while the stream was running; `Control::Stop` was sent.
    User,
    /// The stream ended (event channel closed after `End`, or closed without one) and the user
    /// acknowledged with q, or `exit_on_end` was set.
    StreamEnded,
}

/// What a key press asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to send (the state may have changed: pause, help, rename prompt...).
    None,
    /// Send this control to the pipeline and keep going.
    Send(Control),
    /// Quit the dashboard: [`run`] sends `Control::Stop` and returns.
    Quit,
}

impl Action {
    /// The control this action sends to the pipeline, if any (`Quit` sends `Control::Stop`).
    pub fn control(&self) -> Option<Control> {
        match self {
            Action::None => None,
            Action::Send(c) => Some(c.clone()),
            Action::Quit => Some(Control::Stop),
        }
    }
}

/// Talk statistics of one speaker.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerStats {
    /// 1-based number (order of first appearance; the key used to pick it when renaming).
    pub number: usize,
    /// Current display name.
    pub label: String,
    /// Seconds of speech attributed to the speaker (tentative and final turns).
    pub talk: f64,
    /// Share of all talk time, in [0, 1].
    pub share: f64,
    /// Number of turns.
    pub turns: usize,
}

#[derive(Debug, Clone)]
struct SpeakerRec {
    label: String,
}

#[derive(Debug, Clone)]
struct TurnRec {
    speaker: usize,
    start: f64,
    end: f64,
    status: Status,
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Normal,
    /// `r` (or `m`) pressed: waiting for the speaker number (or a name for the default speaker).
    RenamePick {
        default: Option<usize>,
        /// Also remember the voice (save a profile): `m`, or Tab in the prompt.
        remember: bool,
    },
    /// Typing the new name of `speaker`; `remember` = also save its voice as a profile.
    RenameType {
        speaker: usize,
        name: String,
        remember: bool,
    },
}

/// Everything the dashboard shows, built from events and key presses. Pure: no terminal.
#[derive(Debug, Clone)]
pub struct DashboardState {
    input_name: String,
    color: bool,
    sample_rate: Option<u32>,
    channels: Option<u16>,
    speakers: Vec<SpeakerRec>,
    /// Every label a speaker ever had (old names keep pointing at it) -> speaker index.
    aliases: HashMap<String, usize>,
    turns: BTreeMap<u64, TurnRec>,
    now: f64,
    health: Option<Health>,
    dropped_total: u64,
    last_drop_reason: Option<String>,
    ended: bool,
    closed: bool,
    /// Right edge of the frozen track while paused.
    paused_at: Option<f64>,
    help: bool,
    mode: Mode,
    notice: Option<String>,
}

impl DashboardState {
    /// Empty dashboard for `input_name`; `color` false = no colours at all.
    pub fn new(input_name: &str, color: bool) -> Self {
        DashboardState {
            input_name: input_name.to_string(),
            color,
            sample_rate: None,
            channels: None,
            speakers: Vec::new(),
            aliases: HashMap::new(),
            turns: BTreeMap::new(),
            now: 0.0,
            health: None,
            dropped_total: 0,
            last_drop_reason: None,
            ended: false,
            closed: false,
            paused_at: None,
            help: false,
            mode: Mode::Normal,
            notice: None,
        }
    }

    /// Update the state with one pipeline event.
    pub fn apply(&mut self, ev: &Event) {
        self.advance(ev.time());
        match ev {
            Event::Start {
                input,
                sample_rate,
                channels,
                ..
            } => {
                if !input.is_empty() {
                    self.input_name = input.clone();
                }
                self.sample_rate = Some(*sample_rate);
                self.channels = Some(*channels);
            }
            Event::Turn { turn, .. } => {
                let speaker = self.speaker_index(&turn.speaker);
                self.turns.insert(
                    turn.id,
                    TurnRec {
                        speaker,
                        start: turn.start,
                        end: turn.end.max(turn.start),
                        status: turn.status,
                    },
                );
                self.advance(turn.end);
            }
            Event::Relabel {
                id, to, start, end, ..
            } => {
                let speaker = self.speaker_index(to);
                let rec = self.turns.entry(*id).or_insert(TurnRec {
                    speaker,
                    start: *start,
                    end: *end,
                    status: Status::Tentative,
                });
                rec.speaker = speaker;
                rec.start = *start;
                rec.end = end.max(*start);
            }
            Event::Speaker { speaker, .. } => {
                self.speaker_index(speaker);
            }
            Event::Rename { from, to, .. } => self.rename_local(from, to),
            Event::Identified { speaker, name, .. } => self.rename_local(speaker, name),
            Event::Remembered { message, .. } => self.notice = Some(message.clone()),
            Event::Device {
                device,
                state,
                gap_start,
                gap,
                reason,
                ..
            } => {
                let text = crate::events::device_message(device, *state, *gap_start, *gap, reason);
                self.notice = Some(text);
            }
            Event::Dropped { total, reason, .. } => {
                self.dropped_total = self.dropped_total.max(*total);
                self.last_drop_reason = Some(reason.clone());
            }
            Event::Status { health, .. } => {
                self.dropped_total = self.dropped_total.max(health.dropped_samples);
                self.health = Some(health.clone());
            }
            Event::End {
                speakers,
                dropped_samples,
                ..
            } => {
                for s in speakers {
                    self.speaker_index(s);
                }
                self.dropped_total = self.dropped_total.max(*dropped_samples);
                for t in self.turns.values_mut() {
                    t.status = Status::Final;
                }
                self.ended = true;
            }
        }
    }

    /// The event channel closed (after `End`, or because the pipeline went away).
    pub fn mark_closed(&mut self) {
        self.closed = true;
    }

    /// Whether the stream is over (an `End` event arrived or the channel closed).
    pub fn stream_over(&self) -> bool {
        self.ended || self.closed
    }

    /// Whether scrolling is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// Whether the key help overlay is shown.
    pub fn help_shown(&self) -> bool {
        self.help
    }

    /// Whether a rename prompt is open.
    pub fn renaming(&self) -> bool {
        self.mode != Mode::Normal
    }

    /// Latest stream time seen, seconds.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Current display names, in order of first appearance.
    pub fn speaker_labels(&self) -> Vec<String> {
        self.speakers.iter().map(|s| s.label.clone()).collect()
    }

    /// Per-speaker talk time, share and turn count, in order of first appearance.
    pub fn stats(&self) -> Vec<SpeakerStats> {
        let mut talk = vec![0.0f64; self.speakers.len()];
        let mut turns = vec![0usize; self.speakers.len()];
        // A long turn arrives as consecutive final pieces of one speaker: pieces that continue the
        // speaker's previous stretch without a gap count as one turn.
        let mut by_start: Vec<&TurnRec> = self.turns.values().collect();
        by_start.sort_by(|a, b| a.start.total_cmp(&b.start));
        let mut last_end = vec![f64::NEG_INFINITY; self.speakers.len()];
        for t in by_start {
            talk[t.speaker] += (t.end - t.start).max(0.0);
            if t.start - last_end[t.speaker] > 0.011 {
                turns[t.speaker] += 1;
            }
            last_end[t.speaker] = last_end[t.speaker].max(t.end);
        }
        let total: f64 = talk.iter().sum();
        self.speakers
            .iter()
            .enumerate()
            .map(|(i, s)| SpeakerStats {
                number: i + 1,
                label: s.label.clone(),
                talk: talk[i],
                share: if total > 0.0 { talk[i] / total } else { 0.0 },
                turns: turns[i],
            })
            .collect()
    }

    /// Names of the speakers talking now (overlap gives several), most recent first.
    pub fn current_speakers(&self) -> Vec<String> {
        self.current()
            .iter()
            .map(|&i| self.speakers[i].label.clone())
            .collect()
    }

    /// Handle one key press; returns what the caller must do.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C'))
        {
            return Action::Quit;
        }
        self.notice = None;
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.key_normal(key),
            Mode::RenamePick { default, remember } => {
                match key.code {
                    KeyCode::Esc => {}
                    KeyCode::Tab => {
                        self.mode = Mode::RenamePick {
                            default,
                            remember: !remember,
                        }
                    }
                    KeyCode::Char(c @ '1'..='9') => {
                        let n = c as usize - '0' as usize;
                        if n <= self.speakers.len() {
                            self.mode = self.type_name(n - 1, remember);
                        } else {
                            self.notice = Some(format!("no speaker {n}"));
                            self.mode = Mode::RenamePick { default, remember };
                        }
                    }
                    KeyCode::Enter => {
                        if let Some(speaker) = default {
                            self.mode = self.type_name(speaker, remember);
                        }
                    }
                    KeyCode::Char(c) if !c.is_control() && !c.is_whitespace() => {
                        // Typing a name straight away renames the default speaker.
                        if let Some(speaker) = default {
                            self.mode = Mode::RenameType {
                                speaker,
                                name: c.to_string(),
                                remember,
                            };
                        } else {
                            self.mode = Mode::RenamePick { default, remember };
                        }
                    }
                    _ => self.mode = Mode::RenamePick { default, remember },
                }
                Action::None
            }
            Mode::RenameType {
                speaker,
                mut name,
                remember,
            } => match key.code {
                KeyCode::Esc => Action::None,
                KeyCode::Enter if remember => self.commit_remember(speaker, name),
                KeyCode::Enter => self.commit_rename(speaker, name),
                KeyCode::Tab => {
                    self.mode = Mode::RenameType {
                        speaker,
                        name,
                        remember: !remember,
                    };
                    Action::None
                }
                KeyCode::Backspace => {
                    name.pop();
                    self.mode = Mode::RenameType {
                        speaker,
                        name,
                        remember,
                    };
                    Action::None
                }
                KeyCode::Char(c) if !c.is_control() => {
                    if name.chars().count() < MAX_NAME {
                        // Labels are single tokens in every output (RTTM is space-separated).
                        name.push(if c.is_whitespace() { '_' } else { c });
                    }
                    self.mode = Mode::RenameType {
                        speaker,
                        name,
                        remember,
                    };
                    Action::None
                }
                _ => {
                    self.mode = Mode::RenameType {
                        speaker,
                        name,
                        remember,
                    };
                    Action::None
                }
            },
        }
    }

    /// The name prompt for `speaker`: empty for renaming; for remembering, its current name
    /// unless that is an automatic `S` label.
    fn type_name(&self, speaker: usize, remember: bool) -> Mode {
        let label = &self.speakers[speaker].label;
        let automatic = label
            .strip_prefix('S')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        Mode::RenameType {
            speaker,
            name: if remember && !automatic {
                label.clone()
            } else {
                String::new()
            },
            remember,
        }
    }

    fn key_normal(&mut self, key: KeyEvent) -> Action {
        if self.help {
            match key.code {
                KeyCode::Char('q') | KeyCode::Char('Q') => return Action::Quit,
                KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => {
                    self.help = false;
                    return Action::None;
                }
                _ => self.help = false,
            }
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Action::Quit,
            KeyCode::Char(' ') => {
                self.paused_at = match self.paused_at {
                    Some(_) => None,
                    None => Some(self.view_end()),
                };
                Action::None
            }
            KeyCode::Left => {
                if let Some(p) = self.paused_at {
                    self.paused_at = Some((p - WINDOW_SECS / 6.0).max(WINDOW_SECS.min(self.now)));
                }
                Action::None
            }
            KeyCode::Right => {
                if let Some(p) = self.paused_at {
                    self.paused_at = Some((p + WINDOW_SECS / 6.0).min(self.now));
                }
                Action::None
            }
            KeyCode::Char('?') | KeyCode::Char('h') => {
                self.help = true;
                Action::None
            }
            KeyCode::Char(c @ ('r' | 'R' | 'm' | 'M')) => {
                let remember = matches!(c, 'm' | 'M');
                if self.speakers.is_empty() {
                    self.notice = Some(if remember {
                        "no speaker to remember yet".into()
                    } else {
                        "no speaker to rename yet".into()
                    });
                } else {
                    self.mode = Mode::RenamePick {
                        default: self.default_rename_target(),
                        remember,
                    };
                }
                Action::None
            }
            _ => Action::None,
        }
    }

    fn commit_rename(&mut self, speaker: usize, name: String) -> Action {
        let name = name.trim().to_string();
        let old = self.speakers[speaker].label.clone();
        if name.is_empty() || name == old {
            return Action::None;
        }
        if let Some(&other) = self.aliases.get(&name) {
            if other != speaker {
                self.notice = Some(format!("\"{name}\" is already used"));
                self.mode = Mode::RenameType {
                    speaker,
                    name,
                    remember: false,
                };
                return Action::None;
            }
        }
        self.rename_local(&old, &name);
        Action::Send(Control::Rename { speaker: old, name })
    }

    /// Enter with "remember this voice" on: renames `speaker` to `name` (if different) and asks the
    /// pipeline to save its voice as the profile `name`; the answer (`Event::Remembered`) shows as
    /// a notice.
    fn commit_remember(&mut self, speaker: usize, name: String) -> Action {
        let name = name.trim().to_string();
        let old = self.speakers[speaker].label.clone();
        if name.is_empty() {
            self.notice = Some("type a name first".into());
            self.mode = Mode::RenameType {
                speaker,
                name,
                remember: true,
            };
            return Action::None;
        }
        if let Some(&other) = self.aliases.get(&name) {
            if other != speaker {
                self.notice = Some(format!("\"{name}\" is already used"));
                self.mode = Mode::RenameType {
                    speaker,
                    name,
                    remember: true,
                };
                return Action::None;
            }
        }
        if name != old {
            self.rename_local(&old, &name);
        }
        self.notice = Some(format!("remembering the voice of {name}…"));
        Action::Send(Control::Remember { speaker: old, name })
    }

    fn rename_local(&mut self, from: &str, to: &str) {
        match self.aliases.get(from).copied() {
            Some(i) => {
                self.speakers[i].label = to.to_string();
                self.aliases.insert(to.to_string(), i);
            }
            None => {
                self.speaker_index(to);
            }
        }
    }

    fn advance(&mut self, t: f64) {
        if t.is_finite() && t > self.now {
            self.now = t;
        }
    }

    fn speaker_index(&mut self, label: &str) -> usize {
        if let Some(&i) = self.aliases.get(label) {
            return i;
        }
        let i = self.speakers.len();
        self.speakers.push(SpeakerRec {
            label: label.to_string(),
        });
        self.aliases.insert(label.to_string(), i);
        i
    }

    fn view_end(&self) -> f64 {
        self.paused_at.unwrap_or(self.now)
    }

    /// Visible track window `[t0, t0 + WINDOW_SECS)`.
    fn window_start(&self) -> f64 {
        (self.view_end() - WINDOW_SECS).max(0.0)
    }

    /// Speakers talking now: a turn reaching within `hold` of live (labels lag behind the audio).
    fn current(&self) -> Vec<usize> {
        if self.stream_over() {
            return Vec::new();
        }
        let lag = self.health.as_ref().map_or(0.0, |h| h.label_lag.max(0.0));
        let hold = 1.5f64.max(lag + 1.0);
        let mut latest: BTreeMap<usize, f64> = BTreeMap::new();
        for t in self.turns.values() {
            if t.end >= self.now - hold {
                let e = latest.entry(t.speaker).or_insert(t.end);
                *e = e.max(t.end);
            }
        }
        let mut v: Vec<(usize, f64)> = latest.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(i, _)| i).collect()
    }

    fn last_active(&self) -> Vec<f64> {
        let mut last = vec![f64::NEG_INFINITY; self.speakers.len()];
        for t in self.turns.values() {
            last[t.speaker] = last[t.speaker].max(t.end);
        }
        last
    }

    fn default_rename_target(&self) -> Option<usize> {
        if let Some(&i) = self.current().first() {
            return Some(i);
        }
        let last = self.last_active();
        (0..self.speakers.len())
            .filter(|&i| last[i].is_finite())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .or(if self.speakers.is_empty() {
                None
            } else {
                Some(0)
            })
    }

    /// Up to `max` speakers to show (order of appearance); the most recently active win when
    /// not all fit.
    fn visible_speakers(&self, max: usize) -> Vec<usize> {
        let n = self.speakers.len();
        if n <= max {
            return (0..n).collect();
        }
        let last = self.last_active();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| last[b].total_cmp(&last[a]).then(a.cmp(&b)));
        idx.truncate(max);
        idx.sort_unstable();
        idx
    }

    fn speaker_color(&self, i: usize) -> Color {
        PALETTE[i % PALETTE.len()]
    }

    /// Style in the speaker's colour (plain when colours are off).
    fn speaker_fg(&self, i: usize) -> Style {
        if self.color {
            Style::new().fg(self.speaker_color(i))
        } else {
            Style::new()
        }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn final_glyph(&self, i: usize) -> &'static str {
        if self.color {
            FINAL_GLYPH
        } else {
            NO_COLOR_GLYPHS[i % NO_COLOR_GLYPHS.len()]
        }
    }
}

/// Draw the whole dashboard for `state` on `frame` (any size; laid out for 80x24 and up).
pub fn draw(frame: &mut Frame, state: &DashboardState) {
    let area = frame.area();
    if area.width < 30 || area.height < 8 {
        let who = state.current_speakers().join(" + ");
        let text = vec![
            Line::from(Span::styled("whospoke", Style::new().bold())),
            Line::from(if who.is_empty() { "-".into() } else { who }),
            Line::from("terminal too small"),
        ];
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    // Fixed rows: header, health, footer. The "now speaking" row is 5 tall (3 on short screens);
    // the rest is shared by the track and the table. On tall screens the track stops growing
    // once every lane is 2 rows + a gap; the spare rows go to a bigger "now speaking" box, then
    // to the table.
    let mut top_h: u16 = if area.height >= 20 { 5 } else { 3 };
    let avail = area.height.saturating_sub(3 + top_h);
    let n = state.speakers.len().max(1) as u16;
    let mut table_h = (n + 3).min(avail / 2).max(3.min(avail));
    let mut track_h = avail - table_h;
    let track_cap = n.saturating_mul(3).saturating_add(3);
    if track_h > track_cap {
        let extra = track_h - track_cap;
        track_h = track_cap;
        let grow = extra.min(4);
        top_h += grow;
        table_h += extra - grow;
    }
    let [header, top, track, table, health, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(top_h),
        Constraint::Length(track_h),
        Constraint::Length(table_h),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let [now_area, input_area] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);

    draw_header(frame, header, state);
    draw_now(frame, now_area, state);
    draw_input(frame, input_area, state);
    draw_track(frame, track, state);
    draw_table(frame, table, state);
    draw_health(frame, health, state);
    draw_footer(frame, footer, state);
    if state.help {
        draw_help(frame, area, state);
    }
}

fn fmt_clock(t: f64) -> String {
    let s = t.max(0.0).floor() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn fmt_talk(t: f64) -> String {
    let s = t.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Keep the end of `s` when it is longer than `max` cells (paths: the file name matters).
fn truncate_left(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        let tail: String = s.chars().skip(n - max + 1).collect();
        format!("…{tail}")
    }
}

fn truncate_right(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        let head: String = s.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

fn draw_header(frame: &mut Frame, area: Rect, st: &DashboardState) {
    let mut right: Vec<Span> = Vec::new();
    let badge = |text: &str, c: Color| {
        if st.color {
            Span::styled(
                format!(" {text} "),
                Style::new().fg(Color::Black).bg(c).bold(),
            )
        } else {
            Span::styled(format!(" {text} "), Style::new().reversed().bold())
        }
    };
    if st.is_paused() {
        right.push(badge("PAUSED", Color::Yellow));
        right.push(Span::raw(" "));
    }
    if st.stream_over() {
        right.push(badge("ENDED", Color::Gray));
        right.push(Span::raw(" "));
    }
    right.push(Span::styled(fmt_clock(st.now), Style::new().bold()));
    right.push(Span::raw(" "));
    let right_w: usize = right.iter().map(|s| s.width()).sum();
    let title = Span::styled(" whospoke ", Style::new().bold().reversed());
    let room = (area.width as usize).saturating_sub(right_w + title.width() + 3);
    let left = Line::from(vec![
        title,
        Span::raw("  "),
        Span::styled(truncate_left(&st.input_name, room), Style::new().bold()),
    ]);
    frame.render_widget(Paragraph::new(left), area);
    frame.render_widget(
        Paragraph::new(Line::from(right)).alignment(Alignment::Right),
        area,
    );
}

fn draw_now(frame: &mut Frame, area: Rect, st: &DashboardState) {
    let block = Block::bordered().title(" Now speaking ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.width == 0 || inner.height == 0 {
        return;
    }
    let current = st.current();
    if current.is_empty() {
        let msg = if st.stream_over() {
            "stream ended"
        } else if st.turns.is_empty() {
            "waiting for speech…"
        } else {
            "— nobody —"
        };
        let y = inner.y + inner.height / 2;
        frame.render_widget(
            Paragraph::new(msg)
                .alignment(Alignment::Center)
                .style(st.fg(Color::DarkGray)),
            Rect::new(inner.x, y, inner.width, 1),
        );
        return;
    }
    let shown = &current[..current.len().min(3)];
    let boxes = Layout::horizontal(shown.iter().map(|_| Constraint::Fill(1))).split(inner);
    for (k, (&spk, &b)) in shown.iter().zip(boxes.iter()).enumerate() {
        let b = if k + 1 < shown.len() && b.width > 1 {
            Rect::new(b.x, b.y, b.width - 1, b.height)
        } else {
            b
        };
        let style = if st.color {
            Style::new()
                .fg(Color::Black)
                .bg(st.speaker_color(spk))
                .bold()
        } else {
            Style::new().reversed().bold()
        };
        frame.buffer_mut().set_style(b, style);
        let label = &st.speakers[spk].label;
        let name = truncate_right(label, b.width.saturating_sub(2) as usize);
        let glyph = st.final_glyph(spk);
        let deco = if st.color {
            format!("speaker {}", spk + 1)
        } else {
            format!("{g}{g} speaker {} {g}{g}", spk + 1, g = glyph)
        };
        let mut lines: Vec<(u16, String)> = Vec::new();
        if let Some(big) = big_text(label).filter(|rows| {
            b.height >= BIG_ROWS as u16 + 2 && rows[0].chars().count() + 2 <= b.width as usize
        }) {
            // Tall box: the name in 5-row block letters, then the name and number in plain text.
            let top = b.y + (b.height - BIG_ROWS as u16 - 1) / 2;
            for (k, row) in big.into_iter().enumerate() {
                lines.push((top + k as u16, row));
            }
            let plain = truncate_right(&format!("{label} · {deco}"), b.width as usize);
            lines.push((top + BIG_ROWS as u16, plain));
        } else {
            let mid = b.y + b.height.saturating_sub(1) / 2;
            lines.push((mid, name));
            if b.height >= 3 {
                lines.push((mid + 1, truncate_right(&deco, b.width as usize)));
            }
        }
        for (y, text) in lines {
            if y < b.y + b.height {
                frame.render_widget(
                    Paragraph::new(text)
                        .alignment(Alignment::Center)
                        .style(style),
                    Rect::new(b.x, y, b.width, 1),
                );
            }
        }
    }
}

/// Rows of the block font.
const BIG_ROWS: usize = 5;

/// 3x5 block font (upper case, digits, `_`, `-`, `.`, space): `#` = lit.
fn big_glyph(c: char) -> Option<[&'static str; BIG_ROWS]> {
    Some(match c.to_ascii_uppercase() {
        'A' => [".#.", "#.#", "###", "#.#", "#.#"],
        'B' => ["##.", "#.#", "##.", "#.#", "##."],
        'C' => [".##", "#..", "#..", "#..", ".##"],
        'D' => ["##.", "#.#", "#.#", "#.#", "##."],
        'E' => ["###", "#..", "##.", "#..", "###"],
        'F' => ["###", "#..", "##.", "#..", "#.."],
        'G' => [".##", "#..", "#.#", "#.#", ".##"],
        'H' => ["#.#", "#.#", "###", "#.#", "#.#"],
        'I' => ["###", ".#.", ".#.", ".#.", "###"],
        'J' => ["..#", "..#", "..#", "#.#", ".#."],
        'K' => ["#.#", "#.#", "##.", "#.#", "#.#"],
        'L' => ["#..", "#..", "#..", "#..", "###"],
        'M' => ["#.#", "###", "###", "#.#", "#.#"],
        'N' => ["##.", "#.#", "#.#", "#.#", "#.#"],
        'O' => [".#.", "#.#", "#.#", "#.#", ".#."],
        'P' => ["##.", "#.#", "##.", "#..", "#.."],
        'Q' => [".#.", "#.#", "#.#", "##.", ".##"],
        'R' => ["##.", "#.#", "##.", "#.#", "#.#"],
        'S' => [".##", "#..", ".#.", "..#", "##."],
        'T' => ["###", ".#.", ".#.", ".#.", ".#."],
        'U' => ["#.#", "#.#", "#.#", "#.#", "###"],
        'V' => ["#.#", "#.#", "#.#", "#.#", ".#."],
        'W' => ["#.#", "#.#", "###", "###", "#.#"],
        'X' => ["#.#", "#.#", ".#.", "#.#", "#.#"],
        'Y' => ["#.#", "#.#", ".#.", ".#.", ".#."],
        'Z' => ["###", "..#", ".#.", "#..", "###"],
        '0' => ["###", "#.#", "#.#", "#.#", "###"],
        '1' => [".#.", "##.", ".#.", ".#.", "###"],
        '2' => ["##.", "..#", ".#.", "#..", "###"],
        '3' => ["##.", "..#", ".#.", "..#", "##."],
        '4' => ["#.#", "#.#", "###", "..#", "..#"],
        '5' => ["###", "#..", "##.", "..#", "##."],
        '6' => [".##", "#..", "###", "#.#", "###"],
        '7' => ["###", "..#", ".#.", ".#.", ".#."],
        '8' => ["###", "#.#", "###", "#.#", "###"],
        '9' => ["###", "#.#", "###", "..#", "##."],
        '_' => ["...", "...", "...", "...", "###"],
        '-' => ["...", "...", "###", "...", "..."],
        '.' => ["...", "...", "...", "...", ".#."],
        ' ' => ["...", "...", "...", "...", "..."],
        _ => return None,
    })
}

/// `text` in the block font, one string per row (`█` lit, space unlit, 1 column between
/// letters); `None` when a character has no glyph.
fn big_text(text: &str) -> Option<Vec<String>> {
    let glyphs: Option<Vec<_>> = text.chars().map(big_glyph).collect();
    let glyphs = glyphs?;
    if glyphs.is_empty() {
        return None;
    }
    Some(
        (0..BIG_ROWS)
            .map(|r| {
                glyphs
                    .iter()
                    .map(|g| g[r].replace('#', "█").replace('.', " "))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
    )
}

fn draw_input(frame: &mut Frame, area: Rect, st: &DashboardState) {
    let block = Block::bordered().title(" Input ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.width < 10 || inner.height == 0 {
        return;
    }
    let level = st.health.as_ref().map(|h| h.level_db);
    let db_text = match level {
        Some(l) if l <= -119.0 => "  -∞ dB".to_string(),
        Some(l) => format!("{:>4.0} dB", l.clamp(-99.0, 0.0)),
        None => "  -- dB".to_string(),
    };
    // Quiet input is raised before speech detection (src/level.rs); the level shown is as received.
    let db_text = match st.health.as_ref().map(|h| h.gain_db) {
        Some(g) if g >= 0.5 => format!("{db_text}, +{g:.0} gain"),
        _ => db_text,
    };
    let prefix = "Level ";
    let gauge_w = (inner.width as usize).saturating_sub(prefix.len() + db_text.chars().count() + 1);
    let frac = level.map_or(0.0, |l| ((l + 60.0) / 60.0).clamp(0.0, 1.0));
    let filled = (frac * gauge_w as f32).round() as usize;
    let mut spans = vec![Span::raw(prefix)];
    for k in 0..gauge_w {
        let db_at = -60.0 + 60.0 * (k as f32 + 0.5) / gauge_w.max(1) as f32;
        if k < filled {
            let c = if db_at > -6.0 {
                Color::Red
            } else if db_at > -20.0 {
                Color::Yellow
            } else {
                Color::Green
            };
            spans.push(Span::styled("█", st.fg(c)));
        } else {
            spans.push(Span::styled("·", st.fg(Color::DarkGray)));
        }
    }
    spans.push(Span::raw(" "));
    spans.push(Span::raw(db_text));
    let mut lines = vec![Line::from(spans)];

    let speech = st.health.as_ref().is_some_and(|h| h.speech) && !st.stream_over();
    let speech_span = if speech {
        Span::styled("● SPEECH", st.fg(Color::Green).bold())
    } else {
        Span::styled("○ no speech", st.fg(Color::DarkGray))
    };
    lines.push(Line::from(vec![
        speech_span,
        Span::raw("   "),
        Span::raw("time "),
        Span::styled(fmt_clock(st.now), Style::new().bold()),
    ]));
    let fmt = match (st.sample_rate, st.channels) {
        (Some(sr), Some(ch)) => {
            let ch = match ch {
                1 => "mono".to_string(),
                2 => "stereo".to_string(),
                n => format!("{n} ch"),
            };
            format!(" ({} kHz {ch})", sr as f64 / 1000.0)
        }
        _ => String::new(),
    };
    let room = (inner.width as usize).saturating_sub(3 + fmt.chars().count());
    lines.push(Line::from(vec![
        Span::raw("in "),
        Span::styled(truncate_left(&st.input_name, room), Style::new().bold()),
        Span::raw(fmt),
    ]));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_track(frame: &mut Frame, area: Rect, st: &DashboardState) {
    let mut title = vec![Span::raw(format!(
        " Speaker track · last {:.0} s ",
        WINDOW_SECS
    ))];
    if st.is_paused() {
        title.push(Span::styled(" PAUSED ", Style::new().reversed().bold()));
        title.push(Span::raw(" "));
    }
    let final_key = if st.color {
        FINAL_GLYPH.to_string()
    } else {
        format!(
            "{}{}{}…",
            NO_COLOR_GLYPHS[0], NO_COLOR_GLYPHS[1], NO_COLOR_GLYPHS[2]
        )
    };
    let legend = Line::from(vec![
        Span::raw(" "),
        Span::raw(final_key),
        Span::raw(" final  "),
        Span::raw(TENTATIVE_GLYPH),
        Span::raw(" tentative "),
    ])
    .alignment(Alignment::Right);
    let block = Block::bordered()
        .title(Line::from(title))
        .title_bottom(legend);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height < 2 || inner.width < 12 {
        return;
    }
    let label_w = LANE_LABEL_WIDTH.min(inner.width / 4);
    let lane_x = inner.x + label_w;
    let lane_w = inner.width - label_w;
    let lane_rows = inner.height - 1;
    let axis_y = inner.y + inner.height - 1;
    let t0 = st.window_start();
    let dt = WINDOW_SECS / lane_w as f64;
    let col_of = |t: f64| -> Option<u16> {
        let c = ((t - t0) / dt).floor();
        (c >= 0.0 && c < lane_w as f64).then_some(c as u16)
    };
    let grid = st.fg(Color::DarkGray);
    let first_tick = (t0 / 10.0).ceil() as i64;
    let ticks: Vec<(u16, f64)> = (first_tick..)
        .map(|k| k as f64 * 10.0)
        .take_while(|&t| t < t0 + WINDOW_SECS)
        .filter_map(|t| col_of(t).map(|c| (c, t)))
        .collect();

    let buf: &mut Buffer = frame.buffer_mut();
    // Axis: tick marks with times.
    let mut next_free = 0u16;
    for &(c, t) in &ticks {
        let label = format!("|{}", fmt_talk(t));
        if c >= next_free && c + label.len() as u16 <= lane_w {
            buf.set_string(lane_x + c, axis_y, &label, grid);
            next_free = c + label.len() as u16 + 1;
        } else if c >= next_free {
            buf.set_string(lane_x + c, axis_y, "|", grid);
            next_free = c + 1;
        }
    }

    if st.speakers.is_empty() {
        buf.set_string(
            lane_x,
            inner.y + lane_rows / 2,
            "waiting for speakers…",
            grid,
        );
        return;
    }
    let lanes = st.visible_speakers(lane_rows as usize);
    // Lane pitch: 1 to 3 rows; at most 2 rows of glyphs (a 3-row pitch leaves a gap row).
    let lane_h = (lane_rows / lanes.len() as u16).clamp(1, 3);
    let glyph_rows = lane_h.min(2);
    let mut per_lane: Vec<Vec<Option<Status>>> = vec![vec![None; lane_w as usize]; lanes.len()];
    let lane_of: HashMap<usize, usize> = lanes.iter().enumerate().map(|(k, &s)| (s, k)).collect();
    for t in st.turns.values() {
        let Some(&k) = lane_of.get(&t.speaker) else {
            continue;
        };
        if t.end <= t0 || t.start >= t0 + WINDOW_SECS {
            continue;
        }
        let cells = &mut per_lane[k];
        let mut mark = |c: usize| {
            cells[c] = Some(match (cells[c], t.status) {
                (Some(Status::Final), _) | (_, Status::Final) => Status::Final,
                _ => Status::Tentative,
            });
        };
        // A cell is lit when its midpoint lies inside the turn.
        let c_from = (((t.start - t0) / dt) - 0.5).ceil().max(0.0) as usize;
        let mut lit = false;
        for c in c_from..lane_w as usize {
            let mid = t0 + (c as f64 + 0.5) * dt;
            if mid >= t.end {
                break;
            }
            if mid >= t.start {
                mark(c);
                lit = true;
            }
        }
        if !lit {
            // Shorter than a cell: still show it.
            if let Some(c) = col_of((t.start + t.end) / 2.0) {
                mark(c as usize);
            }
        }
    }
    for (k, &spk) in lanes.iter().enumerate() {
        let y0 = inner.y + k as u16 * lane_h;
        let style = st.speaker_fg(spk);
        let label = truncate_right(&st.speakers[spk].label, label_w.saturating_sub(1) as usize);
        buf.set_string(inner.x, y0, &label, style.bold());
        for dy in 0..lane_h {
            let y = y0 + dy;
            for &(c, _) in &ticks {
                buf.set_string(lane_x + c, y, "┊", grid);
            }
            if dy >= glyph_rows {
                continue;
            }
            for (c, cell) in per_lane[k].iter().enumerate() {
                let sym = match cell {
                    Some(Status::Final) => st.final_glyph(spk),
                    Some(Status::Tentative) => TENTATIVE_GLYPH,
                    None => continue,
                };
                buf.set_string(lane_x + c as u16, y, sym, style);
            }
        }
    }
}

fn draw_table(frame: &mut Frame, area: Rect, st: &DashboardState) {
    let block = Block::bordered().title(" Speakers ");
    let inner = block.inner(area);
    if inner.height == 0 {
        frame.render_widget(block, area);
        return;
    }
    let stats = st.stats();
    let current = st.current();
    let rows_room = inner.height.saturating_sub(1) as usize;
    let shown = st.visible_speakers(rows_room);
    let bar_w = inner.width.saturating_sub(2 + 2 + 12 + 8 + 6 + 6 + 6) as usize;
    let header = Row::new(vec!["#", "", "Speaker", "Talk", "Share", "Turns", ""])
        .style(Style::new().bold().underlined());
    let rows: Vec<Row> = shown
        .iter()
        .map(|&i| {
            let s = &stats[i];
            let speaking = current.contains(&i);
            let glyph = st.final_glyph(i);
            let filled = (s.share * bar_w as f64).round() as usize;
            let name_style = if speaking {
                st.speaker_fg(i).bold()
            } else {
                st.speaker_fg(i)
            };
            Row::new(vec![
                Cell::from(format!("{}", s.number)),
                Cell::from(Span::styled(glyph.repeat(2), st.speaker_fg(i))),
                Cell::from(Line::from(vec![
                    Span::styled(truncate_right(&s.label, 10), name_style),
                    Span::raw(if speaking { " ◀" } else { "" }),
                ])),
                Cell::from(Line::from(fmt_talk(s.talk)).alignment(Alignment::Right)),
                Cell::from(
                    Line::from(format!("{:.0}%", s.share * 100.0)).alignment(Alignment::Right),
                ),
                Cell::from(Line::from(format!("{}", s.turns)).alignment(Alignment::Right)),
                Cell::from(Span::styled(glyph.repeat(filled), st.speaker_fg(i))),
            ])
        })
        .collect();
    let rows = if rows.is_empty() {
        vec![Row::new(vec![
            Cell::from(""),
            Cell::from(""),
            Cell::from(Span::styled("no speakers yet", st.fg(Color::DarkGray))),
        ])]
    } else {
        rows
    };
    let widths = [
        Constraint::Length(2),
        Constraint::Length(2),
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let title = if shown.len() < st.speakers.len() {
        format!(
            " Speakers ({} of {}, most recent) ",
            shown.len(),
            st.speakers.len()
        )
    } else {
        " Speakers ".to_string()
    };
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn draw_health(frame: &mut Frame, area: Rect, st: &DashboardState) {
    let sep = || Span::styled(" │ ", st.fg(Color::DarkGray));
    let mut spans = vec![Span::raw(" ")];
    match &st.health {
        Some(h) => {
            let lag_c = if h.label_lag > 5.0 {
                Color::Red
            } else if h.label_lag > 2.0 {
                Color::Yellow
            } else {
                Color::Green
            };
            spans.push(Span::raw("lag "));
            spans.push(Span::styled(format!("{:.1} s", h.label_lag), st.fg(lag_c)));
        }
        None => spans.push(Span::raw("lag -")),
    }
    spans.push(sep());
    let dropped = format!(
        "dropped {} smp{}",
        st.dropped_total,
        match st.sample_rate {
            Some(sr) if sr > 0 && st.dropped_total > 0 =>
                format!(" ({:.2} s)", st.dropped_total as f64 / sr as f64),
            _ => String::new(),
        }
    );
    if st.dropped_total > 0 {
        spans.push(Span::styled(dropped, st.fg(Color::Red).bold()));
    } else {
        spans.push(Span::raw(dropped));
    }
    spans.push(sep());
    match &st.health {
        Some(h) => {
            let load_c = if h.load > 1.0 {
                Color::Red
            } else if h.load > 0.8 {
                Color::Yellow
            } else {
                Color::Green
            };
            spans.push(Span::raw("load "));
            spans.push(Span::styled(
                format!("{:.0}%", h.load * 100.0),
                st.fg(load_c),
            ));
            spans.push(Span::raw(" of real time"));
        }
        None => spans.push(Span::raw("load -")),
    }
    spans.push(sep());
    let n = st.speakers.len();
    spans.push(Span::raw(format!(
        "{n} speaker{}",
        if n == 1 { "" } else { "s" }
    )));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, st: &DashboardState) {
    let key = |k: &str| Span::styled(k.to_string(), Style::new().bold().reversed());
    let line = match &st.mode {
        Mode::RenamePick { default, remember } => {
            let n = st.speakers.len().min(9);
            let mut v = vec![
                Span::styled(
                    if *remember {
                        " Remember voice: "
                    } else {
                        " Rename: "
                    },
                    Style::new().bold(),
                ),
                Span::raw(format!("speaker 1-{n}")),
            ];
            if let Some(d) = default {
                v.push(Span::raw(format!(
                    ", Enter or type a name for {}",
                    st.speakers[*d].label
                )));
            }
            v.push(Span::raw(" · Esc cancels"));
            Line::from(v)
        }
        Mode::RenameType {
            speaker,
            name,
            remember,
        } => Line::from(vec![
            Span::styled(
                format!(" Rename {} → ", st.speakers[*speaker].label),
                Style::new().bold(),
            ),
            Span::styled(format!("{name}▏"), Style::new().bold().underlined()),
            Span::raw(if *remember {
                "  [x] remember voice (Tab)"
            } else {
                "  [ ] remember voice (Tab)"
            }),
            // A notice (why Enter did nothing) takes the place of the hint.
            Span::raw(if st.notice.is_some() {
                ""
            } else {
                " · Enter saves · Esc cancels"
            }),
        ]),
        Mode::Normal if st.stream_over() => Line::from(vec![
            Span::styled(" stream ended — press ", Style::new().bold()),
            key(" q "),
        ]),
        Mode::Normal => Line::from(vec![
            Span::raw(" "),
            key(" q "),
            Span::raw(" quit  "),
            key(" space "),
            Span::raw(if st.is_paused() {
                " resume  "
            } else {
                " pause  "
            }),
            key(" r "),
            Span::raw(" rename  "),
            key(" m "),
            Span::raw(" remember voice  "),
            key(" ? "),
            Span::raw(" keys"),
        ]),
    };
    let mut line = line;
    match (&st.mode, &st.notice) {
        // A notice on its own (e.g. the answer to "remember this voice", which names a file) gets
        // the whole line; the next key press clears it.
        (Mode::Normal, Some(n)) if !st.stream_over() => {
            line = Line::from(Span::styled(format!(" {n}"), st.fg(Color::Yellow)));
        }
        (_, Some(n)) => line
            .spans
            .push(Span::styled(format!("  ({n})"), st.fg(Color::Yellow))),
        (_, None) => {}
    }
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_help(frame: &mut Frame, area: Rect, _st: &DashboardState) {
    let lines = vec![
        Line::from(" q  Esc  Ctrl-C   quit (stop the stream)"),
        Line::from(" space            pause / resume scrolling"),
        Line::from(" ←  →             pan the track while paused"),
        Line::from(" r                rename a speaker:"),
        Line::from("   1-9 / Enter    pick one (default: speaking)"),
        Line::from("   name, Enter    save (Esc cancels)"),
        Line::from("   Tab            also remember the voice"),
        Line::from(" m                remember a speaker's voice:"),
        Line::from("                  save it as a voice profile"),
        Line::from("                  that names them next time"),
        Line::from(" ?                show / hide this help"),
        Line::from(""),
        Line::from(format!(
            " track: {FINAL_GLYPH} final  {TENTATIVE_GLYPH} tentative"
        )),
    ];
    let w = 48.min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Keys ")
                .title_bottom(Line::from(" ? or Esc closes ").alignment(Alignment::Right)),
        ),
        r,
    );
}

// ---------------------------------------------------------------------------------------------
// The terminal.

fn term_err(source: io::Error) -> Error {
    Error::Output {
        what: "the dashboard terminal".into(),
        source,
    }
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Leave raw mode and the alternate screen, show the cursor. Runs once (`active` guards it).
fn restore_terminal(active: &AtomicBool, tty_path: Option<&PathBuf>) {
    if !active.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = crossterm::terminal::disable_raw_mode();
    fn leave<W: Write>(w: &mut W) {
        let _ = crossterm::execute!(
            w,
            crossterm::terminal::LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = w.flush();
    }
    match tty_path {
        Some(p) => {
            if let Ok(mut f) = OpenOptions::new().write(true).open(p) {
                leave(&mut f);
            }
        }
        None => leave(&mut io::stdout()),
    }
}

/// Owns the terminal mode: entering sets it up and installs the panic hook; dropping restores
/// the terminal (every exit path: return, `?`, unwinding panic) and the previous hook.
struct TerminalGuard {
    active: Arc<AtomicBool>,
    tty_path: Option<PathBuf>,
    prev_hook: Option<Arc<PanicHook>>,
}

impl TerminalGuard {
    fn enter<W: Write>(out: &mut W, tty_path: Option<PathBuf>) -> Result<Self> {
        let active = Arc::new(AtomicBool::new(true));
        let prev: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        {
            let prev = Arc::clone(&prev);
            let active = Arc::clone(&active);
            let tty = tty_path.clone();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal(&active, tty.as_ref());
                prev(info);
            }));
        }
        let mut guard = TerminalGuard {
            active,
            tty_path,
            prev_hook: Some(prev),
        };
        crossterm::terminal::enable_raw_mode().map_err(term_err)?;
        crossterm::execute!(
            out,
            crossterm::terminal::EnterAlternateScreen,
            crossterm::terminal::Clear(crossterm::terminal::ClearType::All),
            crossterm::cursor::Hide
        )
        .map_err(|e| {
            guard.restore();
            term_err(e)
        })?;
        Ok(guard)
    }

    fn still_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    fn restore(&mut self) {
        restore_terminal(&self.active, self.tty_path.as_ref());
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        self.restore();
        // set_hook panics on a panicking thread: leave ours (it is harmless once restored).
        if !std::thread::panicking() {
            if let Some(prev) = self.prev_hook.take() {
                let _ = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| prev(info)));
            }
        }
    }
}

/// Runs the dashboard on the terminal until the user quits (q / Esc / Ctrl-C: sends
/// `Control::Stop`, returns `QuitReason::User`) or the stream is over (event channel closed,
/// normally after `Event::End`): then shows "stream ended — press q" and waits for q, or returns
/// at once if `opts.exit_on_end` (`QuitReason::StreamEnded`). Renames are sent as
/// `Control::Rename` and applied on screen at once.
///
/// Draws on stdout, or on `opts.tty_path` (opened read/write) when set. Raw mode + alternate
/// screen; the terminal is restored on every exit path, also on error and on panic (a panic
/// hook restores it, then calls the previous hook). Never blocks the sender of `events`: the
/// channel is drained with `try_recv` between frames (~12 fps).
pub fn run(
    events: Receiver<Event>,
    controls: Sender<Control>,
    opts: TuiOptions,
) -> Result<QuitReason> {
    let mut out: Box<dyn Write + Send> = match &opts.tty_path {
        Some(p) => Box::new(OpenOptions::new().read(true).write(true).open(p).map_err(
            |source| Error::Io {
                path: p.clone(),
                source,
            },
        )?),
        None => Box::new(io::stdout()),
    };
    let is_tty = match &opts.tty_path {
        Some(p) => OpenOptions::new()
            .write(true)
            .open(p)
            .is_ok_and(|f| f.is_terminal()),
        None => io::stdout().is_terminal(),
    };
    if !is_tty {
        return Err(Error::Config(format!(
            "the dashboard needs a terminal, and {} is not one (use --no-tui)",
            opts.tty_path
                .as_ref()
                .map_or("stdout".to_string(), |p| p.display().to_string())
        )));
    }
    let guard = TerminalGuard::enter(&mut out, opts.tty_path.clone())?;
    let mut terminal = Terminal::new(CrosstermBackend::new(out)).map_err(term_err)?;
    let mut state = DashboardState::new(&opts.input_name, opts.color);
    let result = event_loop(
        &mut terminal,
        &guard,
        &events,
        &controls,
        &mut state,
        &opts.exit_on_end,
    );
    drop(terminal);
    drop(guard);
    result
}

fn event_loop<W: Write>(
    terminal: &mut Terminal<CrosstermBackend<W>>,
    guard: &TerminalGuard,
    events: &Receiver<Event>,
    controls: &Sender<Control>,
    state: &mut DashboardState,
    exit_on_end: &AtomicBool,
) -> Result<QuitReason> {
    use crossterm::event::{self as cev, Event as TermEvent};
    let send = |c: Control| {
        // Never block the UI on a full control channel for long; a closed one is fine (the
        // pipeline is gone).
        let _ = controls.send_timeout(c, Duration::from_millis(200));
    };
    loop {
        if !guard.still_active() {
            // Another thread panicked and the hook restored the terminal: stop drawing.
            return Err(term_err(io::Error::other(
                "a thread panicked; dashboard closed",
            )));
        }
        // Drain what the pipeline sent since the last frame, without waiting.
        for _ in 0..100_000 {
            match events.try_recv() {
                Ok(ev) => state.apply(&ev),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    state.mark_closed();
                    break;
                }
            }
        }
        if state.stream_over() && exit_on_end.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(QuitReason::StreamEnded);
        }
        terminal.draw(|f| draw(f, state)).map_err(term_err)?;

        let deadline = Instant::now() + FRAME;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !cev::poll(left).map_err(term_err)? {
                break;
            }
            match cev::read().map_err(term_err)? {
                TermEvent::Key(key) => match state.handle_key(key) {
                    Action::None => {}
                    Action::Send(c) => send(c),
                    Action::Quit => {
                        if state.stream_over() {
                            return Ok(QuitReason::StreamEnded);
                        }
                        send(Control::Stop);
                        return Ok(QuitReason::User);
                    }
                },
                TermEvent::Resize(..) => {}
                _ => continue,
            }
            // Redraw promptly after a key or a resize.
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Turn;
    use crossterm::event::KeyEvent;

    fn turn(id: u64, spk: &str, start: f64, end: f64, status: Status) -> Event {
        Event::Turn {
            time: end + 0.5,
            turn: Turn {
                id,
                speaker: spk.into(),
                start,
                end,
                status,
                confidence: 0.9,
            },
            arrived: None,
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn turn_replacement_relabel_and_rename() {
        let mut s = DashboardState::new("x", true);
        s.apply(&turn(1, "S1", 0.0, 2.0, Status::Tentative));
        s.apply(&turn(1, "S1", 0.0, 4.0, Status::Final));
        s.apply(&turn(2, "S1", 5.0, 6.0, Status::Tentative));
        s.apply(&Event::Relabel {
            time: 7.0,
            id: 2,
            from: "S1".into(),
            to: "S2".into(),
            start: 5.0,
            end: 6.5,
        });
        let st = s.stats();
        assert_eq!(st.len(), 2);
        assert_eq!((st[0].turns, st[0].talk), (1, 4.0));
        assert_eq!((st[1].turns, st[1].talk), (1, 1.5));
        s.apply(&Event::Rename {
            time: 8.0,
            from: "S2".into(),
            to: "Bob".into(),
        });
        // A late turn still carrying the old label goes to the same speaker.
        s.apply(&turn(3, "S2", 7.0, 8.0, Status::Tentative));
        assert_eq!(s.speaker_labels(), vec!["S1", "Bob"]);
        assert_eq!(s.stats()[1].turns, 2);
    }

    #[test]
    fn rename_by_default_speaker_and_cancel() {
        let mut s = DashboardState::new("x", true);
        s.apply(&turn(1, "S1", 0.0, 2.0, Status::Final));
        s.apply(&turn(2, "S2", 2.0, 9.0, Status::Tentative));
        assert_eq!(s.handle_key(key(KeyCode::Char('r'))), Action::None);
        for c in "Bo b".chars() {
            s.handle_key(key(KeyCode::Char(c)));
        }
        assert_eq!(
            s.handle_key(key(KeyCode::Enter)),
            Action::Send(Control::Rename {
                speaker: "S2".into(),
                name: "Bo_b".into()
            })
        );
        assert_eq!(s.speaker_labels(), vec!["S1", "Bo_b"]);
        // Pipeline echoes the rename: no duplicate speaker.
        s.apply(&Event::Rename {
            time: 9.5,
            from: "S2".into(),
            to: "Bo_b".into(),
        });
        assert_eq!(s.speaker_labels().len(), 2);
        // Esc cancels, and does not quit while renaming.
        s.handle_key(key(KeyCode::Char('r')));
        s.handle_key(key(KeyCode::Char('1')));
        s.handle_key(key(KeyCode::Char('Z')));
        assert_eq!(s.handle_key(key(KeyCode::Esc)), Action::None);
        assert!(!s.renaming());
        assert_eq!(s.speaker_labels(), vec!["S1", "Bo_b"]);
        // Name already used is refused.
        s.handle_key(key(KeyCode::Char('r')));
        s.handle_key(key(KeyCode::Char('1')));
        for c in "Bo_b".chars() {
            s.handle_key(key(KeyCode::Char(c)));
        }
        assert_eq!(s.handle_key(key(KeyCode::Enter)), Action::None);
        assert!(s.renaming());
    }

    #[test]
    fn pause_freezes_window_and_ctrl_c_quits() {
        let mut s = DashboardState::new("x", true);
        s.apply(&turn(1, "S1", 0.0, 70.0, Status::Final));
        s.handle_key(key(KeyCode::Char(' ')));
        assert!(s.is_paused());
        let w = s.window_start();
        s.apply(&turn(2, "S1", 70.0, 90.0, Status::Final));
        assert_eq!(s.window_start(), w);
        s.handle_key(key(KeyCode::Char(' ')));
        assert!(s.window_start() > w);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(s.handle_key(ctrl_c).control(), Some(Control::Stop));
    }
}
