# %post of the ioc-forwarder .rpm ($1: 1 = install, 2 = upgrade).
# Directories (cargo-generate-rpm cannot package empty ones, so they are set up here):
# rpm created /etc/ioc-forwarder as root:root 0755 to hold config.toml; the config can hold
# secrets, so the directory becomes root:ioc-forwarder 0750, on first install only (an
# administrator's later choice stands). The state directory is what tmpfiles.d and the unit's
# StateDirectory= describe; it is created now so `ioc-forwarder queue ...` works before the
# first start.
if [ "$1" -eq 1 ]; then
    chgrp ioc-forwarder /etc/ioc-forwarder && chmod 0750 /etc/ioc-forwarder
fi
if [ ! -d /var/lib/ioc-forwarder ]; then
    install -d -o ioc-forwarder -g ioc-forwarder -m 0700 /var/lib/ioc-forwarder
fi
# What %systemd_post does: on first install the distribution's preset policy decides whether the
# unit is enabled (Fedora/RHEL: disabled unless a preset lists it). It is never started here:
# it needs an API key first.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset ioc-forwarder.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
