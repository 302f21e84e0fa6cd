# %preun of the ioc-forwarder .rpm ($1: 0 = erase, 1 = upgrade); what %systemd_preun does.
# On erase: disable and stop the service. SIGTERM makes the agent deliver for up to
# shutdown_timeout and persist its queue before it exits.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now ioc-forwarder.service >/dev/null 2>&1 || :
fi
exit 0
