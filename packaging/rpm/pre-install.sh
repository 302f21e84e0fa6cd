# %pre of the ioc-forwarder .rpm ($1: 1 = install, 2 = upgrade).
# Create the system user and group before rpm lays down the files that name them
# (/etc/ioc-forwarder/config.toml is root:ioc-forwarder 0640 in the package header).
# Same account as /usr/lib/sysusers.d/ioc-forwarder.conf; shadow-utils works with or without a
# running systemd (image builds, chroots). An existing account is left as it is.
getent group ioc-forwarder >/dev/null || groupadd -r ioc-forwarder
getent passwd ioc-forwarder >/dev/null || \
    useradd -r -g ioc-forwarder -d /var/lib/ioc-forwarder -s /sbin/nologin \
        -c "ioc-forwarder SIEM forwarder" ioc-forwarder
exit 0
