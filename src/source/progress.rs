//! Progress of a long walk (a first run on a Pro key may page through hundreds of thousands of
//! indicators): a redrawn status line on a terminal for `once`, else an info log line every
//! [`LOG_EVERY`] while the walk lasts. Short cycles stay quiet in log mode.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

/// How often a long walk logs its progress when there is no progress bar.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the terminal line is redrawn at most.
const DRAW_EVERY: Duration = Duration::from_millis(200);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A line on stderr redrawn with `\r` (only for `once` on a terminal).
    Bar,
    /// `tracing::info!` every [`LOG_EVERY`].
    Log,
}

/// Counts one walk's pages and indicators and reports them.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    started: Instant,
    last_emit: Option<Instant>,
    pages: u64,
    fetched: u64,
    total: Option<u64>,
    drawn: bool,
    /// Write the bar to stderr (off in unit tests, whose output it would garble).
    to_stderr: bool,
}

impl Progress {
    pub fn new(mode: ProgressMode, now: Instant) -> Progress {
        Progress {
            mode,
            started: now,
            last_emit: None,
            pages: 0,
            fetched: 0,
            total: None,
            drawn: false,
            to_stderr: true,
        }
    }

    /// Records one page of `items` (the server's `meta.total` for the window when it sent one)
    /// and reports when it is time. Returns what it reported, for tests.
    pub fn page(&mut self, items: u64, total: Option<u64>, now: Instant) -> Option<String> {
        self.pages += 1;
        self.fetched += items;
        if total.is_some() {
            // The feed moves while we walk: the latest total is the best estimate.
            self.total = total;
        }
        let due = match (self.mode, self.last_emit) {
            (ProgressMode::Bar, None) => true,
            (ProgressMode::Bar, Some(t)) => now.duration_since(t) >= DRAW_EVERY,
            (ProgressMode::Log, last) => {
                now.duration_since(last.unwrap_or(self.started)) >= LOG_EVERY
            }
        };
        if !due {
            return None;
        }
        self.last_emit = Some(now);
        let line = self.render(now);
        match self.mode {
            ProgressMode::Bar => {
                if self.to_stderr {
                    let mut err = std::io::stderr().lock();
                    // `\r` + erase line: the line is redrawn in place.
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                    self.drawn = true;
                }
            }
            ProgressMode::Log => {
                let elapsed = now.duration_since(self.started).as_secs_f64();
                tracing::info!(
                    pages = self.pages,
                    fetched = self.fetched,
                    total = self.total,
                    rate_per_s = format!("{:.0}", self.rate(elapsed)),
                    eta_s = self.eta(elapsed).map(|d| d.as_secs()),
                    "poll cycle in progress: {line}"
                );
            }
        }
        Some(line)
    }

    /// Ends the walk: the bar gets its final state and a newline, so logs that follow start on
    /// a line of their own. Also called on failure (and on drop).
    pub fn finish(&mut self, now: Instant) {
        if self.mode == ProgressMode::Bar && self.drawn {
            let line = self.render(now);
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    fn rate(&self, elapsed_secs: f64) -> f64 {
        if elapsed_secs > 0.0 {
            self.fetched as f64 / elapsed_secs
        } else {
            0.0
        }
    }

    fn eta(&self, elapsed_secs: f64) -> Option<Duration> {
        let total = self.total?;
        let left = total.saturating_sub(self.fetched);
        if left == 0 {
            return Some(Duration::ZERO);
        }
        let rate = self.rate(elapsed_secs);
        (rate > 0.0).then(|| Duration::from_secs_f64((left as f64 / rate).min(1e9)))
    }

    /// `walk: 12 pages, 12000/345000 indicators (3%), 850/s, ETA 6m32s`
    pub fn render(&self, now: Instant) -> String {
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let pages = if self.pages == 1 { "page" } else { "pages" };
        let mut s = format!(
            "fetching indicators: {} {pages}, {}",
            self.pages, self.fetched
        );
        if let Some(total) = self.total {
            let pct = (self.fetched.saturating_mul(100))
                .checked_div(total)
                .unwrap_or(100)
                .min(100);
            s.push_str(&format!("/{total} ({pct}%)"));
        }
        s.push_str(&format!(" indicators, {:.0}/s", self.rate(elapsed)));
        if let Some(eta) = self.eta(elapsed) {
            s.push_str(&format!(", ETA {}", short_duration(eta)));
        }
        s
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish(Instant::now());
    }
}

/// `45s`, `6m32s`, `2h05m`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_pages_indicators_rate_and_eta_from_the_total() {
        let t0 = Instant::now();
        let mut p = Progress::new(ProgressMode::Log, t0);
        p.page(1000, Some(10_000), t0 + Duration::from_secs(1));
        p.page(1000, Some(10_000), t0 + Duration::from_secs(2));
        assert_eq!(
            p.render(t0 + Duration::from_secs(2)),
            "fetching indicators: 2 pages, 2000/10000 (20%) indicators, 1000/s, ETA 8s"
        );
        let mut p = Progress::new(ProgressMode::Log, t0);
        p.page(5, None, t0 + Duration::from_secs(1));
        assert_eq!(
            p.render(t0 + Duration::from_secs(1)),
            "fetching indicators: 1 page, 5 indicators, 5/s"
        );
        assert_eq!(short_duration(Duration::from_secs(392)), "6m32s");
        assert_eq!(short_duration(Duration::from_secs(7500)), "2h05m");
    }

    #[test]
    fn log_mode_reports_every_ten_seconds_and_not_for_short_walks() {
        let t0 = Instant::now();
        let mut p = Progress::new(ProgressMode::Log, t0);
        let mut logged = Vec::new();
        for i in 1..=25u64 {
            if p.page(100, Some(2500), t0 + Duration::from_secs(i))
                .is_some()
            {
                logged.push(i);
            }
        }
        assert_eq!(logged, vec![10, 20]);
    }

    #[test]
    fn bar_mode_draws_the_first_page_then_at_most_five_times_a_second() {
        let t0 = Instant::now();
        let mut p = Progress::new(ProgressMode::Bar, t0);
        p.to_stderr = false;
        let mut drawn = 0;
        for i in 0..20u64 {
            if p.page(1, None, t0 + Duration::from_millis(50 * i))
                .is_some()
            {
                drawn += 1;
            }
        }
        // t = 0, 200, 400, 600, 800 ms.
        assert_eq!(drawn, 5);
        p.finish(t0 + Duration::from_secs(1));
    }
}
