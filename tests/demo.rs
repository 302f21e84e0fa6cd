//! `ioc-forwarder demo`: the first command a new user runs. It must print valid RFC 5424 frames
//! carrying CEF for the built-in sample feed, or send them to a TCP receiver with `--to`.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::*;

fn demo(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ioc-forwarder"));
    cmd.arg("demo")
        .args(args)
        .env_remove("IOC_FORWARDER_CONFIG");
    run_cmd(cmd).0
}

/// Every frame parses, carries CEF, and the feed covers every IOC type the agent knows.
fn check_frames(frames: &[String]) {
    assert!(frames.len() >= 40, "only {} frames", frames.len());
    let mut types = BTreeSet::new();
    for f in frames {
        assert!(!f.contains('\r'), "raw CR in a frame: {f:?}");
        let s = parse_rfc5424(f).unwrap_or_else(|e| panic!("{e}: {f:?}"));
        assert_eq!(s.version, 1);
        assert_eq!(s.pri, 36, "auth.warning");
        assert_eq!(s.app_name, "ioc-forwarder");
        assert!(
            s.msg
                .starts_with("CEF:0|SOC Defenders|Threat Intelligence|1.0|"),
            "{f}"
        );
        types.insert(s.msgid.replace('_', "-"));
    }
    // Every type the product knows is in the sample feed.
    for t in ioc_forwarder::config::IOC_TYPES {
        assert!(
            types.contains(*t),
            "no {t} indicator in the sample feed: {types:?}"
        );
    }
    // The seed's own line is in the feed, with the table's severity.
    assert!(
        frames.iter().any(|f| f.ends_with(
            "CEF:0|SOC Defenders|Threat Intelligence|1.0|ipv4|Malicious IPv4 Indicator|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000"
        )),
        "the seed line is missing"
    );
    // Hostile values arrive escaped, in one frame each.
    assert!(
        frames.iter().any(|f| f.contains("\\r\\n")),
        "no escaped CR LF"
    );
    assert!(frames.iter().any(|f| f.contains("\\=")), "no escaped =");
}

#[test]
fn demo_prints_valid_frames_for_every_ioc_type() {
    let out = demo(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let frames: Vec<String> = stdout.lines().map(str::to_string).collect();
    check_frames(&frames);
}

#[test]
fn demo_to_tcp_delivers_the_same_frames_to_a_receiver() {
    let rx = TcpReceiver::start(Framing::Lf);
    let url = format!("tcp://{}", rx.address());
    let out = demo(&["--to", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).is_empty(),
        "with --to nothing goes to stdout"
    );
    let n = rx.wait_for(40, Duration::from_secs(20));
    assert!(n >= 40, "receiver got {n} frames");
    check_frames(&rx.frames());
}

#[test]
fn demo_with_a_bad_target_is_a_clear_error() {
    let out = demo(&["--to", "carrier-pigeon://coop"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        text(&out.stderr).contains("tcp://HOST:PORT"),
        "{}",
        text(&out.stderr)
    );
}
