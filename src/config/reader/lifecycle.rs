//! `[lifecycle]`: durations where "0s" means never, a per-type table whose keys must be IOC
//! types the forwarder knows, and a floor under `refresh_every`, which re-sends the whole live
//! set each period.

use std::time::Duration;

use super::{Reader, Section};
use crate::config::*;
use crate::indicator::IocType;

impl Reader<'_> {
    pub(super) fn lifecycle(&mut self, top: &mut Section) -> LifecycleConfig {
        let defaults = LifecycleConfig::default();
        let mut s = self.section(top, "lifecycle", "[lifecycle]");
        let expire_after = self.duration_or_never(&mut s, "expire_after", defaults.expire_after);
        let expire_after_by_type = self.expire_after_by_type(&mut s);
        let refresh_every = self.refresh_every(&mut s, defaults.refresh_every);
        self.finish(s);
        LifecycleConfig {
            expire_after,
            expire_after_by_type,
            refresh_every,
        }
    }

    /// `expire_after_by_type`: each key an IOC type (lowercase, `_` as `-`, as `source.types`
    /// reads them) given once, each value a duration or "0s"; in `IOC_TYPES` order.
    fn expire_after_by_type(&mut self, s: &mut Section) -> Vec<(IocType, Option<Duration>)> {
        let shape = "must be a table of IOC type = duration, like { ipv4 = \"30d\" }";
        let header = "[lifecycle.expire_after_by_type]";
        let Some(mut sub) = self.sub_table(s, "expire_after_by_type", header, shape) else {
            return Vec::new();
        };
        let mut out: Vec<(IocType, Option<Duration>)> = Vec::new();
        let keys: Vec<String> = sub.table.keys().cloned().collect();
        for key in keys {
            let name = key.trim().to_ascii_lowercase().replace('_', "-");
            let Some(ioc_type) = IocType::from_name(&name) else {
                sub.table.remove(&key);
                let known = IOC_TYPES.join(", ");
                self.problem(&sub, &key, format!("{key:?} is not an IOC type ({known})"));
                continue;
            };
            let after = self.duration_or_never(&mut sub, &key, None);
            if out.iter().any(|(t, _)| *t == ioc_type) {
                let problem = format!("{key:?} names the type {name:?} again; give each type once");
                self.problem(&sub, &key, problem);
            } else {
                out.push((ioc_type, after));
            }
        }
        self.finish(sub);
        out.sort_by_key(|(t, _)| IocType::NAMES.iter().position(|(_, n)| n == t));
        out
    }

    /// `refresh_every`: "0s" (never) or at least [`LifecycleConfig::MIN_REFRESH_EVERY`].
    fn refresh_every(&mut self, s: &mut Section, default: Option<Duration>) -> Option<Duration> {
        let every = self.duration_or_never(s, "refresh_every", default);
        let min = LifecycleConfig::MIN_REFRESH_EVERY;
        match every {
            Some(d) if d < min => {
                let (d, min) = (
                    humantime::format_duration(d),
                    humantime::format_duration(min),
                );
                let problem = format!(
                    "\"{d}\" is too short: each period re-sends every live indicator, and no SIEM list TTL needs that more often than every {min}; write \"{min}\" or more, or \"0s\" for never"
                );
                self.problem(s, "refresh_every", problem);
                default
            }
            _ => every,
        }
    }
}
