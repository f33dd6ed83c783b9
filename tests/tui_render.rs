//! Dashboard rendering tests on ratatui's `TestBackend`: a known event sequence, then the buffer
//! is checked cell by cell (symbols and colours), at 80x24 and at a larger size, with and
//! without colours; and key handling produces the right `Control`s.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;
use whospoke::events::{Control, Event, Health, Status, Turn};
use whospoke::tui::{
    draw, Action, DashboardState, LANE_LABEL_WIDTH, NO_COLOR_GLYPHS, TENTATIVE_GLYPH, WINDOW_SECS,
};

fn turn(time: f64, id: u64, spk: &str, start: f64, end: f64, status: Status) -> Event {
    Event::Turn {
        time,
        turn: Turn {
            id,
            speaker: spk.into(),
            start,
            end,
            status,
            confidence: 0.8,
        },
        arrived: None,
    }
}

/// Three speakers; tentative turns later made final; a relabel (S1 -> S3, overlapping S2);
/// a rename S2 -> Alice; status with level, speech and dropped audio.
///
/// Final state: S1 1..12 final; Alice 12..22 final + 24..30 tentative; S3 18..22 tentative.
fn scenario() -> Vec<Event> {
    vec![
        Event::Start {
            time: 0.0,
            input: "meeting.wav".into(),
            sample_rate: 16_000,
            channels: 1,
        },
        Event::Speaker {
            time: 1.5,
            speaker: "S1".into(),
        },
        turn(5.0, 1, "S1", 1.0, 4.5, Status::Tentative),
        turn(10.0, 1, "S1", 1.0, 9.5, Status::Tentative),
        turn(12.5, 1, "S1", 1.0, 12.0, Status::Final),
        Event::Speaker {
            time: 13.0,
            speaker: "S2".into(),
        },
        turn(16.0, 2, "S2", 12.0, 15.5, Status::Tentative),
        turn(19.0, 3, "S1", 18.0, 19.0, Status::Tentative),
        turn(22.5, 2, "S2", 12.0, 22.0, Status::Final),
        turn(22.5, 3, "S1", 18.0, 22.0, Status::Tentative),
        Event::Speaker {
            time: 23.0,
            speaker: "S3".into(),
        },
        Event::Relabel {
            time: 23.0,
            id: 3,
            from: "S1".into(),
            to: "S3".into(),
            start: 18.0,
            end: 22.0,
        },
        Event::Dropped {
            time: 25.0,
            samples: 1600,
            total: 1600,
            reason: "ring overflow".into(),
        },
        turn(27.0, 4, "S2", 24.0, 26.5, Status::Tentative),
        Event::Rename {
            time: 28.0,
            from: "S2".into(),
            to: "Alice".into(),
        },
        turn(30.5, 4, "Alice", 24.0, 30.0, Status::Tentative),
        Event::Status {
            time: 30.5,
            health: Health {
                level_db: -18.0,
                gain_db: 0.0,
                speech: true,
                dropped_samples: 1600,
                label_lag: 0.5,
                load: 0.35,
            },
        },
    ]
}

fn state(color: bool) -> DashboardState {
    let mut s = DashboardState::new("mic", color);
    for ev in scenario() {
        s.apply(&ev);
    }
    s
}

fn render(s: &DashboardState, w: u16, h: u16) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| draw(f, s)).unwrap();
    term.backend().buffer().clone()
}

fn row_text(buf: &Buffer, y: u16) -> String {
    (0..buf.area.width)
        .map(|x| buf.cell((x, y)).unwrap().symbol())
        .collect()
}

fn screen(buf: &Buffer) -> String {
    (0..buf.area.height)
        .map(|y| row_text(buf, y))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Row of the lane of `label` in the speaker track: the label starts right after the left border.
fn lane_row(buf: &Buffer, label: &str) -> u16 {
    let hits: Vec<u16> = (0..buf.area.height)
        .filter(|&y| {
            let t = row_text(buf, y);
            let rest: String = t.chars().skip(1).collect();
            t.starts_with('│')
                && rest.starts_with(label)
                && rest.chars().nth(label.chars().count()) == Some(' ')
        })
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "lane of {label}: rows {hits:?}\n{}",
        screen(buf)
    );
    hits[0]
}

/// Screen column of stream time `t` in the track (window starts at 0 here: now < 60 s).
fn col(buf: &Buffer, t: f64) -> u16 {
    let inner_w = buf.area.width - 2;
    let lane_w = inner_w - LANE_LABEL_WIDTH;
    1 + LANE_LABEL_WIDTH + (t / (WINDOW_SECS / lane_w as f64)).floor() as u16
}

fn cell(buf: &Buffer, x: u16, y: u16) -> (String, Color) {
    let c = buf.cell((x, y)).unwrap();
    (c.symbol().to_string(), c.fg)
}

fn find_row(buf: &Buffer, needle: &str) -> u16 {
    (0..buf.area.height)
        .find(|&y| row_text(buf, y).contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on screen:\n{}", screen(buf)))
}

fn check_colour_screen(w: u16, h: u16) {
    let s = state(true);
    let buf = render(&s, w, h);
    let text = screen(&buf);
    println!("{w}x{h}:\n{text}");

    // Lanes: labels (renamed name, not S2), glyphs and colours at known times.
    let (s1, alice, s3) = (
        lane_row(&buf, "S1"),
        lane_row(&buf, "Alice"),
        lane_row(&buf, "S3"),
    );
    assert!(s1 < alice && alice < s3, "lanes in order of appearance");
    assert_eq!(buf.cell((1, s1)).unwrap().fg, Color::Cyan);
    assert_eq!(buf.cell((1, alice)).unwrap().fg, Color::Yellow);
    assert_eq!(buf.cell((1, s3)).unwrap().fg, Color::Magenta);

    let full = "█".to_string();
    let light = TENTATIVE_GLYPH.to_string();
    // S1 final 1..12.
    for t in [2.0, 6.0, 11.0] {
        assert_eq!(
            cell(&buf, col(&buf, t), s1),
            (full.clone(), Color::Cyan),
            "S1 at {t}"
        );
    }
    // S1 silent at 15 s and 40 s (the relabelled turn moved away from S1).
    for t in [15.0, 20.0, 40.0] {
        assert_ne!(cell(&buf, col(&buf, t), s1).0, full, "S1 at {t}");
        assert_ne!(cell(&buf, col(&buf, t), s1).0, light, "S1 at {t}");
    }
    // Alice: final 12..22, tentative 24..30.
    for t in [13.0, 20.0] {
        assert_eq!(
            cell(&buf, col(&buf, t), alice),
            (full.clone(), Color::Yellow)
        );
    }
    for t in [25.0, 29.0] {
        assert_eq!(
            cell(&buf, col(&buf, t), alice),
            (light.clone(), Color::Yellow)
        );
    }
    assert_eq!(cell(&buf, col(&buf, 23.0), alice).0, " ");
    // S3 (relabelled, tentative) overlapping Alice at 20 s: two lanes lit at once.
    assert_eq!(
        cell(&buf, col(&buf, 20.0), s3),
        (light.clone(), Color::Magenta)
    );
    assert_eq!(cell(&buf, col(&buf, 20.0), alice).0, full);
    assert_ne!(cell(&buf, col(&buf, 10.0), s3).0, light);
    // Nothing after now (30.5 s).
    for lane in [s1, alice, s3] {
        for t in [35.0, 50.0, 59.0] {
            let (sym, _) = cell(&buf, col(&buf, t), lane);
            assert!(sym != full && sym != light, "lane {lane} lit at {t}");
        }
    }
    // Time axis.
    assert!(text.contains("|0:10") && text.contains("|0:30"), "axis");

    // Table: Alice 12+... = 10 + 6 = 16 s, S1 11 s, S3 4 s of 31 s.
    let row_s1 = (0..h)
        .map(|y| row_text(&buf, y))
        .find(|r| r.starts_with("│1 ") && r.contains("S1"))
        .expect("table row 1");
    assert!(
        row_s1.contains("0:11") && row_s1.contains("35%") && row_s1.contains(" 1 "),
        "{row_s1}"
    );
    let row_alice = (0..h)
        .map(|y| row_text(&buf, y))
        .find(|r| r.starts_with("│2 ") && r.contains("Alice"))
        .expect("table row 2");
    assert!(
        row_alice.contains("0:16") && row_alice.contains("52%") && row_alice.contains(" 2 "),
        "{row_alice}"
    );
    assert!(
        row_alice.contains('◀'),
        "Alice marked as speaking: {row_alice}"
    );
    let row_s3 = (0..h)
        .map(|y| row_text(&buf, y))
        .find(|r| r.starts_with("│3 ") && r.contains("S3"))
        .expect("table row 3");
    assert!(
        row_s3.contains("0:04") && row_s3.contains("13%") && row_s3.contains(" 1 "),
        "{row_s3}"
    );
    // Swatches in the table in the speaker colours.
    let y2 = find_row(&buf, "│2 ");
    assert_eq!(cell(&buf, 4, y2), (full.clone(), Color::Yellow));

    // Now speaking: Alice, in a box filled with her colour.
    let now_top = find_row(&buf, "Now speaking");
    let now_bottom = (now_top + 1..h)
        .find(|&y| buf.cell((0, y)).unwrap().symbol() == "└")
        .unwrap();
    let name_y = (now_top + 1..now_bottom)
        .find(|&y| row_text(&buf, y).contains("Alice"))
        .expect("current speaker shown");
    let name_x = (0..w)
        .find(|&x| buf.cell((x, name_y)).unwrap().symbol() == "A")
        .unwrap();
    let c = buf.cell((name_x, name_y)).unwrap();
    assert_eq!((c.fg, c.bg), (Color::Black, Color::Yellow));
    assert!(name_x < w / 2, "the now box is on the left");
    if h >= 30 {
        // Tall screen: the name also in block letters, black on her colour.
        let big = (now_top + 1..name_y)
            .flat_map(|y| (1..w / 2).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let c = buf.cell((x, y)).unwrap();
                c.symbol() == "█" && c.fg == Color::Black && c.bg == Color::Yellow
            })
            .count();
        assert!(big > 20, "big text: {big} cells");
    }

    // Renamed everywhere: no S2 left on screen.
    assert!(!text.contains("S2"), "old name still shown:\n{text}");

    // Header / input / health.
    assert!(row_text(&buf, 0).contains("meeting.wav"));
    assert!(row_text(&buf, 0).contains("00:00:30"));
    assert!(text.contains("-18 dB"));
    assert!(text.contains("● SPEECH"));
    assert!(!text.contains("gain"), "no gain, nothing said");
    let health = row_text(&buf, h - 2);
    assert!(health.contains("dropped 1600 smp (0.10 s)"), "{health}");
    assert!(health.contains("lag 0.5 s"), "{health}");
    assert!(health.contains("load 35%"), "{health}");
    let dx = health.chars().position(|c| c == 'd').unwrap() as u16;
    assert_eq!(buf.cell((dx, h - 2)).unwrap().fg, Color::Red);
    assert!(row_text(&buf, h - 1).contains("quit"));
}

#[test]
fn colour_render_80x24() {
    check_colour_screen(80, 24);
}

#[test]
fn colour_render_large() {
    check_colour_screen(140, 40);
}

#[test]
fn no_color_has_no_colours_and_distinct_glyphs() {
    let s = state(false);
    for (w, h) in [(80, 24), (120, 36)] {
        let buf = render(&s, w, h);
        println!("{}", screen(&buf));
        for c in buf.content() {
            assert_eq!(c.fg, Color::Reset, "fg colour in NO_COLOR mode");
            assert_eq!(c.bg, Color::Reset, "bg colour in NO_COLOR mode");
        }
        let (s1, alice, s3) = (
            lane_row(&buf, "S1"),
            lane_row(&buf, "Alice"),
            lane_row(&buf, "S3"),
        );
        // Final stretches: one glyph per speaker; tentative: light shade.
        assert_eq!(cell(&buf, col(&buf, 6.0), s1).0, NO_COLOR_GLYPHS[0]);
        assert_eq!(cell(&buf, col(&buf, 15.0), alice).0, NO_COLOR_GLYPHS[1]);
        assert_eq!(cell(&buf, col(&buf, 27.0), alice).0, TENTATIVE_GLYPH);
        assert_eq!(cell(&buf, col(&buf, 20.0), s3).0, TENTATIVE_GLYPH);
        assert_ne!(NO_COLOR_GLYPHS[0], NO_COLOR_GLYPHS[1]);
        // The now box uses reverse video instead of a colour.
        let text = screen(&buf);
        assert!(text.contains("Alice"));
        assert!(!text.contains("S2"));
    }
}

#[test]
fn scrolls_after_a_minute_and_pause_freezes() {
    let mut s = DashboardState::new("mic", true);
    s.apply(&turn(5.0, 1, "S1", 0.0, 4.0, Status::Final));
    s.apply(&turn(100.0, 2, "S2", 90.0, 99.0, Status::Tentative));
    let buf = render(&s, 80, 24);
    // Window is [40, 100): the first turn scrolled out, the second is near the right edge.
    let s1 = lane_row(&buf, "S1");
    let s2 = lane_row(&buf, "S2");
    let lane_w = 80 - 2 - LANE_LABEL_WIDTH;
    let c = |t: f64| 1 + LANE_LABEL_WIDTH + ((t - 40.0) / (WINDOW_SECS / lane_w as f64)) as u16;
    assert_eq!(
        cell(&buf, c(95.0), s2),
        (TENTATIVE_GLYPH.into(), Color::Yellow)
    );
    for x in 1 + LANE_LABEL_WIDTH..79 {
        assert_ne!(buf.cell((x, s1)).unwrap().symbol(), "█");
    }
    assert!(screen(&buf).contains("|1:30"));

    // Pause: the view stays while events keep coming.
    s.handle_key(KeyEvent::new(KeyCode::Char(' '), KeyModifiers::NONE));
    s.apply(&turn(130.0, 2, "S2", 90.0, 129.0, Status::Final));
    let paused = render(&s, 80, 24);
    assert!(screen(&paused).contains("PAUSED"));
    assert!(screen(&paused).contains("|1:30"));
    assert!(!screen(&paused).contains("|2:00"));
    // State kept applying: the turn is final now.
    assert_eq!(cell(&paused, c(95.0), s2).0, "█");
    s.handle_key(KeyEvent::new(KeyCode::Char(' '), KeyModifiers::NONE));
    let live = render(&s, 80, 24);
    assert!(!screen(&live).contains("PAUSED"));
    assert!(screen(&live).contains("|2:00"));
}

fn press(s: &mut DashboardState, code: KeyCode) -> Action {
    s.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

#[test]
fn keys_produce_controls() {
    let mut s = state(true);
    // r 2 Alice Enter on the original S2 (in a state where it still is S2).
    let mut s2 = DashboardState::new("mic", true);
    for ev in scenario()
        .into_iter()
        .filter(|e| !matches!(e, Event::Rename { .. }))
    {
        let ev = match ev {
            Event::Turn {
                time,
                mut turn,
                arrived,
            } => {
                if turn.speaker == "Alice" {
                    turn.speaker = "S2".into();
                }
                Event::Turn {
                    time,
                    turn,
                    arrived,
                }
            }
            e => e,
        };
        s2.apply(&ev);
    }
    assert_eq!(press(&mut s2, KeyCode::Char('r')), Action::None);
    let prompt = screen(&render(&s2, 80, 24));
    assert!(prompt.contains("Rename"), "{prompt}");
    assert_eq!(press(&mut s2, KeyCode::Char('2')), Action::None);
    for c in "Alice".chars() {
        assert_eq!(press(&mut s2, KeyCode::Char(c)), Action::None);
    }
    let typing = screen(&render(&s2, 80, 24));
    assert!(typing.contains("Rename S2 → Alice"), "{typing}");
    let a = press(&mut s2, KeyCode::Enter);
    assert_eq!(
        a,
        Action::Send(Control::Rename {
            speaker: "S2".into(),
            name: "Alice".into()
        })
    );
    // Applied locally at once: same screen as when the pipeline renamed it.
    let after = screen(&render(&s2, 80, 24));
    assert!(!after.contains("S2") && after.contains("Alice"), "{after}");

    // Help overlay toggles with ?.
    assert_eq!(press(&mut s, KeyCode::Char('?')), Action::None);
    assert!(s.help_shown());
    assert!(screen(&render(&s, 80, 24)).contains("pause / resume"));
    assert_eq!(press(&mut s, KeyCode::Char('?')), Action::None);
    assert!(!s.help_shown());

    // Quit keys.
    assert_eq!(
        press(&mut s, KeyCode::Char('q')).control(),
        Some(Control::Stop)
    );
    assert_eq!(press(&mut s, KeyCode::Esc).control(), Some(Control::Stop));
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(s.handle_key(ctrl_c), Action::Quit);
    // Space pauses without any control.
    assert_eq!(press(&mut s, KeyCode::Char(' ')).control(), None);
    assert!(s.is_paused());
}

#[test]
fn end_of_stream_prompt_and_small_sizes() {
    let mut s = state(true);
    s.apply(&Event::End {
        time: 31.0,
        speakers: vec!["S1".into(), "Alice".into(), "S3".into()],
        dropped_samples: 1600,
    });
    let buf = render(&s, 80, 24);
    let text = screen(&buf);
    assert!(text.contains("stream ended — press"), "{text}");
    // All turns final after End.
    let alice = lane_row(&buf, "Alice");
    assert_eq!(cell(&buf, col(&buf, 27.0), alice).0, "█");
    // Any size renders without panicking, down to tiny ones.
    for (w, h) in [(20, 5), (40, 12), (60, 16), (80, 20), (200, 60)] {
        render(&s, w, h);
    }
}

/// "Remember this voice": `m` (or Tab in the rename prompt) turns a rename into a
/// `Control::Remember`; the pipeline's answer (`Event::Remembered`) shows on the dashboard.
#[test]
fn remember_voice_keys_and_answer() {
    let mut s = state(true);
    // r 1 Bob, Tab: the prompt says the voice will be remembered; Enter sends Remember.
    assert_eq!(press(&mut s, KeyCode::Char('r')), Action::None);
    assert_eq!(press(&mut s, KeyCode::Char('1')), Action::None);
    for c in "Bob".chars() {
        press(&mut s, KeyCode::Char(c));
    }
    let typing = screen(&render(&s, 80, 24));
    assert!(
        typing.contains("Rename S1 → Bob▏  [ ] remember voice (Tab)"),
        "{typing}"
    );
    assert_eq!(press(&mut s, KeyCode::Tab), Action::None);
    let typing = screen(&render(&s, 80, 24));
    assert!(
        typing.contains("Rename S1 → Bob▏  [x] remember voice (Tab)"),
        "{typing}"
    );
    assert_eq!(
        press(&mut s, KeyCode::Enter),
        Action::Send(Control::Remember {
            speaker: "S1".into(),
            name: "Bob".into()
        })
    );
    // Renamed on screen at once, and told that the voice is being saved.
    let after = screen(&render(&s, 80, 24));
    assert!(
        after.contains("Bob") && after.contains("remembering the voice of Bob"),
        "{after}"
    );
    // The pipeline's answer replaces the key hints until the next key.
    s.apply(&Event::Remembered {
        time: 30.0,
        speaker: "Bob".into(),
        saved: true,
        path: "/p/Bob.json".into(),
        message: "saved the voice profile of Bob (11.0 s of speech): /p/Bob.json".into(),
    });
    let saved = screen(&render(&s, 80, 24));
    assert!(
        saved.contains("saved the voice profile of Bob (11.0 s of speech): /p/Bob.json"),
        "{saved}"
    );

    // m on a named speaker: the prompt starts with its name; Enter remembers it as it is.
    assert_eq!(press(&mut s, KeyCode::Char('m')), Action::None);
    assert!(screen(&render(&s, 80, 24)).contains("Remember voice: speaker 1-3"));
    assert_eq!(press(&mut s, KeyCode::Char('2')), Action::None);
    let typing = screen(&render(&s, 80, 24));
    assert!(
        typing.contains("Rename Alice → Alice▏  [x] remember voice"),
        "{typing}"
    );
    assert_eq!(
        press(&mut s, KeyCode::Enter),
        Action::Send(Control::Remember {
            speaker: "Alice".into(),
            name: "Alice".into()
        })
    );
    // m on an unnamed speaker: a name is needed; a name in use is refused.
    press(&mut s, KeyCode::Char('m'));
    press(&mut s, KeyCode::Char('3'));
    assert_eq!(press(&mut s, KeyCode::Enter), Action::None);
    assert!(s.renaming());
    assert!(screen(&render(&s, 80, 24)).contains("(type a name first)"));
    for c in "Alice".chars() {
        press(&mut s, KeyCode::Char(c));
    }
    assert_eq!(press(&mut s, KeyCode::Enter), Action::None);
    assert!(screen(&render(&s, 80, 24)).contains("\"Alice\" is already used"));
    // Tab turns remembering off again: a plain rename.
    for _ in 0..5 {
        press(&mut s, KeyCode::Backspace);
    }
    for c in "Eve".chars() {
        press(&mut s, KeyCode::Char(c));
    }
    press(&mut s, KeyCode::Tab);
    assert_eq!(
        press(&mut s, KeyCode::Enter),
        Action::Send(Control::Rename {
            speaker: "S3".into(),
            name: "Eve".into()
        })
    );
    // A failure is shown as clearly.
    s.apply(&Event::Remembered {
        time: 31.0,
        speaker: "Eve".into(),
        saved: false,
        path: String::new(),
        message: "cannot remember the voice of Eve: not enough speech yet".into(),
    });
    assert!(screen(&render(&s, 80, 24)).contains("cannot remember the voice of Eve"));
    // The help screen lists the key.
    press(&mut s, KeyCode::Char('?'));
    let help = screen(&render(&s, 80, 24));
    assert!(help.contains("remember a speaker's voice"), "{help}");
}

#[test]
fn quiet_input_shows_the_automatic_gain() {
    let mut s = state(true);
    s.apply(&Event::Status {
        time: 31.0,
        health: Health {
            level_db: -47.0,
            gain_db: 24.4,
            speech: true,
            dropped_samples: 1600,
            label_lag: 0.5,
            load: 0.35,
        },
    });
    let text = screen(&render(&s, 80, 24));
    assert!(text.contains("-47 dB, +24 gain"), "{text}");
}
