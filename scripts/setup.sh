#!/usr/bin/env bash
# Makes a fresh Debian/Ubuntu machine ready to build and run torchfold.
#
#   bash scripts/setup.sh          what `npm run demo` needs:
#     1. system packages: a C++ toolchain, CMake, zlib1g-dev, clang-format (the C++ lint)
#     2. the default libtorch, 2.x: pip's CPU wheel (torch==2.13.0+cpu) unpacked into
#        .libtorch/cpu, a folder of this clone (no root needed). Skipped when LIBTORCH is set:
#        that one is used instead (LIBTORCH=system: Debian's libtorch-dev 1.13, installed if missing).
#     3. npm ci, when node_modules is missing or older than package-lock.json
#     4. the addon (cmake-js, into build/) and the TypeScript (tsc)
#   bash scripts/setup.sh --all    also what the tests, benchmarks and stress runs need:
#     5. Debian's libtorch-dev 1.13.1, python3-torch and python3-torchvision 1.13 (the
#        1.13 fixtures) and patchelf (skip the Python ones with TORCHFOLD_NO_FIXTURE_DEPS=1)
#     6. pip's torch==2.14.1 (the CUDA 13 build, with its nvidia-* wheels) and
#        torchvision==0.29.1 into .libtorch/cuda: PyTorch 2.x for the 2.x fixtures, and a
#        CUDA libtorch to link against
#     7. the addon against each of those: build-debian/ (1.13.1) and build-cuda/ (2.14.1)
# Idempotent: on a ready machine it only checks, and takes a few seconds. A build whose
# libtorch is not the one the locator now finds is rebuilt from scratch.
# Installs with apt-get only as root; otherwise prints the exact command.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }

ALL=0
for arg in "$@"; do
  case "$arg" in
    --all) ALL=1 ;;
    *) say "unknown option $arg (usage: bash scripts/setup.sh [--all])"; exit 2 ;;
  esac
done

# The default libtorch, and the PyTorch 2.x the tests use. pip takes them from the package
# indexes this machine is configured with (pip config list); --retries 0 keeps an unreachable
# public index from costing minutes.
CPU_TORCH=2.13.0+cpu
CUDA_TORCH=2.14.1
CUDA_TORCHVISION=0.29.1
CUDA_WHEELS=(nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
  nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
  nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
  numpy filelock typing-extensions sympy mpmath networkx jinja2 markupsafe fsspec pillow)

missing_packages() {
  local pkgs=()
  command -v g++ >/dev/null 2>&1 || pkgs+=(g++)
  command -v cc >/dev/null 2>&1 || pkgs+=(gcc)  # test/memory.test.ts builds a tiny probe addon
  command -v make >/dev/null 2>&1 || pkgs+=(make)
  command -v cmake >/dev/null 2>&1 || pkgs+=(cmake)
  command -v clang-format >/dev/null 2>&1 || pkgs+=(clang-format)  # npm run lint checks the C++ layout
  [ -f /usr/include/zlib.h ] || pkgs+=(zlib1g-dev)
  # Debian's libtorch 1.13.1: the second generation every test runs against, or the one asked for.
  if [ "$ALL" = 1 ] || [ "${LIBTORCH:-}" = system ]; then
    LIBTORCH=system node scripts/libtorch.js --check >/dev/null 2>&1 || pkgs+=(libtorch-dev)
  fi
  if [ "$ALL" = 1 ]; then
    if [ "${TORCHFOLD_NO_FIXTURE_DEPS:-0}" != 1 ] &&
       ! /usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1; then
      pkgs+=(python3-torch python3-torchvision)
    fi
    # The tests arrange native-load faults by editing a copy of the prebuild's ELF dependencies.
    command -v patchelf >/dev/null 2>&1 || pkgs+=(patchelf)
  fi
  echo "${pkgs[@]:-}"
}

install_packages() {
  local pkgs
  pkgs=$(missing_packages)
  [ -z "$pkgs" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "missing system packages: $pkgs"
    say "run as root:  apt-get update && apt-get install -y $pkgs"
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: $pkgs, and this is not a Debian/Ubuntu system (no apt-get)."
    node scripts/libtorch.js --check || true
    exit 1
  fi
  say "installing $pkgs (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $pkgs >/dev/null
}

npm_install() {
  if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
    return 0
  fi
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
}

# pip_into DIR PACKAGE...: installs wheels into DIR (made whole, then renamed into place).
pip_into() {
  local dir=$1; shift
  local py
  py=$(command -v python3 || true)
  if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
    say "cannot install $* into $dir: no python3 with pip on PATH."
    say "Install pip (apt-get install -y python3-pip), or set LIBTORCH to a libtorch you have (LIBTORCH=system for Debian's libtorch-dev)."
    exit 1
  fi
  rm -rf "$dir.partial"
  if ! "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --retries 0 --timeout 5 --no-deps \
      --target "$dir.partial" "$@"; then
    rm -rf "$dir.partial"
    say "pip could not install $* (see above). pip needs a package index that has them (pip config list);"
    say "or set LIBTORCH to a libtorch you have (LIBTORCH=system for Debian's libtorch-dev 1.13)."
    exit 1
  fi
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

has_torch() { # DIR VERSION
  grep -qF "__version__ = '$2'" "$1/torch/version.py" 2>/dev/null
}

install_default_libtorch() {
  if [ -n "${LIBTORCH:-}" ]; then return 0; fi
  has_torch .libtorch/cpu "$CPU_TORCH" && return 0
  say "installing the default libtorch: torch==$CPU_TORCH (pip's CPU wheel) into .libtorch/cpu"
  pip_into .libtorch/cpu "torch==$CPU_TORCH"
}

install_cuda_torch() {
  has_torch .libtorch/cuda "$CUDA_TORCH+cu130" && return 0
  say "installing PyTorch $CUDA_TORCH (CUDA 13 build) and torchvision $CUDA_TORCHVISION into .libtorch/cuda"
  pip_into .libtorch/cuda "torch==$CUDA_TORCH" "torchvision==$CUDA_TORCHVISION" "${CUDA_WHEELS[@]}"
}

# build_addon OUT [LIBTORCH]: the addon in OUT/Release, built with cmake-js against the
# libtorch the locator finds (with LIBTORCH set to the second argument when given), and
# its record (OUT/Release/torchfold.node.json) beside it.
build_addon() {
  local out=$1 lt=${2-${LIBTORCH:-}}
  local addon=$out/Release/torchfold.node
  local want have
  want=$(LIBTORCH=$lt node scripts/libtorch.js --field root)
  have=$(node -e 'try { process.stdout.write(require(process.argv[1]).libtorch.root || "") } catch {}' "$PWD/$addon.json")
  # .built is stamped with the time the last successful build started, so a source
  # edited during a build is built again next time.
  if [ -f "$addon" ] && [ "$want" = "$have" ] && [ -f "$out/.built" ] &&
     [ -z "$(find native CMakeLists.txt scripts/libtorch.js -newer "$out/.built" -print -quit)" ]; then
    return 0
  fi
  # Another libtorch than last time: CMake's cache holds the old one's paths.
  if [ "$want" != "$have" ]; then rm -rf "$out"; fi
  say "building the addon against $(LIBTORCH=$lt node scripts/libtorch.js --check) (cmake-js, into $out/)"
  mkdir -p "$out"
  touch "$out/.started"
  LIBTORCH=$lt npx --no-install cmake-js compile --out "$out" --log-level warn --CDTORCHFOLD_WERROR=ON
  mv "$out/.started" "$out/.built"
  LIBTORCH=$lt node scripts/libtorch.js --record "$addon" >/dev/null
}

build_ts() {
  if [ -f dist/index.mjs ] && [ -z "$(find lib tsconfig.json scripts/build-esm.js -newer dist/index.mjs -print -quit)" ]; then
    return 0
  fi
  say "compiling TypeScript"
  npx --no-install tsc -p tsconfig.json
  node scripts/build-esm.js  # dist/index.mjs, the ES module entry
  chmod +x dist/cli/main.js  # the `torchfold` bin (npx torchfold)
}

install_packages
install_default_libtorch
say "default: $(node scripts/libtorch.js --check)"
npm_install
build_addon build
build_ts
if [ "$ALL" = 1 ]; then
  install_cuda_torch
  build_addon build-debian system
  build_addon build-cuda "$PWD/.libtorch/cuda/torch"
fi
say "ready"
