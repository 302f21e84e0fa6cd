#!/bin/sh
# The end-to-end pipeline benchmark (benches/pipeline.rs) in one command. Installs rsyslog from
# the distribution's packages first when rsyslogd is missing, so the rsyslog baseline rows can
# run (the bench starts its own unprivileged rsyslogd on free ports; the system's service, if
# any, is not touched).
#
#   scripts/bench.sh                          # 1,000,000 indicators
#   IOC_BENCH_N=50000 scripts/bench.sh        # quick
#
# Other knobs (IOC_BENCH_PAGE, IOC_BENCH_IDLE_SECS, IOC_BENCH_ONLY, IOC_BENCH_SKIP,
# IOC_BENCH_KEEP, IOC_BENCH_WRAP) are documented at the top of benches/pipeline.rs.
set -eu
cd "$(dirname "$0")/.."

if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ]; then
    echo "bench.sh: rsyslogd not found; installing it: apt-get install -y rsyslog" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if ! { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends rsyslog; }; then
        echo "bench.sh: could not install rsyslog; the rsyslog rows will say skipped" >&2
    fi
fi

exec cargo bench --bench pipeline "$@"
