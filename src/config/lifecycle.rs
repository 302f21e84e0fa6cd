//! `[lifecycle]` as typed values: when a sent indicator stops being live (it expires) and how
//! often the live ones are sent again (refresh). A duration of "0s" in these keys means never,
//! held as `None`, so no caller compares against zero.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::indicator::IocType;

/// `[lifecycle]`: expiry and refresh of the indicators already sent (the live set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// `expire_after`: an indicator whose `last_seen` is older than this expires: each
    /// destination gets an `expire` event and it leaves the live set. Types named in
    /// `expire_after_by_type` use their own value instead. "0s" = never (`None`).
    /// Default: "90d".
    pub expire_after: Option<Duration>,
    /// `expire_after_by_type`: `expire_after` for some IOC types, an inline table of type =
    /// duration such as `{ ipv4 = "30d", sha256 = "365d" }`. The keys are types from
    /// [`IOC_TYPES`](super::IOC_TYPES) ("mitre_attack" is "mitre-attack"), each once; "0s" =
    /// that type never expires (`None`). Held in `IOC_TYPES` order. Default: {} (every type
    /// uses `expire_after`).
    pub expire_after_by_type: Vec<(IocType, Option<Duration>)>,
    /// `refresh_every`: every live indicator is sent again this often (`refresh` event),
    /// spread evenly over the period, for SIEM lists whose TTL counts from the last add. At
    /// least [`LifecycleConfig::MIN_REFRESH_EVERY`]. "0s" = never (`None`). Default: "0s".
    pub refresh_every: Option<Duration>,
}

impl LifecycleConfig {
    /// The shortest nonzero `refresh_every`: each period re-sends the whole live set, and no
    /// SIEM list TTL is short enough to need that more than once an hour.
    pub const MIN_REFRESH_EVERY: Duration = Duration::from_secs(3600);

    /// How long after its `last_seen` an indicator of `ioc_type` expires: the type's
    /// `expire_after_by_type` entry when there is one, else `expire_after`. `None` = never.
    /// Types the forwarder does not know ([`IocType::Other`]) take `expire_after`.
    pub fn expire_after_for(&self, ioc_type: IocType) -> Option<Duration> {
        self.expire_after_by_type
            .iter()
            .find(|(t, _)| *t == ioc_type)
            .map_or(self.expire_after, |(_, after)| *after)
    }
}

impl LifecycleConfig {
    /// When an indicator of `ioc_type` last seen at `last_seen` expires; `None` when its type
    /// never expires, or when the sum is past what a time can hold (an `expire_after` of
    /// thousands of years means never too).
    pub fn expires_at(&self, ioc_type: IocType, last_seen: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = chrono::Duration::from_std(self.expire_after_for(ioc_type)?).ok()?;
        last_seen.checked_add_signed(after)
    }
}

impl Default for LifecycleConfig {
    /// The defaults of every key: expire after 90 days, whatever the type; no refresh.
    fn default() -> Self {
        LifecycleConfig {
            expire_after: Some(Duration::from_secs(90 * 86_400)),
            expire_after_by_type: Vec::new(),
            refresh_every: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn defaults_expire_every_type_after_90_days_and_never_refresh() {
        let l = LifecycleConfig::default();
        assert_eq!(l.expire_after, Some(90 * DAY));
        assert!(l.expire_after_by_type.is_empty());
        assert_eq!(l.refresh_every, None);
        for t in [IocType::Ipv4, IocType::Sha256, IocType::Other] {
            assert_eq!(l.expire_after_for(t), Some(90 * DAY), "{t:?}");
        }
    }

    #[test]
    fn a_type_named_by_type_takes_its_own_value_the_others_the_default() {
        let l = LifecycleConfig {
            expire_after: Some(90 * DAY),
            expire_after_by_type: vec![(IocType::Ipv4, Some(30 * DAY)), (IocType::Sha256, None)],
            refresh_every: None,
        };
        assert_eq!(l.expire_after_for(IocType::Ipv4), Some(30 * DAY));
        assert_eq!(l.expire_after_for(IocType::Sha256), None, "never");
        assert_eq!(l.expire_after_for(IocType::Domain), Some(90 * DAY));
        assert_eq!(l.expire_after_for(IocType::Other), Some(90 * DAY));
    }

    #[test]
    fn a_type_can_expire_when_the_default_never_does() {
        let l = LifecycleConfig {
            expire_after: None,
            expire_after_by_type: vec![(IocType::Url, Some(60 * DAY))],
            refresh_every: None,
        };
        assert_eq!(l.expire_after_for(IocType::Url), Some(60 * DAY));
        assert_eq!(l.expire_after_for(IocType::Ipv6), None);
    }

    #[test]
    fn expiry_is_last_seen_plus_the_types_duration_and_never_overflows() {
        let t = DateTime::parse_from_rfc3339("2026-05-17T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut c = LifecycleConfig {
            expire_after_by_type: vec![(IocType::Sha256, None), (IocType::Ipv4, Some(DAY))],
            ..LifecycleConfig::default()
        };
        assert_eq!(
            c.expires_at(IocType::Ipv4, t),
            Some(t + chrono::Duration::days(1))
        );
        assert_eq!(
            c.expires_at(IocType::Url, t),
            Some(t + chrono::Duration::days(90))
        );
        assert_eq!(c.expires_at(IocType::Sha256, t), None, "never");
        c.expire_after = Some(Duration::from_secs(u64::MAX / 4));
        assert_eq!(
            c.expires_at(IocType::Url, t),
            None,
            "past every time: never"
        );
        assert_eq!(c.expires_at(IocType::Url, DateTime::<Utc>::MAX_UTC), None);
    }
}
