//! The server's clock as this host can know it: the time the API last stated (its
//! `meta.generated_at`, else its `Date` header), advanced by this host's monotonic clock since
//! then. Indicators expire by it, so a host clock hours off neither expires them early nor
//! late; only the drift of the host's oscillator between two polls counts.
//!
//! After a restart there is no monotonic reading from before, so until the API speaks again
//! the estimate is the last stated time plus the wall-clock time that passed on this host
//! since it was stated (never less than zero): a constant offset of the host clock cancels
//! out, only a jump of it during the downtime does not.

use std::time::Instant;

use chrono::{DateTime, Utc};

/// The last server time seen, and when.
#[derive(Debug, Clone, Copy)]
pub struct ServerClock {
    stated: Option<Stated>,
}

#[derive(Debug, Clone, Copy)]
struct Stated {
    server: DateTime<Utc>,
    /// This host's monotonic clock when the server stated its time.
    at: Instant,
}

/// What to keep across restarts: the server's time and this host's wall clock when it was
/// stated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub server: DateTime<Utc>,
    pub host: DateTime<Utc>,
}

impl ServerClock {
    /// A clock that has seen no server time yet.
    pub fn unknown() -> ServerClock {
        ServerClock { stated: None }
    }

    /// Takes over a time saved before a restart: it has advanced by the host's wall-clock
    /// time since (`host_now` − `saved.host`, at least zero).
    pub fn restored(saved: Saved, host_now: DateTime<Utc>, now: Instant) -> ServerClock {
        let passed = (host_now - saved.host).max(chrono::Duration::zero());
        ServerClock {
            stated: Some(Stated {
                server: saved.server + passed,
                at: now,
            }),
        }
    }

    /// The server stated `server` as its time at `at` (when its answer arrived).
    pub fn observe(&mut self, server: DateTime<Utc>, at: Instant) {
        self.stated = Some(Stated { server, at });
    }

    /// The server's time at `now`; `None` before it ever stated one.
    pub fn at(&self, now: Instant) -> Option<DateTime<Utc>> {
        let s = self.stated?;
        let passed = now.saturating_duration_since(s.at);
        let passed = chrono::Duration::from_std(passed).ok()?;
        s.server.checked_add_signed(passed)
    }

    /// What [`ServerClock::restored`] needs after a restart, given this host's wall clock now.
    pub fn saved(&self, host_now: DateTime<Utc>, now: Instant) -> Option<Saved> {
        Some(Saved {
            server: self.at(now)?,
            host: host_now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_server_time_advances_by_the_monotonic_clock_not_the_host_clock() {
        let start = Instant::now();
        let mut c = ServerClock::unknown();
        assert_eq!(c.at(start), None, "nothing stated yet");
        c.observe(t("2026-05-17T00:00:00Z"), start);
        let later = start + Duration::from_secs(90);
        assert_eq!(c.at(later), Some(t("2026-05-17T00:01:30Z")));
        // A reading taken before the statement (a clock that went back) does not go back.
        assert_eq!(c.at(start), Some(t("2026-05-17T00:00:00Z")));
    }

    #[test]
    fn after_a_restart_a_constant_host_offset_cancels_out() {
        let before = Instant::now();
        let mut c = ServerClock::unknown();
        c.observe(t("2026-05-17T00:00:00Z"), before);
        // The host clock is two hours ahead of the server, before and after the restart.
        let saved = c.saved(t("2026-05-17T02:00:00Z"), before).unwrap();
        let now = Instant::now();
        let restored = ServerClock::restored(saved, t("2026-05-17T02:10:00Z"), now);
        assert_eq!(restored.at(now), Some(t("2026-05-17T00:10:00Z")));
        // A host clock set back during the downtime does not move the server's clock back.
        let back = ServerClock::restored(saved, t("2026-05-17T01:00:00Z"), now);
        assert_eq!(back.at(now), Some(t("2026-05-17T00:00:00Z")));
    }
}
