#!/usr/bin/env bash
# Build the repository's Dockerfile and run `fo-edge demo` inside the image, as its non-root user, offline;
# check the demo's output; print the image size and the build and run times; remove every image it made.
#
#     bash tools/container_check.sh
#
# Engine: docker when its daemon answers, else podman (installed from apt when missing) with runc as the
# runtime and rlimits of at most 1024 open files and processes, never above the machine's (crun fails on hybrid
# cgroups; runc refuses to set the container's rlimits to the machine's own high values). Base:
# python:3.11-slim when a registry serves it, else Debian bookworm from debootstrap (--variant=minbase),
# imported as a local image. pip inside the build gets the machine's CA bundle (the file `pip config` names
# as cert, for the TLS proxy these machines use) and its find-links folder (where the CPU torch wheel lies),
# both mounted read-only, and the host's network. Exit 0: the image built and the demo passed; 1: the image
# or the demo failed (the log says which step); 3: this machine cannot build containers at all (no engine
# and no apt to install one, or no base image), said in one line.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="localhost/fo-edge-check:$$"
base_tag=""
work="$(mktemp -d)"
made=()
engine=()
say() { printf 'container check: %s\n' "$*"; }
cannot() { say "CANNOT RUN: $*"; exit 3; }

cleanup() {
  if [ ${#engine[@]} -gt 0 ]; then
    for image in "${made[@]}"; do "${engine[@]}" rmi -f "$image" >/dev/null 2>&1 || true; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. the engine
if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
  engine=(docker)
  run_opts=()
else
  if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || cannot "no docker daemon, no podman, and no apt-get to install it"
    say "installing podman and runc from apt"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc) \
      >"$work/apt.log" 2>&1 || cannot "apt-get install podman runc failed: $(tail -1 "$work/apt.log")"
  fi
  engine=(podman --runtime runc)
  low() { local v; v="$(ulimit "$1")"; if [ "$v" = unlimited ] || [ "$v" -gt 1024 ]; then echo 1024; else echo "$v"; fi; }
  nofile="$(low -Sn)"; nproc="$(low -Su)"
  run_opts=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
fi
say "engine: ${engine[*]}"

# 2. the base image
base="python:3.11-slim"
if ! timeout 120 "${engine[@]}" pull -q "$base" >/dev/null 2>&1; then
  say "no registry serves $base here: building a Debian bookworm base with debootstrap"
  if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || cannot "no registry and no debootstrap"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap) \
      >"$work/apt.log" 2>&1 || cannot "apt-get install debootstrap failed: $(tail -1 "$work/apt.log")"
  fi
  debootstrap --variant=minbase bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 \
    || cannot "debootstrap bookworm failed: $(tail -1 "$work/debootstrap.log")"
  base_tag="localhost/fo-edge-check-base:$$"
  tar -C "$work/rootfs" -c . | "${engine[@]}" import - "$base_tag" >/dev/null 2>&1 \
    || cannot "importing the debootstrapped base failed"
  made+=("$base_tag")
  base="$base_tag"
  rm -rf "$work/rootfs"
fi
say "base: $base"

# 3. build: with podman, this machine's pip CA bundle and CPU-torch wheel folder are mounted into the build when
# it has them (docker build cannot mount: there the Dockerfile's defaults apply, as on any Docker machine)
pip_value() {
  { python3 -m pip config list 2>/dev/null || pip3 config list 2>/dev/null || true; } \
    | sed -n "s/^[a-z:.]*$1='\\(.*\\)'$/\\1/p" | head -1
}
build_args=(--build-arg "BASE=$base")
mounts=()
if [ "${engine[0]}" = podman ]; then
  cert="$(pip_value cert)"
  links="$(pip_value find-links)"
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    mounts+=(-v "$cert:/run/fo-edge-ca.crt:ro")
    build_args+=(--build-arg CA_BUNDLE=/run/fo-edge-ca.crt)
  fi
  if [ -n "$links" ] && [ -d "$links" ] && ls "$links"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    mounts+=(-v "$links:/run/fo-edge-wheels:ro")
    build_args+=(--build-arg FIND_LINKS=/run/fo-edge-wheels --build-arg TORCH_INDEX=)
  fi
fi
say "building $tag (${build_args[*]})"
start=$(date +%s)
build() { "${engine[@]}" build --network host "${mounts[@]}" "${build_args[@]}" -t "$tag" . >"$work/build.log" 2>&1; }
if ! build; then  # once more: the build downloads from package registries, and a network hiccup is not the image's
  say "the build failed ($(tail -1 "$work/build.log")); retrying once"
  if ! build; then
    tail -20 "$work/build.log"
    say "FAILED: the image did not build (twice)"
    exit 1
  fi
fi
made+=("$tag")
build_s=$(( $(date +%s) - start ))

# 4. run the demo offline, as the image's user, and check what it prints
start=$(date +%s)
user="$("${engine[@]}" run --rm --network none "${run_opts[@]}" --entrypoint id "$tag" -u)"
if ! "${engine[@]}" run --rm --network none "${run_opts[@]}" "$tag" demo >"$work/demo.log" 2>&1; then
  tail -20 "$work/demo.log"
  say "FAILED: fo-edge demo exited non-zero in the container"
  exit 1
fi
run_s=$(( $(date +%s) - start ))
cat "$work/demo.log" | tr '\r' '\n' | grep -v '^\s*$' | grep -v 'training on mcu-int8' || true
fail=0
[ "$user" != 0 ] || { say "FAILED: the demo ran as root"; fail=1; }
[ "$(grep -c 'verified in onnxruntime' "$work/demo.log")" = 2 ] || { say "FAILED: not both exports verified"; fail=1; }
for field in "test accuracy" "energy / training sample" "peak device memory"; do
  grep -q "$field" "$work/demo.log" || { say "FAILED: the demo printed no '$field'"; fail=1; }
done
accuracy="$(sed -n 's/^test accuracy *\([0-9.]*\) %.*/\1/p' "$work/demo.log" | head -1)"
python3 -c "import sys; sys.exit(0 if float('${accuracy:-0}') >= 80 else 1)" \
  || { say "FAILED: demo accuracy ${accuracy:-?} % below 80 %"; fail=1; }
size="$("${engine[@]}" image inspect --format '{{.Size}}' "$tag")"
say "image $tag: $(( size / 1048576 )) MiB; build ${build_s} s; demo run ${run_s} s (uid $user, no network)"
[ "$fail" = 0 ] || exit 1
say "passed: the demo trained, accounted and exported both verified models inside the container"
