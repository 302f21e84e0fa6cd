#!/usr/bin/env bash
# CI packaging checks for ioc-forwarder. Called from .ci/run; runs as root on a
# disposable Debian machine, from any directory.
#
#   1. the unit's `systemd-analyze security --offline=yes` exposure is <= 2.0
#   2. build the .deb (packaging/build.sh deb: cargo-deb, release build)
#   3. install it with dpkg -i; check the user, the modes and owners, the conffiles
#   4. `systemd-analyze verify` the installed unit (its ExecStart binary now exists)
#   5. the installed `ioc-forwarder --version`, and `check-config` against the installed config,
#      run as the service user (with and without SOCDEFENDERS_API_KEY)
#   6. dpkg --purge, and check that nothing is left behind
#
# Stops at the first failure with a line saying which check failed. Installs systemd and procps
# with apt-get when they are missing. Refuses to run when an ioc-forwarder
# package is already installed: the last step purges it.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly UNIT_SRC=systemd/ioc-forwarder.service
readonly UNIT_INSTALLED=/lib/systemd/system/ioc-forwarder.service
readonly MAX_EXPOSURE=2.0
readonly PKG=ioc-forwarder
readonly SVC_USER=ioc-forwarder

step() { printf '\n==> packaging: %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
    printf '\npackaging/ci.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

installed=false
user_existed=false
cleanup() {
    local rc=$?
    if $installed; then
        echo "packaging/ci.sh: cleaning up: dpkg --purge $PKG" >&2
        dpkg --purge "$PKG" >/dev/null 2>&1 || true
    fi
    if ! $user_existed && getent passwd "$SVC_USER" >/dev/null 2>&1; then
        userdel "$SVC_USER" >/dev/null 2>&1 || true
    fi
    if ! $user_existed && getent group "$SVC_USER" >/dev/null 2>&1; then
        groupdel "$SVC_USER" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}

# --- prerequisites ------------------------------------------------------------------------------
step "prerequisites"
[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs and removes a .deb)"
command -v dpkg >/dev/null 2>&1 || fail "dpkg not found: this check needs a Debian-based machine"
# systemd: systemd-analyze, and systemd-sysusers for the postinst. procps: /bin/kill for the
# unit's ExecReload. Both are dependencies of the .deb, which dpkg -i does not fetch.
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
dpkg-query -W -f '${Status}' procps 2>/dev/null | grep -q ' installed$' || missing+=(procps)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "    apt-get install ${missing[*]}"
    apt-get update >/dev/null || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "cannot install ${missing[*]}"
fi
if dpkg-query -W -f '${Status}' "$PKG" 2>/dev/null | grep -q ' installed$'; then
    fail "package $PKG is already installed on this machine; this check installs and purges it (dpkg --purge $PKG first)"
fi
getent passwd "$SVC_USER" >/dev/null 2>&1 && user_existed=true
trap cleanup EXIT
ok "$(systemd-analyze --version | sed -n 1p), $(dpkg-query -W -f '${Package} ${Version}' dpkg)"

# --- 1. exposure score --------------------------------------------------------------------------
step "systemd-analyze security --offline=yes $UNIT_SRC (must be <= $MAX_EXPOSURE)"
security_out=$(systemd-analyze security --offline=yes "$UNIT_SRC" 2>&1) ||
    fail "systemd-analyze security failed:"$'\n'"$security_out"
# "→ Overall exposure level for ioc-forwarder.service: 1.1 OK 🙂"
score=$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no exposure score in the output of systemd-analyze security:"$'\n'"$security_out"
if ! awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s + 0 <= m + 0) }'; then
    printf '%s\n' "$security_out" | grep -E '^✗' >&2 || true
    fail "exposure score $score is above $MAX_EXPOSURE (the ✗ lines above are what counts against it)"
fi
ok "exposure $score"

# --- 2. build -----------------------------------------------------------------------------------
step "build the .deb (packaging/build.sh deb)"
pkgdir=$(mktemp -d)
PACKAGES_DIR=$pkgdir packaging/build.sh deb
shopt -s nullglob
debs=("$pkgdir"/"$PKG"_*.deb)
shopt -u nullglob
[ "${#debs[@]}" -eq 1 ] || fail "expected one ${PKG}_*.deb in $pkgdir, found: ${debs[*]:-none}"
deb=${debs[0]}
ok "$(basename "$deb") ($(du -h "$deb" | cut -f1))"
# The generated maintainer scripts: valid sh, the debhelper token replaced exactly once.
ctl="$pkgdir/control"
dpkg-deb -e "$deb" "$ctl"
for script in postinst prerm postrm; do
    [ -f "$ctl/$script" ] || fail "the .deb has no $script"
    sh -n "$ctl/$script" || fail "$script in the .deb is not valid sh"
    ! grep -q '#DEBHELPER#' "$ctl/$script" || fail "$script still holds the debhelper token"
done
n=$(grep -c '^ *systemd-sysusers ' "$ctl/postinst" || true)
[ "$n" -eq 1 ] || fail "postinst runs systemd-sysusers $n times, want 1 (a debhelper token in a comment?)"
ok "maintainer scripts: postinst prerm postrm"

# --- 3. install ---------------------------------------------------------------------------------
step "dpkg -i $(basename "$deb")"
installed=true
dpkg -i "$deb" || fail "dpkg -i failed"

getent passwd "$SVC_USER" >/dev/null || fail "system user $SVC_USER was not created"
getent group "$SVC_USER" >/dev/null || fail "group $SVC_USER was not created"
uid=$(id -u "$SVC_USER")
[ "$uid" -lt 1000 ] || fail "$SVC_USER has uid $uid: not a system user"
ok "user $(id "$SVC_USER")"

# path, expected "mode owner group"
expect_stat() {
    local path=$1 want=$2 got
    got=$(stat -c '%a %U %G' "$path" 2>/dev/null) || fail "$path is missing"
    [ "$got" = "$want" ] || fail "$path is '$got', want '$want'"
    ok "$path $got"
}
expect_stat /usr/bin/ioc-forwarder "755 root root"
expect_stat "$UNIT_INSTALLED" "644 root root"
expect_stat /etc/ioc-forwarder "750 root $SVC_USER"
expect_stat /etc/ioc-forwarder/config.toml "640 root $SVC_USER"
expect_stat /etc/default/ioc-forwarder "600 root root"
expect_stat /var/lib/ioc-forwarder "700 $SVC_USER $SVC_USER"
expect_stat /usr/lib/sysusers.d/ioc-forwarder.conf "644 root root"
expect_stat /usr/lib/tmpfiles.d/ioc-forwarder.conf "644 root root"

cmp -s "$UNIT_SRC" "$UNIT_INSTALLED" || fail "the installed unit differs from $UNIT_SRC"
cmp -s config.example.toml /etc/ioc-forwarder/config.toml ||
    fail "/etc/ioc-forwarder/config.toml differs from config.example.toml"
conffiles=$(dpkg-query -W -f '${Conffiles}' "$PKG")
for f in /etc/ioc-forwarder/config.toml /etc/default/ioc-forwarder; do
    printf '%s\n' "$conffiles" | grep -q "^ $f " || fail "$f is not a conffile (dpkg-query Conffiles: $conffiles)"
done
ok "conffiles: /etc/ioc-forwarder/config.toml /etc/default/ioc-forwarder"
# (a file check: systemctl is-enabled needs a booted systemd, which CI machines lack)
if [ -e /etc/systemd/system/multi-user.target.wants/ioc-forwarder.service ]; then
    fail "the package enabled ioc-forwarder.service; it must wait for the operator (API key first)"
fi
ok "unit not enabled on install"

# --- 4. verify the installed unit ---------------------------------------------------------------
step "systemd-analyze verify $UNIT_INSTALLED"
verify_out=$(systemd-analyze verify --man=no "$UNIT_INSTALLED" 2>&1) ||
    fail "systemd-analyze verify failed:"$'\n'"$verify_out"
# verify also reports problems as warnings with exit code 0: any line about our unit fails.
if printf '%s\n' "$verify_out" | grep -q 'ioc-forwarder'; then
    fail "systemd-analyze verify reported:"$'\n'"$verify_out"
fi
ok "no findings"

# --- 5. run the installed binary ----------------------------------------------------------------
step "installed ioc-forwarder --version"
want_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
version_out=$(/usr/bin/ioc-forwarder --version) || fail "ioc-forwarder --version exited $?"
[ "$version_out" = "ioc-forwarder $want_version" ] ||
    fail "ioc-forwarder --version printed '$version_out', want 'ioc-forwarder $want_version'"
ok "$version_out"

step "check-config against /etc/ioc-forwarder/config.toml, as $SVC_USER"
secret=sk_live_packaging_ci_$$
# cd /: the service user cannot read the CI checkout.
rc=0
check_out=$(cd / && runuser -u "$SVC_USER" -- env SOCDEFENDERS_API_KEY="$secret" \
    /usr/bin/ioc-forwarder --config /etc/ioc-forwarder/config.toml check-config 2>&1) || rc=$?
[ "$rc" -eq 0 ] || fail "check-config exited $rc:"$'\n'"$check_out"
case "$check_out" in
    *"$secret"*) fail "check-config printed the API key" ;;
esac
ok "exit 0, API key redacted"

rc=0
missing_out=$(cd / && runuser -u "$SVC_USER" -- env -u SOCDEFENDERS_API_KEY \
    /usr/bin/ioc-forwarder --config /etc/ioc-forwarder/config.toml check-config 2>&1) || rc=$?
[ "$rc" -eq 2 ] || fail "check-config without SOCDEFENDERS_API_KEY exited $rc, want 2:"$'\n'"$missing_out"
ok "without SOCDEFENDERS_API_KEY: exit 2 ($(printf '%s' "$missing_out" | head -n1))"

# --- 6. remove ----------------------------------------------------------------------------------
step "dpkg --purge $PKG"
dpkg --purge "$PKG" || fail "dpkg --purge failed"
installed=false
for path in /usr/bin/ioc-forwarder "$UNIT_INSTALLED" /etc/ioc-forwarder /etc/default/ioc-forwarder \
    /var/lib/ioc-forwarder /usr/lib/sysusers.d/ioc-forwarder.conf /usr/lib/tmpfiles.d/ioc-forwarder.conf; do
    [ ! -e "$path" ] || fail "$path is still there after dpkg --purge"
done
if dpkg-statoverride --list | grep -q ioc-forwarder; then
    fail "dpkg-statoverride entries left after purge: $(dpkg-statoverride --list | grep ioc-forwarder)"
fi
ok "no files, directories or stat overrides left (the package keeps the system user, as Debian packages do; this script removes it)"
rm -rf "$pkgdir"

printf '\n==> packaging: all checks passed (exposure %s)\n' "$score"
