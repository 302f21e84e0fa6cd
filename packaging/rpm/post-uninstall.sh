# %postun of the ioc-forwarder .rpm ($1: 0 = erase, 1 = upgrade); what
# %systemd_postun_with_restart does. On upgrade a running service is restarted on the new binary;
# its queue in /var/lib/ioc-forwarder carries over. On erase the queued events in
# /var/lib/ioc-forwarder and the ioc-forwarder user stay (remove them by hand); /etc/ioc-forwarder
# goes when it is empty (a modified config.toml is kept as config.toml.rpmsave).
if [ "$1" -eq 0 ]; then
    rmdir /etc/ioc-forwarder 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart ioc-forwarder.service >/dev/null 2>&1 || :
    fi
fi
exit 0
