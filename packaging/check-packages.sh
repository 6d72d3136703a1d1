#!/usr/bin/env bash
# Builds the .deb and .rpm and checks them, as root, on a Debian machine (CI step
# "packages" in .ci/run):
#   1. tools: rpm, lintian and systemd (apt) and cargo-deb, cargo-generate-rpm (cargo
#      install --locked), each installed only when missing;
#   2. both packages built by packaging/build-packages.sh; sizes printed;
#   3. lintian: no error or warning, except the overrides in packaging/debian/lintian-overrides,
#      each of which must carry a reason;
#   4. the .rpm's `rpm -qpi`, `-qpR`, `-qpl`, `-qpc` and `--scripts` equal
#      packaging/rpm/expected-manifest.txt (build date, host and size left out; the man pages
#      of subcommands as one line, so a new subcommand needs no manifest change: the install
#      step checks that each has its page);
#   5. `dpkg -i`: the user, owners and modes, the one-time password file (its path printed,
#      the password not), `clientele doctor` as the clientele user, a start as that user
#      with a reload, the unit through `systemd-analyze verify` and `systemd-analyze security
#      --offline=true` (exposure at most 2.0); a second `dpkg -i` (the upgrade path) keeps the
#      store, the key and an edited config;
#   6. `dpkg -r` keeps configuration, data and logs; `dpkg -P` says it deletes regulated data
#      and does, and keeps the user.
# Any difference stops the script with a line saying what. The machine is left without the
# package (the user clientele stays, as documented).
#
#   packaging/check-packages.sh [--update-manifest]
#
# --update-manifest rewrites packaging/rpm/expected-manifest.txt from the built .rpm instead
# of comparing; review its diff before committing it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS
manifest=packaging/rpm/expected-manifest.txt
max_exposure=2.0
update_manifest=no
if [[ "${1:-}" == "--update-manifest" ]]; then
    update_manifest=yes
fi

say() { printf -- '--> %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
# expect_mode PATH MODE OWNER:GROUP
expect_mode() {
    local actual
    actual=$(stat -c '%a %U:%G' "$1") || fail "$1 is missing"
    [[ "$actual" == "$2 $3" ]] || fail "$1 is $actual, expected $2 $3"
}

[[ $(id -u) -eq 0 ]] || fail "run as root (it installs and purges the package)"

say "tools"
apt_missing=()
command -v rpm >/dev/null || apt_missing+=(rpm)
command -v lintian >/dev/null || apt_missing+=(lintian)
command -v systemd-analyze >/dev/null || apt_missing+=(systemd)
command -v readelf >/dev/null || apt_missing+=(binutils)
if ((${#apt_missing[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
cargo deb --version >/dev/null 2>&1 || nice -n 10 cargo install --locked cargo-deb
cargo generate-rpm --version >/dev/null 2>&1 || nice -n 10 cargo install --locked cargo-generate-rpm
printf '    %s\n' "$(rpm --version)" "lintian $(lintian --version | awk '{print $2}')" \
    "$(systemd-analyze --version | head -n1)" "$(cargo deb --version)" \
    "$(cargo generate-rpm --version)"

if dpkg -s clientele >/dev/null 2>&1; then
    fail "the clientele package is already installed here; purge it first (dpkg -P clientele)"
fi
for leftover in /var/lib/clientele /var/log/clientele /etc/clientele; do
    [[ ! -e "$leftover" ]] || fail "$leftover exists from an earlier install; move it away first"
done

say "build"
packaging/build-packages.sh
deb=$(ls target/packages/*.deb)
rpm_file=$(ls target/packages/*.rpm)

say "sizes"
deb_bytes=$(stat -c %s "$deb")
rpm_bytes=$(stat -c %s "$rpm_file")
installed_kib=$(dpkg-deb -f "$deb" Installed-Size)
printf '    %-40s %6d KiB\n' "$(basename "$deb")" $((deb_bytes / 1024)) \
    "$(basename "$rpm_file")" $((rpm_bytes / 1024)) \
    "installed (dpkg Installed-Size)" "$installed_kib"

say "lintian"
# Every override needs a reason: a comment line right above it.
awk '/^[^#[:space:]]/ && prev !~ /^#/ { print "override without a reason: " $0; bad = 1 }
     { prev = $0 } END { exit bad }' packaging/debian/lintian-overrides ||
    fail "packaging/debian/lintian-overrides: give every override a comment saying why"
# The overrides are listed for the log; the verdict comes from a run without
# --show-overrides, because lintian 2.116 counts a shown override as a failure.
lintian --show-overrides "$deb" || true
lintian --fail-on error,warning "$deb" ||
    fail "lintian found errors or warnings in $deb"

say "rpm metadata against $manifest"
actual_manifest=$(mktemp)
{
    echo "## rpm -qpi (without build date, build host, size and source rpm)"
    rpm -qpi "$rpm_file" | grep -Ev '^(Build Date|Build Host|Size|Source RPM|Signature|Relocations) *:'
    echo "## rpm -qpR"
    rpm -qpR "$rpm_file"
    echo "## rpm -qpl (one line for the per-subcommand man pages, checked after the install)"
    rpm -qpl "$rpm_file" |
        sed -E 's|^/usr/share/man/man1/clientele-.+\.1\.gz$|/usr/share/man/man1/clientele-SUBCOMMAND.1.gz|' |
        uniq
    echo "## rpm -qpc"
    rpm -qpc "$rpm_file"
    echo "## rpm -qp --scripts"
    rpm -qp --scripts "$rpm_file"
} >"$actual_manifest" 2>&1
if [[ "$update_manifest" == yes ]]; then
    cp "$actual_manifest" "$manifest"
    say "wrote $manifest; review its diff"
elif ! diff -u "$manifest" "$actual_manifest"; then
    fail "the .rpm differs from $manifest (if intended: packaging/check-packages.sh --update-manifest)"
fi
rm -f "$actual_manifest"

say "dpkg -i"
install_log=$(mktemp)
dpkg -i "$deb" 2>&1 | tee "$install_log"
getent passwd clientele | grep -q ':/var/lib/clientele:/usr/sbin/nologin$' ||
    fail "user clientele missing or with another home or shell: $(getent passwd clientele)"
getent group clientele >/dev/null || fail "group clientele missing"
expect_mode /etc/clientele 750 root:clientele
expect_mode /etc/clientele/clientele.toml 640 root:clientele
expect_mode /var/lib/clientele 700 clientele:clientele
expect_mode /var/log/clientele 750 clientele:clientele
expect_mode /var/lib/clientele/keys/master.key 400 clientele:clientele
expect_mode /etc/clientele/initial-admin-password 600 root:root
expect_mode /usr/bin/clientele 755 root:root
expect_mode /usr/lib/systemd/system/clientele.service 644 root:root
if readelf -S /usr/bin/clientele | grep -q '\.symtab'; then
    fail "/usr/bin/clientele is not stripped"
fi
grep -q '/etc/clientele/initial-admin-password' "$install_log" ||
    fail "the install did not say where the one-time password is"
one_time_password=$(tr -d '\n' </etc/clientele/initial-admin-password)
[[ ${#one_time_password} -ge 12 ]] || fail "the one-time password file looks empty"
if grep -qF -- "$one_time_password" "$install_log"; then
    fail "the install printed the one-time password"
fi
for file in /usr/share/man/man1/clientele.1.gz /usr/share/man/man1/clientele-serve.1.gz \
    /usr/share/bash-completion/completions/clientele /usr/share/zsh/vendor-completions/_clientele \
    /usr/share/fish/vendor_completions.d/clientele.fish /usr/lib/sysusers.d/clientele.conf \
    /usr/share/doc/clientele/copyright /usr/share/doc/clientele/changelog.Debian.gz; do
    [[ -s "$file" ]] || fail "$file is missing or empty"
done
# A man page for every subcommand that --help lists.
# (Subcommand lines start with two spaces; a wrapped description starts with more.)
for subcommand in $(clientele --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { on = 0 }
        on && /^  [a-z]/ && $1 != "help" { print $1 }'); do
    [[ -s "/usr/share/man/man1/clientele-$subcommand.1.gz" ]] ||
        fail "no man page for 'clientele $subcommand'"
done
grep -q '^/etc/clientele/clientele.toml$' /var/lib/dpkg/info/clientele.conffiles ||
    fail "/etc/clientele/clientele.toml is not a conffile"

say "clientele doctor, as the clientele user"
runuser -u clientele -- clientele doctor || fail "clientele doctor failed on the fresh install"

say "serve as the clientele user, reload, stop"
serve_out=$(mktemp)
runuser -u clientele -- env CLIENTELE_LOG__STDERR=false \
    clientele serve --listen 127.0.0.1:0 >"$serve_out" 2>&1 &
serve_pid=$!
for _ in $(seq 600); do
    grep -q 'Clientele is serving on' "$serve_out" && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q 'Clientele is serving on' "$serve_out" || fail "serve did not start: $(cat "$serve_out")"
runuser -u clientele -- clientele doctor | grep -q 'open in the running server' ||
    fail "doctor did not reach the running server"
server=$(pgrep -u clientele -x clientele) || fail "no clientele process of the user clientele"
kill -HUP "$server"
kill -0 "$serve_pid" 2>/dev/null || fail "SIGHUP ended the server"
kill -TERM "$server"
wait "$serve_pid" || fail "serve exited with an error: $(cat "$serve_out")"
ls /var/log/clientele/clientele.*.log >/dev/null 2>&1 || fail "no log file in /var/log/clientele"
rm -f "$serve_out"

say "systemd unit"
systemd-analyze verify /usr/lib/systemd/system/clientele.service
exposure=$(systemd-analyze security --offline=true /usr/lib/systemd/system/clientele.service |
    awk '/Overall exposure level/ { if (match($0, /[0-9]+\.[0-9]+/)) print substr($0, RSTART, RLENGTH) }')
echo "    systemd-analyze security exposure: $exposure (threshold $max_exposure)"
awk -v e="$exposure" -v max="$max_exposure" 'BEGIN { exit !(e != "" && e <= max) }' ||
    fail "exposure $exposure is above $max_exposure"

say "upgrade path: dpkg -i again keeps the store, the key and an edited config"
key_before=$(sha256sum /var/lib/clientele/keys/master.key)
otp_before=$(sha256sum /etc/clientele/initial-admin-password)
echo "# edited by the check" >>/etc/clientele/clientele.toml
dpkg -i "$deb" >"$install_log" 2>&1 || fail "reinstall failed: $(cat "$install_log")"
[[ "$(sha256sum /var/lib/clientele/keys/master.key)" == "$key_before" ]] || fail "the master key changed"
[[ "$(sha256sum /etc/clientele/initial-admin-password)" == "$otp_before" ]] ||
    fail "the one-time password file changed"
tail -n1 /etc/clientele/clientele.toml | grep -q 'edited by the check' || fail "the edited config was replaced"
expect_mode /etc/clientele/clientele.toml 640 root:clientele
runuser -u clientele -- clientele doctor >/dev/null || fail "clientele doctor failed after the upgrade"

say "dpkg -r keeps configuration, data and logs"
dpkg -r clientele 2>&1 | tee "$install_log"
[[ ! -e /usr/bin/clientele ]] || fail "/usr/bin/clientele is still there after removal"
for kept in /etc/clientele/clientele.toml /var/lib/clientele/keys/master.key /var/lib/clientele/db \
    /var/log/clientele; do
    [[ -e "$kept" ]] || fail "$kept was deleted by a remove"
done
grep -q 'purge' "$install_log" || fail "remove did not say how to delete the data"

say "dpkg -P deletes regulated data, and says so"
dpkg -P clientele 2>&1 | tee "$install_log"
grep -q 'regulated' "$install_log" || fail "purge did not say it deletes regulated personal data"
for gone in /etc/clientele /var/lib/clientele /var/log/clientele; do
    [[ ! -e "$gone" ]] || fail "$gone is still there after purge"
done
getent passwd clientele >/dev/null || fail "purge removed the user clientele (documented as kept)"
rm -f "$install_log"

elapsed=$((SECONDS - started))
say "packages OK in $((elapsed / 60))m$((elapsed % 60))s: deb $((deb_bytes / 1024)) KiB," \
    "rpm $((rpm_bytes / 1024)) KiB, installed $installed_kib KiB, exposure $exposure"
