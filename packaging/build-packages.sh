#!/usr/bin/env bash
# Builds the .deb and the .rpm of Clientele into target/packages/.
#
#   packaging/build-packages.sh
#
# Needs cargo-deb and cargo-generate-rpm (packaging/check-packages.sh installs them).
# Steps: a release build (stripped, see [profile.release]); man pages and bash, zsh and
# fish completions generated from the command-line definition into target/packaging/;
# then `cargo deb` and `cargo generate-rpm` from [package.metadata.deb] and
# [package.metadata.generate-rpm] in Cargo.toml. Prints the two package paths last.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir=${CARGO_TARGET_DIR:-target}
generated=target/packaging
out=target/packages

# The build machine's cores are shared: keep the release build polite.
nice -n 10 cargo build --release --locked
binary="$target_dir/release/clientele"

rm -rf "$generated" "$out"
mkdir -p "$generated/man" "$generated/completions" "$out"
"$binary" generate man --out "$generated/man" >/dev/null
for shell in bash zsh fish; do
    "$binary" generate completions "$shell" --out "$generated/completions" >/dev/null
done
# Man pages are shipped compressed, without a time stamp so that builds are reproducible.
gzip -9n "$generated"/man/*.1
chmod 0644 "$generated"/man/* "$generated"/completions/*

nice -n 10 cargo deb --no-build --locked --output "$out/" >/dev/null
# The built-in dependency finder (ldd) gives the same Requires on every build host.
nice -n 10 cargo generate-rpm --auto-req builtin --output "$out/" >/dev/null

ls "$out"/*.deb "$out"/*.rpm
