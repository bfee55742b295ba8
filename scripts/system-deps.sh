#!/usr/bin/env bash
# System packages that some features and their tests need, installed once on Debian/Ubuntu when run as root:
#   ffmpeg    streams programmes to bgmid over UDP/HTTP in the live-monitoring tests (bgmid itself decodes with PyAV)
#   chromium  the real browser that Playwright drives in the review-page tests (Playwright's own download is blocked)
# Without root or apt-get it only reports what is missing: those tests then skip, saying why.
set -uo pipefail
want=(ffmpeg chromium)
missing=()
for pkg in "${want[@]}"; do command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}" >&2
    (apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || \
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; }) || \
        echo "warning: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
else
    echo "note: ${missing[*]} not installed (needs root and apt-get); the tests that need them will skip" >&2
fi
exit 0
