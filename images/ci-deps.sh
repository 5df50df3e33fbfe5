#!/usr/bin/env bash
# Installs what images/build.sh and tests/images need when they are missing: buildah (builds and
# runs images without a daemon; chroot isolation, since this sandbox cannot set rlimits for
# runc/crun), debootstrap (the --offline base) and binutils (strip, for the wheels' debug
# symbols). Debian/Ubuntu only; run as root.
# Usage: bash images/ci-deps.sh        (a no-op when both are installed)
set -euo pipefail
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "images/ci-deps.sh: missing ${missing[*]} and no apt-get; install them by hand" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "images/ci-deps.sh: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "images/ci-deps.sh: installed ${missing[*]}"
