#!/usr/bin/env bash
# The thumbnails demo: start ondrop on a fresh data folder, apply the chained services,
# upload sample images, wait for every job, show the jobs and the outputs, stop.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DEMO_DATA:-$(dirname "$(dirname "$here")")/.demo}"
rm -rf "$data" && mkdir -p "$data"
export ONDROP_DATA="$data"

ondrop up --port 0 >"$data/platform.log" 2>&1 &
platform=$!
trap 'kill -INT $platform 2>/dev/null; wait $platform 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  [ -f "$data/endpoint.json" ] && ondrop services >/dev/null 2>&1 && break
  kill -0 $platform 2>/dev/null || { cat "$data/platform.log"; exit 1; }
  sleep 0.1
done
echo "== platform up: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$data/endpoint.json") (log: $data/platform.log)"

echo "== apply $here/thumbnails.yaml"
ondrop apply "$here/thumbnails.yaml"

echo "== upload sample images"
python3 "$here/make_inputs.py" "$data/samples" 8
echo "== and wait for the chain: thumbnail, then grayscale"
ondrop put thumbnail "$data"/samples/* --wait

echo "== jobs"
ondrop jobs thumbnail
ondrop jobs grayscale

echo "== outputs"
ondrop ls thumbnail
ondrop ls grayscale

kill -INT $platform && wait $platform || true
trap - EXIT
echo "== platform stopped; the outputs stay on disk:"
echo "   thumbnails  $data/storage/images/thumbs"
echo "   grayscale   $data/storage/images/gray"
