#!/usr/bin/env bash
# Renders an HTML report to a PNG with headless Chromium, to see what a reader sees.
#
#   scripts/render-report.sh reports/RUN-model.html [out.png]
#
# Needs Debian's chromium package (`apt-get install chromium`). The page is self-contained, so
# Chromium is started with networking features off; a page that needed the network would show
# broken charts.
set -euo pipefail
html=${1:?usage: scripts/render-report.sh REPORT.html [OUT.png]}
png=${2:-${html%.html}.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no chromium found: apt-get install chromium" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size=1200,2400 \
    --screenshot="$(realpath -m "$png")" "file://$(realpath "$html")" 2>/dev/null
echo "wrote $png"
