#!/usr/bin/env bash
# Runs the test suite: gofmt and vet checks, then `go test -race ./...` with a
# private Azurite on free ports, which is stopped however the tests end.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './Azurite/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...

work=$(mktemp -d)
go build -o "$work/azurite-serve" ./tests/azurite/serve
"$work/azurite-serve" "$work/conn" &
serve_pid=$!
cleanup() { kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  [ -s "$work/conn" ] && break
  kill -0 "$serve_pid" 2>/dev/null || { echo "Azurite failed to start"; exit 1; }
  sleep 0.1
done
[ -s "$work/conn" ] || { echo "Azurite did not start within 30s"; exit 1; }
export STRATUS_TEST_STORAGE="$(cat "$work/conn")"
echo "Azurite for tests: ${STRATUS_TEST_STORAGE##*BlobEndpoint=}"
go test -race -count=1 -timeout 20m ${TESTFLAGS:-} ./...
