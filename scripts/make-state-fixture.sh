#!/bin/sh
# Makes a state file with a given release of the agent, for upgrade tests: builds REV in a
# temporary git worktree, runs `once` on the built-in sample feed with two destinations —
# `stdout` (everything delivered) and a dead TCP port (everything still queued) — and copies
# the state directory's database files into the directory OUT.
#
#   scripts/make-state-fixture.sh REV OUT
#   scripts/make-state-fixture.sh 11fe1f8 tests/fixtures/state-v3   (state file version 3)
set -eu
rev=${1:?usage: make-state-fixture.sh REV OUT}
out=${2:?usage: make-state-fixture.sh REV OUT}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$repo" worktree add --detach "$work/src" "$rev" >/dev/null
# Its own target directory under ours: a second run for another revision builds incrementally.
(cd "$work/src" && CARGO_TARGET_DIR="$repo/target/state-fixture" cargo build --release --quiet)
mkdir -p "$work/state"
cat > "$work/config.toml" <<TOML
state_dir = "$work/state"
shutdown_timeout = "1s"

[source]
kind = "file"
path = "$work/src/samples/demo-feed.json"

[[destinations]]
name = "delivered"
protocol = "stdout"

[[destinations]]
name = "queued"
protocol = "tcp"
address = "127.0.0.1:9"
TOML
status=0
"$repo/target/state-fixture/release/ioc-forwarder" --config "$work/config.toml" once >/dev/null 2>"$work/once.log" || status=$?
if [ "$status" -ne 3 ]; then
    echo "make-state-fixture: once exited $status, expected 3 (the dead destination keeps its events queued):" >&2
    cat "$work/once.log" >&2
    exit 1
fi
# The state directory as `once` leaves it: state.db and its WAL (SQLite folds the WAL in at the
# next open), nothing else (the lock file is per process).
mkdir -p "$out"
cp "$work/state/state.db" "$out/"
if [ -e "$work/state/state.db-wal" ]; then cp "$work/state/state.db-wal" "$out/"; fi
echo "wrote $out (made by $(git -C "$repo" rev-parse --short "$rev"))"
