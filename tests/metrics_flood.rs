//! A flood of `/metrics` scrapes while `run` polls and delivers a feed: every event still
//! arrives, and the endpoint still answers. The fake API holds two of its pages until the
//! flood has been answered a number of times, so the scrapes provably overlap the poll's page
//! commits and the deliveries of the pages before.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Hang guard for waits (never asserted as a duration).
const WAIT: Duration = Duration::from_secs(60);
const EVENTS: usize = 3000;
const FLOODERS: usize = 4;

/// Blocks until `counter` reaches `n` (or the hang guard passes).
fn wait_count(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + WAIT;
    while counter.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_flood_of_scrapes_during_delivery_loses_no_event_and_metrics_still_answer() {
    let api = FakeApi::start(ipv4_feed(EVENTS, now_secs(), Duration::from_secs(1)));
    let answered = Arc::new(AtomicUsize::new(0));
    // Pages of 100 (the fake's tier cap): page 11 waits for 200 answered scrapes, page 21 for
    // 400, so the flood runs while earlier pages commit and are delivered.
    let seen = Arc::clone(&answered);
    api.set_feed_hook(move |n, _, _| match n {
        10 => wait_count(&seen, 200),
        20 => wait_count(&seen, 400),
        _ => {}
    });
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let port = reserve_port();
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &ConfigOpts {
            poll_interval: "1h".to_string(),
            request_timeout: "60s".to_string(),
            metrics_port: Some(port),
            ..ConfigOpts::default()
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || {
                let mut mine = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    if scrape(port).is_some() {
                        mine += 1;
                        answered.fetch_add(1, Ordering::SeqCst);
                    } else {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                mine
            })
        })
        .collect();

    let mut agent = Agent::spawn(&cfg);
    let all_arrived = agent.wait_frames(&rx, WAIT, |f| f.len() >= EVENTS);
    let during = answered.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let per_thread: Vec<usize> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        all_arrived,
        "{} of {EVENTS} events arrived under the flood ({during} scrapes answered)\n{}",
        rx.count(),
        tail(&agent.stderr(), 3000)
    );
    let got: BTreeSet<String> = src_values(&rx.frames()).into_iter().collect();
    let want: BTreeSet<String> = (0..EVENTS).map(ipv4_value).collect();
    assert_eq!(got, want, "every event of the feed, and nothing else");
    assert!(
        during >= 400 && per_thread.iter().all(|n| *n > 0),
        "the flood was answered while the feed was delivered: {during} scrapes, per thread {per_thread:?}"
    );

    // After the flood the endpoint answers, and its snapshot catches up with the queue.
    let deadline = Instant::now() + WAIT;
    let mut body = String::new();
    while Instant::now() < deadline {
        body = scrape(port).unwrap_or_default();
        if body
            .lines()
            .any(|l| l == "ioc_forwarder_queue_events{destination=\"siem1\"} 0")
        {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        body.lines()
            .any(|l| l == format!("ioc_forwarder_events_enqueued_total {EVENTS}"))
            && body
                .lines()
                .any(|l| l == "ioc_forwarder_queue_events{destination=\"siem1\"} 0"),
        "/metrics after the flood\n{body}"
    );
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "{}", tail(&agent.stderr(), 2000));
}
