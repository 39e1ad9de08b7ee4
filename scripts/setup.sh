#!/usr/bin/env bash
# Makes a fresh Debian/Ubuntu machine ready to build, run and test torchfold:
#   1. system packages: a C++ toolchain, CMake, zlib1g-dev and clang-format (the
#      C++ lint); libtorch-dev when no libtorch is found (scripts/libtorch.js
#      decides); python3-torch, python3-torchvision and patchelf for the tests
#      (skip with TORCHFOLD_NO_FIXTURE_DEPS=1)
#   2. npm ci, when node_modules is missing or older than package-lock.json
#   3. the addon (cmake-js, incremental) and the TypeScript (tsc)
# Idempotent: on a ready machine it only checks, and takes a few seconds.
# Installs with apt-get only as root; otherwise prints the exact command.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }

missing_packages() {
  local pkgs=()
  command -v g++ >/dev/null 2>&1 || pkgs+=(g++)
  command -v cc >/dev/null 2>&1 || pkgs+=(gcc)  # test/memory.test.ts builds a tiny probe addon
  command -v make >/dev/null 2>&1 || pkgs+=(make)
  command -v cmake >/dev/null 2>&1 || pkgs+=(cmake)
  command -v clang-format >/dev/null 2>&1 || pkgs+=(clang-format)  # npm run lint checks the C++ layout
  if ! node scripts/libtorch.js --check >/dev/null 2>&1; then pkgs+=(libtorch-dev); fi
  [ -f /usr/include/zlib.h ] || pkgs+=(zlib1g-dev)
  if [ "${TORCHFOLD_NO_FIXTURE_DEPS:-0}" != 1 ] &&
     ! /usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1; then
    pkgs+=(python3-torch python3-torchvision)
  fi
  # The tests arrange native-load faults by editing a copy of the prebuild's ELF dependencies.
  if [ "${TORCHFOLD_NO_FIXTURE_DEPS:-0}" != 1 ] && ! command -v patchelf >/dev/null 2>&1; then pkgs+=(patchelf); fi
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

build_addon() {
  local out=build/Release/torchfold.node
  if [ -f "$out" ] && [ -z "$(find native CMakeLists.txt scripts/libtorch.js -newer "$out" -print -quit)" ]; then
    return 0
  fi
  say "building the addon (cmake-js)"
  npx --no-install cmake-js compile --out build --log-level warn
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
say "$(node scripts/libtorch.js --check)"
npm_install
build_addon
build_ts
say "ready"
