# %post of the clientele .rpm: user, folders and modes, the first store on a first
# install (all in /usr/lib/clientele/setup), then the unit's preset (as %systemd_post
# does). The service is not started: run `systemctl enable --now clientele`.
# $1 is the number of clientele packages installed after this one: 1 on a first install.
if [ "$1" -eq 1 ]; then
    /usr/lib/clientele/setup --first-install || exit 1
else
    /usr/lib/clientele/setup || exit 1
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset clientele.service >/dev/null 2>&1 || :
    echo "clientele: start the service with: systemctl enable --now clientele"
fi
