//! A queued line → its lifecycle line, without the indicator. The live set keeps each live
//! indicator's line as the queue stored it (from [`encode_queued`](super::encode_queued) and
//! [`set_act`](super::set_act), in the profile of the time), not its fields, so expire, revoke
//! and refresh lines are written from that line: exactly the line
//! [`encode_lifecycle`](super::encode_lifecycle) gives for the indicator, in the same profile
//! and with the same options.
//!
//! That needs three edits, each found without parsing values:
//! - the Name is the sixth header field, found by the unescaped `|` (header fields escape `\`
//!   and `|`, so a vendor or Signature ID with pipes cannot shift it); its first word
//!   `Malicious` becomes the verdict;
//! - `act`: extension values escape `=`, so ` act=` in the extension is always the key. A line
//!   of profile `extended` has one (`add`, `update`, or `refresh` for a refresh line) and its
//!   value is replaced in place; a line of profile `socdefenders` has none and gets
//!   ` act=…` after its last pair, where `encode_lifecycle` writes it;
//! - `end` for expire and revoke, last in both profiles.
//!
//! Everything else is copied, so every value keeps the bytes it was encoded with: the per-key
//! length limits of `extended` apply to each value alone (never to the line), so a longer or
//! shorter `act` changes no other value. Lines are stored whole (a destination cuts its own
//! copy at send time), so there is no cut line to relabel.
//!
//! One reservation in `out` at most per call: an expiry wave relabels every expiring indicator.

use std::ops::Range;

use chrono::{DateTime, Utc};

use super::{epoch_millis, header_pipes, push_int, Action, Lifecycle};

/// A line [`relabel`] cannot turn into a lifecycle line: not an add, update or refresh line
/// this encoder wrote. Says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a queued CEF line: {0}")]
pub struct NotCef(pub &'static str);

/// The Name's first word on every line relabel accepts; the verdict replaces it.
const MALICIOUS: &str = "Malicious";

/// The most a line can grow: `act=add` becomes `act=refresh` (4) or ` act=refresh` is
/// appended (12), then ` end=` and at most 19 digits. The verdict never grows the Name.
const MAX_GROWTH: usize = " act=refresh".len() + " end=".len() + 19;

/// Appends to `out` the lifecycle line `action` of the indicator `line` was encoded from:
/// what [`encode_lifecycle`](super::encode_lifecycle)`(ind, action, end, opts, out)` writes
/// when `line` is the queued line of `ind` under `opts` (with its `act` set to add or update),
/// byte for byte. `line` may also be a refresh line: a refresh of a refresh is the same line,
/// and expiring or revoking one gives the same line as from its add line.
///
/// `end` is written for expire and revoke only, and not when before 1970, as
/// `encode_lifecycle` does. On error `out` is left as it was.
pub fn relabel(
    line: &str,
    action: Lifecycle,
    end: Option<DateTime<Utc>>,
    out: &mut String,
) -> Result<(), NotCef> {
    let (verdict_at, ext_start) = locate(line)?;
    let act = act_value(line, ext_start)?;
    let action = Action::Lifecycle(action, end);
    out.reserve(line.len() + MAX_GROWTH);
    out.push_str(&line[..verdict_at]);
    out.push_str(action.verdict());
    let rest = verdict_at + MALICIOUS.len();
    match act {
        Some(value) => {
            out.push_str(&line[rest..value.start]);
            out.push_str(action.act());
            out.push_str(&line[value.end..]);
        }
        None => {
            out.push_str(&line[rest..]);
            if line.len() > ext_start {
                out.push(' ');
            }
            out.push_str("act=");
            out.push_str(action.act());
        }
    }
    if let Some(ms) = epoch_millis(action.end()) {
        out.push_str(" end=");
        push_int(out, ms);
    }
    Ok(())
}

/// Where the Name's `Malicious` starts and where the extension starts.
fn locate(line: &str) -> Result<(usize, usize), NotCef> {
    if !line.starts_with("CEF:") {
        return Err(NotCef("it does not start with `CEF:`"));
    }
    let pipes = header_pipes(line).ok_or(NotCef("fewer than 7 header fields"))?;
    let name = pipes[4] + 1;
    let after = line[name..pipes[5]].strip_prefix(MALICIOUS);
    if !after.is_some_and(|rest| rest.starts_with(' ')) {
        return Err(NotCef("the Name does not start with `Malicious`"));
    }
    Ok((name, pipes[6] + 1))
}

/// The byte range of the `act` value, if the extension (from `ext_start`) has the key. The key
/// is the first pair or follows a space; its value, one word, ends at the next space.
fn act_value(line: &str, ext_start: usize) -> Result<Option<Range<usize>>, NotCef> {
    let ext = &line[ext_start..];
    let key = if ext.starts_with("act=") {
        0
    } else if let Some(space) = ext.find(" act=") {
        space + 1
    } else {
        return Ok(None);
    };
    let start = key + "act=".len();
    let end = ext[start..].find(' ').map_or(ext.len(), |n| start + n);
    match &ext[start..end] {
        "add" | "update" | "refresh" => Ok(Some(ext_start + start..ext_start + end)),
        _ => Err(NotCef("`act` is not add, update or refresh")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CefProfile;
    use crate::encode::cef::tests::opts;
    use crate::encode::cef::{encode_lifecycle, encode_queued, set_act, Act, CefOptions};
    use crate::indicator::Indicator;
    use serde_json::json;

    const ACTIONS: [Lifecycle; 3] = [Lifecycle::Expire, Lifecycle::Revoke, Lifecycle::Refresh];

    fn end() -> Option<DateTime<Utc>> {
        "2026-05-17T08:00:00Z".parse().ok()
    }

    fn queued(ind: &Indicator, o: &CefOptions, act: Act) -> String {
        let mut line = String::new();
        if let (_, Some(at)) = encode_queued(ind, o, &mut line) {
            set_act(&mut line, at, act);
        }
        line
    }

    fn relabelled(line: &str, action: Lifecycle) -> String {
        let mut out = String::new();
        relabel(line, action, end(), &mut out).unwrap();
        out
    }

    /// Relabelling the indicator's queued add and update lines gives its lifecycle lines, for
    /// every action, in both profiles; returns the expire line in `profile`.
    fn check(ind: &Indicator, o: &CefOptions) -> String {
        for act in [Act::Add, Act::Update] {
            let line = queued(ind, o, act);
            for action in ACTIONS {
                let mut want = String::new();
                encode_lifecycle(ind, action, end(), o, &mut want);
                assert_eq!(relabelled(&line, action), want, "{act:?} {action:?}");
            }
        }
        relabelled(&queued(ind, o, Act::Add), Lifecycle::Expire)
    }

    fn item(v: serde_json::Value) -> Indicator {
        crate::decode::item(&v).unwrap()
    }

    #[test]
    fn hostile_header_fields_do_not_move_the_name() {
        let ind = item(json!({"type": "ip|v4\\", "value": "203.0.113.42", "id": "u1"}));
        let o = CefOptions {
            device_vendor: "Malicious |Vendor| act=add \\".into(),
            device_product: "a|b|c|d|e|f|g".into(),
            device_version: "\\|".into(),
            ..opts(CefProfile::Extended)
        };
        assert_eq!(
            check(&ind, &o),
            r"CEF:0|Malicious \|Vendor\| act=add \\|a\|b\|c\|d\|e\|f\|g|\\\||ip\|v4\\|Expired Indicator|3|cs6=203.0.113.42 cs6Label=indicator externalId=u1 act=expire end=1779004800000"
        );
        let o = CefOptions {
            profile: CefProfile::SocDefenders,
            ..o
        };
        assert_eq!(
            check(&ind, &o),
            r"CEF:0|Malicious \|Vendor\| act=add \\|a\|b\|c\|d\|e\|f\|g|\\\||ip\|v4\\|Expired Indicator|3|src=203.0.113.42 act=expire end=1779004800000"
        );
    }

    #[test]
    fn a_value_holding_act_is_escaped_so_only_the_key_is_replaced() {
        let ind = item(json!({"type": "url", "value": "http://x/? act=x act=add",
            "confidence": "high", "source": {"feed_name": "f act=update|"}, "id": "act=add"}));
        assert_eq!(
            check(&ind, &opts(CefProfile::SocDefenders)),
            r"CEF:0|SOC Defenders|Threat Intelligence|1.0|url|Expired URL Indicator|9|src=http://x/? act\=x act\=add cs1=high cs1Label=confidence cs2=f act\=update| cs2Label=source act=expire end=1779004800000"
        );
        assert_eq!(
            check(&ind, &opts(CefProfile::Extended)),
            r"CEF:0|SOC Defenders|Threat Intelligence|1.0|url|Expired URL Indicator|9|request=http://x/? act\=x act\=add cs1=high cs1Label=confidence cs2=f act\=update| cs2Label=source externalId=act\=add act=expire end=1779004800000"
        );
    }

    #[test]
    fn a_line_without_pairs_gets_act_as_its_first_pair() {
        // The decoder refuses such a value, but the encoder takes any indicator.
        let mut ind = item(json!({"type": "domain", "value": "a.example"}));
        ind.value = " \t ".into();
        for profile in [CefProfile::SocDefenders, CefProfile::Extended] {
            assert!(check(&ind, &opts(profile))
                .ends_with("|Expired Domain Indicator|3|act=expire end=1779004800000"));
        }
    }

    #[test]
    fn a_refresh_line_relabels_like_its_add_line() {
        let ind = item(json!({"type": "ipv4", "value": "203.0.113.42",
            "first_seen": "2025-05-17T00:00:00Z", "id": "u1"}));
        for profile in [CefProfile::SocDefenders, CefProfile::Extended] {
            let add = queued(&ind, &opts(profile), Act::Add);
            let refresh = relabelled(&add, Lifecycle::Refresh);
            for action in ACTIONS {
                assert_eq!(relabelled(&refresh, action), relabelled(&add, action));
            }
        }
    }

    #[test]
    fn relabel_appends_and_leaves_out_an_end_before_1970() {
        let line = queued(
            &item(json!({"type": "ipv4", "value": "1.2.3.4"})),
            &opts(CefProfile::SocDefenders),
            Act::Add,
        );
        let mut out = String::from("kept ");
        let before_1970 = "1969-12-31T23:59:59Z".parse().ok();
        relabel(&line, Lifecycle::Revoke, before_1970, &mut out).unwrap();
        assert_eq!(
            out,
            "kept CEF:0|SOC Defenders|Threat Intelligence|1.0|ipv4|Revoked IPv4 Indicator|3|src=1.2.3.4 act=revoke"
        );
    }

    #[test]
    fn lines_that_are_not_queued_cef_are_errors_and_leave_out_alone() {
        let h = "CEF:0|SOC Defenders|Threat Intelligence|1.0|ipv4|";
        for (line, reason) in [
            ("", "it does not start with `CEF:`"),
            ("not cef at all", "it does not start with `CEF:`"),
            (
                "x|y|z|a|b|Malicious IPv4 Indicator|3|src=1.2.3.4",
                "it does not start with `CEF:`",
            ),
            (
                "CEF:0|V|P|1|ipv4|Malicious IPv4 Indicator",
                "fewer than 7 header fields",
            ),
            (
                "CEF:0|V|P|1\\|ipv4|Malicious IPv4 Indicator|3",
                "fewer than 7 header fields",
            ),
            (
                "CEF:0|V|P|1|ipv4|Malicious IPv4 Indicator|3\\|",
                "fewer than 7 header fields",
            ),
            (
                &format!("{h}Expired IPv4 Indicator|3|src=1.2.3.4 act=expire"),
                "the Name does not start with `Malicious`",
            ),
            (
                &format!("{h}MaliciousIPv4|3|src=1.2.3.4"),
                "the Name does not start with `Malicious`",
            ),
            (
                &format!("{h}Malicious IPv4 Indicator|3|src=1.2.3.4 act=expire"),
                "`act` is not add, update or refresh",
            ),
            (
                &format!("{h}Malicious IPv4 Indicator|3|act="),
                "`act` is not add, update or refresh",
            ),
        ] {
            let mut out = String::from("kept");
            for action in ACTIONS {
                assert_eq!(
                    relabel(line, action, end(), &mut out),
                    Err(NotCef(reason)),
                    "{line:?}"
                );
            }
            assert_eq!(out, "kept");
        }
    }

    #[test]
    fn the_one_reservation_covers_the_longest_growth() {
        let ind = item(json!({"type": "ipv4", "value": "1.2.3.4"}));
        let line = queued(&ind, &opts(CefProfile::SocDefenders), Act::Add);
        for action in ACTIONS {
            let mut out = String::with_capacity(line.len() + MAX_GROWTH);
            let buffer = out.as_ptr();
            relabel(&line, action, Some(DateTime::<Utc>::MAX_UTC), &mut out).unwrap();
            assert_eq!(out.as_ptr(), buffer, "{action:?} grew the buffer: {out}");
        }
    }

    #[test]
    fn a_line_with_only_its_header_gets_act() {
        let mut out = String::new();
        relabel(
            "CEF:0|V|P|1|x|Malicious Indicator|3|",
            Lifecycle::Refresh,
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, "CEF:0|V|P|1|x|Malicious Indicator|3|act=refresh");
    }
}
