#!/bin/sh
# Installed as /usr/lib/clientele/setup. The .deb postinst and the .rpm %post run it as
# root after every install and upgrade; running it again changes nothing.
#
#   setup [--first-install]
#
# 1. Creates the system user and group `clientele` (systemd-sysusers with
#    /usr/lib/sysusers.d/clientele.conf, or useradd where systemd is not installed).
# 2. Sets owners and modes: /etc/clientele 0750 root:clientele, the config file 0640
#    root:clientele, /var/lib/clientele 0700 and /var/log/clientele 0750 clientele:clientele.
# 3. With --first-install, when /var/lib/clientele holds no store and no master key yet, runs
#    `clientele init` as the clientele user. The first administrator's one-time password
#    goes to /etc/clientele/initial-admin-password (0600 root:root); only that path is
#    printed, never the password, which would otherwise land in package manager logs.
#
# Needs no running systemd (containers, CI, image builds).
set -eu

ETC_DIR=/etc/clientele
CONFIG=$ETC_DIR/clientele.toml
DATA_DIR=/var/lib/clientele
LOG_DIR=/var/log/clientele
OTP_FILE=$ETC_DIR/initial-admin-password
SYSUSERS=/usr/lib/sysusers.d/clientele.conf
BIN=/usr/bin/clientele

first_install=no
if [ "${1:-}" = "--first-install" ]; then
    first_install=yes
fi

create_user() {
    if getent passwd clientele >/dev/null; then
        return 0
    fi
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers "$SYSUSERS"
    elif command -v useradd >/dev/null 2>&1; then
        getent group clientele >/dev/null || groupadd --system clientele
        useradd --system --gid clientele --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "Clientele retail CRM appliance" clientele
    else
        echo "clientele: cannot create the user clientele: neither systemd-sysusers nor useradd is installed" >&2
        return 1
    fi
}

set_modes() {
    install -d -m 0750 -o root -g clientele "$ETC_DIR"
    chown root:clientele "$ETC_DIR"
    chmod 0750 "$ETC_DIR"
    if [ -f "$CONFIG" ]; then
        chown root:clientele "$CONFIG"
        chmod 0640 "$CONFIG"
    fi
    install -d -m 0700 -o clientele -g clientele "$DATA_DIR"
    chown clientele:clientele "$DATA_DIR"
    chmod 0700 "$DATA_DIR"
    install -d -m 0750 -o clientele -g clientele "$LOG_DIR"
    chown clientele:clientele "$LOG_DIR"
    chmod 0750 "$LOG_DIR"
}

# True when the default data folder holds neither a store nor a master key.
no_store_yet() {
    [ ! -e "$DATA_DIR/db" ] && [ ! -e "$DATA_DIR/db.keycheck" ] \
        && [ ! -e "$DATA_DIR/keys/master.key" ]
}

init_store() {
    # The one-time password is written by the clientele user into its own 0700 folder, then
    # handed to root; it is never readable by anyone else, nor printed.
    staged=$DATA_DIR/.initial-admin-password
    rm -f "$staged"
    out=$(cd / && runuser -u clientele -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        "$BIN" --config "$CONFIG" init --otp-file "$staged") || {
        rm -f "$staged"
        echo "clientele: WARNING: the first store was not created (see the error above)." >&2
        echo "clientele: fix it, then run as root:" >&2
        echo "  runuser -u clientele -- clientele init --otp-file $DATA_DIR/initial-admin-password" >&2
        return 0
    }
    chown root:root "$staged"
    chmod 0600 "$staged"
    mv -f "$staged" "$OTP_FILE"
    printf '%s\n' "$out" | sed -e "s|$staged|$OTP_FILE|" -e '/^Start it with/d'
    cat <<EOF

The one-time password of the first administrator (admin) is in
  $OTP_FILE  (readable by root only)
Sign in at https://<this host>:8443/ with it, choose a new password, set up the second
factor, then delete that file. Keep an offline copy of the master key: without it the
data cannot be read.
EOF
}

create_user
set_modes
if [ "$first_install" = yes ] && no_store_yet; then
    init_store
fi
