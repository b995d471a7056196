#!/usr/bin/env bash
# The TensorBoard screenshot of the docs (docs/tensorboard.png), headless: TensorBoard on a
# tracked grid's log directory, Chromium's screenshot of its scalars.
#   docs/tensorboard_screenshot.sh runs/smoke/tensorboard
set -euo pipefail
logdir=${1:?usage: docs/tensorboard_screenshot.sh LOGDIR}
out=${2:-docs/tensorboard.png}
tensorboard --logdir "$logdir" --host 127.0.0.1 --port 6006 >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 120); do
    curl -sf http://127.0.0.1:6006/ >/dev/null && break
    sleep 1
done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=15000 \
    --window-size=1400,900 --screenshot="$out" "http://127.0.0.1:6006/#timeseries"
echo "wrote $out"
