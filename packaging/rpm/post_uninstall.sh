# %postun of the clientele .rpm: after an upgrade ($1 >= 1), restart a running service on
# the new binary (as %systemd_postun_with_restart does). After an erase ($1 = 0) the data
# stays: rpm has no purge; README.md, "Uninstall", lists the steps that delete it.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart clientele.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ]; then
    echo "clientele: removed. Kept: /etc/clientele, /var/lib/clientele (data and master key),"
    echo "clientele: /var/log/clientele and the user clientele; README.md, \"Uninstall\", says how to delete them."
fi
