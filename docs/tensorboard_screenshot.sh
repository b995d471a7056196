#!/usr/bin/env bash
# The TensorBoard screenshot of the docs (docs/tensorboard.png), headless: TensorBoard on a
# tracked grid's log directory, Chromium's screenshot of its eval scalars (unsmoothed).
#   docs/tensorboard_screenshot.sh runs/smoke/tensorboard
set -euo pipefail
logdir=${1:?usage: docs/tensorboard_screenshot.sh LOGDIR}
out=${2:-docs/tensorboard.png}
tensorboard --logdir "$logdir" --host 127.0.0.1 --port 6006 >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf http://127.0.0.1:6006/ >/dev/null && break
    kill -0 $server 2>/dev/null || { echo "tensorboard exited (port 6006 taken?)" >&2; exit 1; }
    sleep 1
done
chromium --headless --no-sandbox --enable-unsafe-swiftshader --hide-scrollbars --virtual-time-budget=20000 \
    --window-size=1400,1000 --screenshot="$out" "http://127.0.0.1:6006/#scalars&_smoothingWeight=0&tagFilter=eval" 2>/dev/null
echo "wrote $out"
