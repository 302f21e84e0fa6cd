//! The latest-event index (`store::latest`) at the size the indicator lifecycle needs: a
//! million identities committed in pages of 10,000, then looked up the two ways expiry does —
//! a whole expiry wave at once, and the handful that fall due in a minute.
//!
//! `cargo bench --bench latest` prints CPU seconds (this process's, user + system) per step
//! and per million pairs; the state file lives under `target/` on disk, never tmpfs.

use std::time::Instant;

use ioc_forwarder::store::latest;
use rusqlite::Connection;

const PAGES: u64 = 100;
const PER_PAGE: u64 = 10_000;

fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Runs `f`, prints its CPU and wall time, returns its result.
fn step<T>(what: &str, pairs: u64, f: impl FnOnce() -> T) -> T {
    let (c0, w0) = (cpu_seconds(), Instant::now());
    let out = f();
    let cpu = cpu_seconds() - c0;
    println!(
        "| {what} | {pairs} | {cpu:.3} | {:.3} | {:.3} |",
        w0.elapsed().as_secs_f64(),
        cpu * 1e6 / pairs.max(1) as f64
    );
    out
}

/// A fixed xorshift stream: the same identities every run.
fn idents(n: u64) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-latest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let mut c = Connection::open(dir.join("latest.db")).expect("open");
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .expect("pragmas");
    c.execute_batch(latest::SCHEMA).expect("schema");
    let all = idents(PAGES * PER_PAGE);
    println!("| step | pairs | CPU s | wall s | CPU s per 1M |");
    println!("|---|---:|---:|---:|---:|");
    step(
        "append one run per page (the commit's share)",
        PAGES * PER_PAGE,
        || {
            for (p, page) in all.chunks(PER_PAGE as usize).enumerate() {
                let tx = c.transaction().expect("tx");
                let mut pairs: Vec<(u64, u64)> = page
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| (id, p as u64 * PER_PAGE + i as u64 + 1))
                    .collect();
                latest::append(&tx, &mut pairs).expect("append");
                tx.commit().expect("commit");
            }
        },
    );
    step("merge the runs (between polls)", PAGES * PER_PAGE, || {
        let tx = c.transaction().expect("tx");
        let merges = latest::compact(&tx).expect("compact");
        tx.commit().expect("commit");
        merges
    });
    let mut sorted = all.clone();
    sorted.sort_unstable();
    let found = step("look up a whole wave, sorted", sorted.len() as u64, || {
        latest::latest(&c, &sorted).expect("lookup")
    });
    assert!(found.iter().all(Option::is_some), "every identity is known");
    let few: Vec<u64> = {
        let mut f: Vec<u64> = all.iter().step_by(10_007).copied().collect();
        f.sort_unstable();
        f
    };
    let found = step(
        "look up 100 (a minute's expiries)",
        few.len() as u64,
        || latest::latest(&c, &few).expect("lookup"),
    );
    assert!(found.iter().all(Option::is_some), "every identity is known");
}
