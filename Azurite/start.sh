#!/usr/bin/env bash
# Starts the pinned Azurite for `make run` on the default ports (blob 10000,
# queue 10001, table 10002) with its data under Azurite/data, in the
# background. With --if-needed it does nothing when something already listens
# on the queue port.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "--if-needed" ] && (exec 3<>/dev/tcp/127.0.0.1/10001) 2>/dev/null; then
  echo "Azurite already listening on 127.0.0.1:10001"
  exit 0
fi
mkdir -p data
nohup node_modules/.bin/azurite --silent --disableTelemetry --skipApiVersionCheck --loose \
  --location data \
  --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 > data/azurite.log 2>&1 &
echo $! > data/azurite.pid
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/10001) 2>/dev/null; then
    echo "Azurite started (pid $(cat data/azurite.pid)), data in Azurite/data"
    exit 0
  fi
  sleep 0.1
done
echo "Azurite did not start; see Azurite/data/azurite.log" >&2
exit 1
