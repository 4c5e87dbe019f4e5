#!/bin/sh
# Runs a built bundle the way a new user would: unpacked into a fresh folder, started with an empty
# temporary HOME and a bare environment (no venv, no XDG folders, no display). Checks --version and
# --self-test, and that the log file landed in the user's log folder.   Usage: bundle_test.sh TARBALL
set -eu
tarball=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/weightsmith-bundle-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/home" "$work/unpacked"
start=$(date +%s)
tar -C "$work/unpacked" -xzf "$tarball"
echo "unpacked $(du -sh "$work/unpacked" | cut -f1) in $(( $(date +%s) - start )) s"
program=$(ls "$work"/unpacked/*/weightsmith)
run() {
    env -i HOME="$work/home" PATH=/usr/bin:/bin LANG=C.UTF-8 "$program" "$@"
}
echo "== $program --version"
run --version
echo "== $program --self-test"
run --self-test
log="$work/home/.local/state/weightsmith/log/weightsmith.log"
test -s "$log" || { echo "no log file at $log" >&2; exit 1; }
echo "log file written: ${log#"$work/"}"
echo "bundle test passed"
