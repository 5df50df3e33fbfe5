#!/usr/bin/env bash
# Builds one container image per knpy component from images/Containerfile.
#
#   bash images/build.sh [--offline] [--archive DIR] [--base IMAGE] [--tag TAG]
#                        [--registry PREFIX] [--engine docker|buildah] [component...]
#   bash images/build.sh --print [--tag TAG] [--registry PREFIX] [component...]
#                        (the image names it would build, "component image" a line)
#
# Components: queue-proxy activator autoscaler (all by default). Images are named
# <registry>/<component>:<tag>, by default localhost/knpy/<component>:<version in pyproject>:
# a "localhost/" name is never pulled from a public registry by mistake, and it is the name
# deploy/ uses (kind and containerd take it as is from --archive's files).
#
# Engine: Docker when `docker info` answers, otherwise buildah (bud --isolation chroot, which
# works as root in a sandbox that cannot set rlimits; storage is buildah's default, overlay
# here; STORAGE_DRIVER=vfs where overlay cannot mount). `bash images/ci-deps.sh` installs
# buildah and debootstrap.
#
# Wheels: knpy and every dependency are built or downloaded on the host for CPython 3.11 on
# manylinux (pip wheel / pip download --only-binary), so the image build needs no network and
# no certificate store; images/deps.py picks the distributions each component imports.
#
# --offline: no registry is pulled. The base is Debian bookworm's python3, made by
#   `debootstrap --variant=minbase --include=python3,python3-venv bookworm` (about a minute) and
#   kept as a tar under the cache directory, then imported once as localhost/knpy/debian-python3.
# --archive DIR: also writes DIR/<component>.tar, an OCI archive (oci-archive: with buildah,
#   `docker save` with Docker), for `kind load image-archive` or `ctr images import`.
# --base IMAGE: the base for the default build (docker.io/library/python:3.11-slim-bookworm,
#   the official image); must have python3 3.11 and its venv module.
#
# Cache: $KNPY_IMAGES_CACHE, by default ${XDG_CACHE_HOME:-~/.cache}/knpy-images: the debootstrap
# tar, the downloaded wheels (by a hash of pyproject.toml) and the build context, whose files
# are only rewritten when their bytes change so that the engine's layer cache holds.
# Prints one line per image: component, image, size in MB, seconds.
set -euo pipefail
# All in one function, parsed whole before it runs, and the last line exits: editing this file
# during a build is safe.
main() {

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALL_COMPONENTS=(queue-proxy activator autoscaler)
CACHE=${KNPY_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/knpy-images}
REGISTRY=${KNPY_IMAGE_REGISTRY:-localhost/knpy}
# Fully qualified: buildah resolves a short name only through registries.conf aliases (Debian
# ships one for python, other distributions may not), and Docker takes the long form as well.
# bookworm: the Debian release (glibc 2.36, OpenSSL 3.0) of the --offline base.
DEFAULT_BASE=docker.io/library/python:3.11-slim-bookworm
OFFLINE_BASE=localhost/knpy/debian-python3:bookworm
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARGET_PYTHON=3.11
# Wheels are byte-identical across builds of the same source (zip times), so layers cache.
export SOURCE_DATE_EPOCH=315532800

die() { echo "images/build.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

offline=0 archive="" base="" tag="" engine=${KNPY_IMAGE_ENGINE:-} print_only=0
components=()
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) offline=1 ;;
    --print) print_only=1 ;;
    --archive) [ $# -ge 2 ] || die "--archive needs a directory"; archive=$2; shift ;;
    --base) [ $# -ge 2 ] || die "--base needs an image"; base=$2; shift ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift ;;
    --registry) [ $# -ge 2 ] || die "--registry needs a prefix"; REGISTRY=$2; shift ;;
    --engine) [ $# -ge 2 ] || die "--engine needs docker or buildah"; engine=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      [[ " ${ALL_COMPONENTS[*]} " == *" $1 "* ]] || die "unknown component $1 (${ALL_COMPONENTS[*]})"
      components+=("$1") ;;
  esac
  shift
done
[ ${#components[@]} -gt 0 ] || components=("${ALL_COMPONENTS[@]}")
[ "$offline" = 0 ] || [ -z "$base" ] || die "--offline and --base exclude each other"

# Host Python: the project's venv when there is one (it has pip, setuptools and wheel).
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python
else PY=python3
fi

version() {
  "$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml"
}
if [ "$print_only" = 1 ]; then
  for c in "${components[@]}"; do echo "$c $REGISTRY/$c:${tag:-$(version)}"; done
  exit 0
fi

if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v buildah >/dev/null 2>&1; then
    engine=buildah
  else
    die "no engine: no Docker daemon answers and buildah is missing (bash images/ci-deps.sh)"
  fi
fi
case "$engine" in
  docker) ;;
  buildah) ;;
  *) die "--engine must be docker or buildah" ;;
esac

image_exists() {
  if [ "$engine" = docker ]; then docker image inspect "$1" >/dev/null 2>&1
  else buildah inspect --type image "$1" >/dev/null 2>&1
  fi
}

# build_image CONTEXT TAG [engine args...]: the engine's build, layer cache on.
build_image() {
  local context=$1 name=$2; shift 2
  if [ "$engine" = docker ]; then
    DOCKER_BUILDKIT=1 docker build --quiet -t "$name" "$@" "$context" >/dev/null
  else
    buildah bud --quiet --isolation chroot --layers -t "$name" "$@" "$context" >/dev/null
  fi
}

image_size_mb() {
  local bytes
  if [ "$engine" = docker ]; then bytes=$(docker image inspect -f '{{.Size}}' "$1")
  else bytes=$(buildah inspect --type image -f '{{.ImageSize}}' "$1" 2>/dev/null || echo 0)
    if [ "$bytes" = 0 ] || [ -z "$bytes" ]; then
      # Older buildah has no .ImageSize: sum the layers' uncompressed sizes.
      bytes=$(buildah images --noheading --format '{{.Size}}' "$1" | head -1)
      echo "$bytes"; return
    fi
  fi
  "$PY" -c "import sys; print(f'{int(sys.argv[1]) / 1e6:.1f} MB')" "$bytes"
}

# write_if_changed SRC DEST: copy keeping DEST's mtime when the bytes are the same.
write_if_changed() { cmp -s "$1" "$2" || cp "$1" "$2"; }

mkdir -p "$CACHE"
# One build at a time per cache: the context directory is shared (two test runs, say).
exec 9>"$CACHE/.lock"
flock 9
CONTEXT=$CACHE/context
mkdir -p "$CONTEXT/wheels"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- base -------------------------------------------------------------------------------
if [ "$offline" = 1 ]; then
  base=$OFFLINE_BASE
  if ! image_exists "$base"; then
    tarball=$CACHE/$DEBIAN_SUITE-python3.tar
    if [ ! -f "$tarball" ]; then
      [ "$(id -u)" = 0 ] || die "--offline runs debootstrap, which needs root"
      command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (bash images/ci-deps.sh)"
      echo "images/build.sh: debootstrap $DEBIAN_SUITE (python3) into $CACHE, once" >&2
      rootfs=$CACHE/rootfs.tmp
      rm -rf "$rootfs"
      debootstrap --variant=minbase --include=python3,python3-venv "$DEBIAN_SUITE" "$rootfs" \
        "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        die "debootstrap failed, see $CACHE/debootstrap.log"
      tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
      mv "$tarball.tmp" "$tarball"
      rm -rf "$rootfs"
    fi
    basectx=$CACHE/base-context
    mkdir -p "$basectx"
    ln -f "$tarball" "$basectx/rootfs.tar" 2>/dev/null || cp "$tarball" "$basectx/rootfs.tar"
    cat >"$basectx/Containerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
EOF
    build_image "$basectx" "$base" -f "$basectx/Containerfile"
  fi
else
  base=${base:-$DEFAULT_BASE}
fi

# --- wheels -----------------------------------------------------------------------------
# knpy itself. Native when this Python has mypyc and setuptools (the dev venv) and a C compiler
# is here: the wheel of scripts/native_tree.py's tree, whose hot path mypyc compiled (setup.py;
# the tree and its build are shared with the benchmarks and tests/native). KNPY_NATIVE=0, or a
# host without them, builds the pure-Python wheel, from a copy of the working tree (an in-tree
# build would leave build/ behind, and stale build/lib files would leak into the wheel).
native=0
if [ "${KNPY_NATIVE:-1}" != 0 ] && command -v cc >/dev/null 2>&1 &&
  "$PY" -c 'import mypyc, setuptools' >/dev/null 2>&1; then
  native=1
elif [ "${KNPY_NATIVE:-1}" != 0 ]; then
  echo "build.sh: no mypyc or no C compiler here: knpy's wheel is pure Python (slower)" >&2
fi
src=$work/src
mkdir -p "$src"
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$src/"
for pkg in shared queueproxy activator autoscaler controlplane; do
  cp -r "$ROOT/$pkg" "$src/$pkg"
done
find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
# The wheel is kept by a hash of those sources: a warm build does not rebuild it.
src_key=$(cd "$src" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
knpy_dir=$CACHE/knpy-$src_key-native$native
if ! ls "$knpy_dir"/knpy-*.whl >/dev/null 2>&1; then
  rm -rf "$CACHE"/knpy-*
  if [ "$native" = 1 ]; then
    "$PY" "$ROOT/scripts/native_tree.py" --wheel "$work/knpy" >"$work/wheel.log" 2>&1 ||
      { cat "$work/wheel.log" >&2; die "building knpy's native wheel failed"; }
  else
    "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$work/knpy" "$src" >"$work/wheel.log" 2>&1 ||
      { cat "$work/wheel.log" >&2; die "building knpy's wheel failed"; }
  fi
  mkdir -p "$knpy_dir"
  cp "$work"/knpy/knpy-*.whl "$knpy_dir/"
fi
knpy_wheel=$(ls "$knpy_dir"/knpy-*.whl)

# Dependencies for the image's interpreter (CPython 3.11, glibc 2.36 as bookworm), downloaded
# once per pyproject.toml, and stripped of debug symbols. pip does not widen --platform to older manylinux tags: list them.
arch=$(uname -m)
# linux_$arch: knpy's own wheel when native (a local build, tagged for this platform only).
platforms=(--platform "manylinux2014_$arch" --platform "linux_$arch")
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
deps_key=$(cat "$ROOT/pyproject.toml" "$ROOT/images/strip_wheels.py" | sha256sum | cut -c1-16)
deps_dir=$CACHE/wheels-$deps_key-$arch
if [ ! -f "$deps_dir/.complete" ]; then
  rm -rf "$deps_dir"
  "$PY" -m pip download --quiet --dest "$deps_dir" --only-binary=:all: \
    --python-version "$TARGET_PYTHON" --implementation cp --abi "cp${TARGET_PYTHON/./}" \
    "${platforms[@]}" "$knpy_wheel" >"$work/download.log" 2>&1 ||
    { cat "$work/download.log" >&2; die "downloading the dependencies' wheels failed"; }
  rm -f "$deps_dir"/knpy-*.whl
  # Debug symbols out of the C extensions (uvloop: 13.6 MB -> 1.6 MB), once per download.
  "$PY" "$ROOT/images/strip_wheels.py" "$deps_dir"/*.whl >&2
  touch "$deps_dir/.complete"
fi
for whl in "$deps_dir"/*.whl; do
  write_if_changed "$whl" "$CONTEXT/wheels/$(basename "$whl")"
done
# Drop wheels of an older pyproject.toml.
for whl in "$CONTEXT"/wheels/*.whl; do
  [ -f "$deps_dir/$(basename "$whl")" ] || rm -f "$whl"
done
mkdir -p "$CONTEXT/knpy"
for whl in "$CONTEXT"/knpy/*.whl; do
  [ "$(basename "$whl")" = "$(basename "$knpy_wheel")" ] || rm -f "$whl"
done
write_if_changed "$knpy_wheel" "$CONTEXT/knpy/$(basename "$knpy_wheel")"

# eventing and functions: in the native wheel (its tree has every package), in no image.
printf '%s\n' shared queueproxy activator autoscaler controlplane eventing functions \
  >"$work/all.txt"
write_if_changed "$work/all.txt" "$CONTEXT/knpy/packages-all.txt"
for c in "${ALL_COMPONENTS[@]}"; do
  "$PY" "$ROOT/images/deps.py" --wheels "$CONTEXT/wheels" "$c" >"$work/req-$c.txt"
  "$PY" "$ROOT/images/deps.py" --packages "$c" >"$work/pkg-$c.txt"
  write_if_changed "$work/req-$c.txt" "$CONTEXT/wheels/requirements-$c.txt"
  write_if_changed "$work/pkg-$c.txt" "$CONTEXT/knpy/packages-$c.txt"
done
write_if_changed "$ROOT/images/strip-base.sh" "$CONTEXT/strip-base.sh"
write_if_changed "$ROOT/images/Containerfile" "$CONTEXT/Containerfile"

# --- images -----------------------------------------------------------------------------
version=$(version)
tag=${tag:-$version}
revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && ! git -C "$ROOT" diff --quiet HEAD -- pyproject.toml shared \
    queueproxy activator autoscaler controlplane 2>/dev/null; then
  revision=$revision-dirty
fi
created=$(git -C "$ROOT" log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)
[ -z "$archive" ] || mkdir -p "$archive"

for c in "${components[@]}"; do
  name=$REGISTRY/$c:$tag
  start=$(date +%s.%N)
  build_image "$CONTEXT" "$name" -f "$CONTEXT/Containerfile" --target "$c" \
    --build-arg "BASE=$base" --build-arg "COMPONENT=$c" --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
    --build-arg "BASE_NAME=$base" || die "building $name failed"
  if [ -n "$archive" ]; then
    rm -f "$archive/$c.tar"
    if [ "$engine" = docker ]; then
      docker save -o "$archive/$c.tar" "$name"
    else
      buildah push --quiet "$name" "oci-archive:$archive/$c.tar:$name" >/dev/null
    fi
  fi
  secs=$("$PY" -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$start")
  printf '%-12s %-40s %10s %6ss\n' "$c" "$name" "$(image_size_mb "$name")" "$secs"
done
}

# exit on the same line: bash reads a script as it goes, so after main returned it would
# otherwise read on from this offset of a file edited meanwhile (and run what is there).
main "$@"; exit
