//! The dashboard end to end, under tmux: the file-backed microphone plays a real conversation,
//! `tmux capture-pane` reads the screen while it runs, `r` renames a speaker, `q` quits with status 0
//! and a restored terminal.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "dash"])
    }
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", "dash", k]);
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    /// Waits until the screen satisfies `pred` (or the timeout passes); returns the last screen.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) || t0.elapsed() > timeout {
                return s;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Tmux {
    /// Waits for the command to write `want` into `exit_file` (its `echo EXIT=$?`), then checks that
    /// the terminal is back in cooked mode (its `stty -a`) and the dashboard is gone.
    fn expect_exit(&self, exit_file: &std::path::Path, timeout: Duration, want: &str) {
        let t0 = Instant::now();
        while !exit_file.exists() && t0.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(300));
        let exit = std::fs::read_to_string(exit_file)
            .unwrap_or_else(|_| panic!("whospoke did not exit:\n{}", self.screen()));
        assert_eq!(exit.trim(), want);
        let stty = std::fs::read_to_string(format!("{}.stty", exit_file.display())).unwrap();
        assert!(
            stty.contains(" icanon") && stty.contains(" echo"),
            "terminal not restored: {stty}"
        );
        let screen = self.screen();
        assert!(
            !screen.contains("Speaker track"),
            "dashboard left on screen:\n{screen}"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn dashboard_shows_speakers_renames_and_quits_cleanly() {
    let tmp = std::env::temp_dir().join(format!("whospoke-tui-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let clip = tmp.join("conversation.wav");
    cut(&repo().join("assets/demo/demo.flac"), 40.0, &clip);
    let mic = TestMic::start(&clip);
    let exit_file = tmp.join("exit");
    let rttm = tmp.join("out.rttm");
    let tmux = Tmux {
        socket: format!("whospoke-e2e-{}", std::process::id()),
    };
    let mut args: Vec<String> = vec![
        "new-session".into(),
        "-d".into(),
        "-s".into(),
        "dash".into(),
        "-x".into(),
        "100".into(),
        "-y".into(),
        "30".into(),
    ];
    for (k, v) in &mic.env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push("-e".into());
    args.push(format!("XDG_STATE_HOME={}", tmp.display()));
    args.push(format!(
        "{} --device testmic --rttm {}; echo EXIT=$? > {}; stty -a > {}.stty; sleep 60",
        env!("CARGO_BIN_EXE_whospoke"),
        rttm.display(),
        exit_file.display(),
        exit_file.display()
    ));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tmux.run(&refs);

    // While it runs: the dashboard shows at least two speakers with their lanes on the timeline.
    let screen = tmux.wait_for(Duration::from_secs(30), |s| {
        s.contains("S2") && s.contains("Speaker track") && s.contains("█")
    });
    eprintln!("{screen}");
    assert!(screen.contains("Now speaking"), "{screen}");
    assert!(screen.contains("Speaker track"), "{screen}");
    let lane_s1 = screen
        .lines()
        .find(|l| l.contains("│S1 "))
        .unwrap_or_else(|| panic!("no S1 lane:\n{screen}"));
    assert!(
        lane_s1.contains('█') || lane_s1.contains('░'),
        "S1 lane empty:\n{screen}"
    );
    assert!(
        screen.lines().any(|l| l.contains("│S2 ")),
        "no S2 lane:\n{screen}"
    );
    assert!(screen.contains("dropped 0"), "health line:\n{screen}");

    // Rename S1 to Alice: the new name shows on screen.
    tmux.keys(&["r", "1"]);
    tmux.run(&["send-keys", "-t", "dash", "-l", "Alice"]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for(Duration::from_secs(5), |s| s.contains("│Alice"));
    eprintln!("{screen}");
    assert!(screen.contains("│Alice"), "renamed lane:\n{screen}");
    assert!(
        !screen.lines().any(|l| l.contains("│S1 ")),
        "old name still shown:\n{screen}"
    );

    // q quits: exit status 0, terminal restored (cooked mode, dashboard gone).
    tmux.keys(&["q"]);
    tmux.expect_exit(&exit_file, Duration::from_secs(15), "EXIT=0");
    // The RTTM written on quit uses the new name.
    let r = std::fs::read_to_string(&rttm).unwrap();
    assert!(r.contains(" Alice "), "{r}");
    drop(mic);
    std::fs::remove_dir_all(&tmp).ok();
}

/// A panic in a pipeline thread while the dashboard is up: the dashboard closes by itself, the
/// terminal is restored, the error is printed, the exit status is 1 and the RTTM holds the turns
/// made final before the panic.
#[test]
fn dashboard_restores_the_terminal_when_a_worker_panics() {
    let tmp = TempDir::new("tui-panic");
    let exit_file = tmp.path("exit");
    let err_file = tmp.path("stderr");
    let rttm = tmp.path("out.rttm");
    let tmux = Tmux {
        socket: format!("whospoke-e2e-panic-{}", std::process::id()),
    };
    let cmd = format!(
        "{} {} --realtime --tui --rttm {} 2> {}; echo EXIT=$? > {}; stty -a > {}.stty; sleep 60",
        env!("CARGO_BIN_EXE_whospoke"),
        repo().join("assets/demo/demo.flac").display(),
        rttm.display(),
        err_file.display(),
        exit_file.display(),
        exit_file.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "dash",
        "-x",
        "100",
        "-y",
        "30",
        "-e",
        "WHOSPOKE_FAULT=panic:turns@12",
        "-e",
        &format!("XDG_STATE_HOME={}", tmp.0.display()),
        &cmd,
    ]);
    let screen = tmux.wait_for(Duration::from_secs(20), |s| s.contains("Speaker track"));
    assert!(screen.contains("Speaker track"), "no dashboard:\n{screen}");
    tmux.expect_exit(&exit_file, Duration::from_secs(30), "EXIT=1");
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(
        err.contains("whospoke: error: internal error: the turns thread panicked"),
        "{err}"
    );
    // Turns made final before the panic (12 s of stream) are in the RTTM, whole lines.
    let r = std::fs::read_to_string(&rttm).unwrap();
    let lines: Vec<&str> = r.lines().collect();
    assert!(!lines.is_empty(), "empty RTTM");
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() == 10 && f[0] == "SPEAKER", "bad RTTM line {l:?}");
        let end: f64 = f[3].parse::<f64>().unwrap() + f[4].parse::<f64>().unwrap();
        assert!(end <= 12.5, "turn after the panic: {l}");
    }
}

/// A file run with its labels redirected to a file shows a progress line on the terminal (stderr), which
/// moves forward and is erased at the end; the labels file gets only RTTM.
#[test]
fn a_file_run_to_a_redirected_stdout_shows_progress_then_erases_it() {
    let tmp = TempDir::new("progress");
    let exit_file = tmp.path("exit");
    let out = tmp.path("out.rttm");
    let tmux = Tmux {
        socket: format!("whospoke-e2e-progress-{}", std::process::id()),
    };
    let wav = repo().join("../shared/eval/dev/dev_05.wav");
    let cmd = format!(
        "{} {} --format rttm --no-profiles > {}; echo EXIT=$? > {}; sleep 60",
        env!("CARGO_BIN_EXE_whospoke"),
        wav.display(),
        out.display(),
        exit_file.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "dash",
        "-x",
        "120",
        "-y",
        "10",
        &cmd,
    ]);
    let seen = tmux.wait_for(Duration::from_secs(60), |s| s.contains(" left, "));
    let line = seen
        .lines()
        .find(|l| l.starts_with("whospoke: "))
        .unwrap_or_else(|| panic!("no progress line:\n{seen}"));
    assert!(line.contains(" / 3:38 of dev_05.wav ("), "{line}");
    assert!(
        line.contains("x real time") && line.contains(" left, "),
        "{line}"
    );
    let t0 = Instant::now();
    while !exit_file.exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&exit_file).unwrap().trim(),
        "EXIT=0"
    );
    let screen = tmux.screen();
    assert!(
        screen.trim().is_empty(),
        "progress line left on the terminal:\n{screen}"
    );
    let rttm = std::fs::read_to_string(&out).unwrap();
    assert!(rttm.lines().count() > 50, "{rttm}");
    assert!(
        rttm.lines().all(|l| l.starts_with("SPEAKER dev_05 1 ")),
        "{rttm}"
    );
}
