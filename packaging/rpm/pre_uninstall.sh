# %preun of the clientele .rpm: on erase ($1 = 0), disable and stop the service (as
# %systemd_preun does). An upgrade leaves it running; %postun restarts it.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now clientele.service >/dev/null 2>&1 || :
    else
        systemctl --no-reload disable clientele.service >/dev/null 2>&1 || :
    fi
fi
