//! Where `up` shows what each node is doing while nodes are handled in parallel: one live line
//! per node on a terminal (indicatif), plain timestamped lines on stderr otherwise (or with
//! `NO_COLOR` / `TERM=dumb`: then no escape code is ever written). Builders report states and
//! changes through the free functions here; without a board installed they do nothing.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The line cluster-wide steps (discover, bootstrap, health, ...) report on.
pub const CLUSTER: &str = "cluster";

enum Mode {
    Live {
        multi: indicatif::MultiProgress,
        bars: BTreeMap<String, indicatif::ProgressBar>,
    },
    Plain,
}

struct Board {
    mode: Mode,
    /// Node lines in the order they were declared (profile order, the cluster line last).
    order: Vec<String>,
    /// What changed on each node in this run ("applied", "upgraded v1.11.5 -> v1.11.6").
    changes: BTreeMap<String, Vec<String>>,
    started: BTreeMap<String, Instant>,
}

static BOARD: Mutex<Option<Board>> = Mutex::new(None);

/// Whether live lines may be drawn: stderr is a terminal that understands cursor movement and
/// the operator did not ask for plain output (`NO_COLOR`).
pub fn live_terminal() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Install the board for `nodes` (then the cluster line); removed by [`finish`].
pub fn install(nodes: &[String]) {
    let live = live_terminal();
    let mut order: Vec<String> = nodes.to_vec();
    order.push(CLUSTER.to_string());
    let width = order.iter().map(String::len).max().unwrap_or(8);
    let mode = if live {
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{{prefix:<{width}}} {{spinner}} {{msg}} ({{elapsed}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let bars = order
            .iter()
            .map(|n| {
                let pb = multi.add(
                    indicatif::ProgressBar::new_spinner()
                        .with_style(style.clone())
                        .with_prefix(n.clone())
                        .with_message("waiting"),
                );
                pb.enable_steady_tick(Duration::from_millis(200));
                (n.clone(), pb)
            })
            .collect();
        Mode::Live { multi, bars }
    } else {
        Mode::Plain
    };
    *BOARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(Board {
        mode,
        order,
        changes: BTreeMap::new(),
        started: BTreeMap::new(),
    });
}

/// Whether a board is installed (builders then leave their own spinners out).
pub fn installed() -> bool {
    BOARD.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// `node` (or [`CLUSTER`]) is now doing `state`.
pub fn state(node: &str, state: &str) {
    let mut guard = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    let Some(board) = guard.as_mut() else { return };
    let since = *board
        .started
        .entry(node.to_string())
        .or_insert_with(Instant::now);
    match &board.mode {
        Mode::Live { bars, .. } => {
            if let Some(pb) = bars.get(node) {
                pb.set_message(state.to_string());
            }
        }
        Mode::Plain => {
            eprintln!(
                "{} {node:<10} {state} (+{:.1}s)",
                timestamp(),
                since.elapsed().as_secs_f64()
            );
        }
    }
}

/// Record that `what` changed on `node` in this run (for the summary table).
pub fn changed(node: &str, what: &str) {
    let mut guard = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(board) = guard.as_mut() {
        board
            .changes
            .entry(node.to_string())
            .or_default()
            .push(what.to_string());
    }
}

/// A message that must not be torn by the live lines (printed above them on a terminal).
pub fn note(message: &str) {
    let guard = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref().map(|b| &b.mode) {
        Some(Mode::Live { multi, .. }) => multi.suspend(|| eprintln!("{message}")),
        _ => eprintln!("{message}"),
    }
}

/// A line of results on stdout, printed above the live lines on a terminal (so they do not
/// tear each other).
pub fn println(line: &str) {
    let guard = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref().map(|b| &b.mode) {
        // Data on stdout; a reader that went away must not panic the run (see DataOut).
        Some(Mode::Live { multi, .. }) => multi.suspend(|| data_line(line)),
        _ => data_line(line),
    }
}

/// Remove the board (the live lines are cleared) and return what changed per node.
pub fn finish() -> BTreeMap<String, Vec<String>> {
    let board = BOARD.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(board) = board else {
        return BTreeMap::new();
    };
    if let Mode::Live { multi, bars } = &board.mode {
        for n in &board.order {
            if let Some(pb) = bars.get(n) {
                pb.finish_and_clear();
            }
        }
        let _ = multi.clear();
    }
    board.changes
}

/// UTC wall-clock time with milliseconds, for plain progress lines.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// One line of data on stdout, dropped when stdout is closed (`talix up | head -1`).
fn data_line(line: &str) {
    let _ = crate::commands::DataOut::line(line);
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        let t = super::timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).is_ok(),
            "{t}"
        );
    }
}
