#!/usr/bin/env bash
# The GPU check: builds torchfold against the GPU machine's own PyTorch (a CUDA
# libtorch), runs the CUDA tests, and runs a short CUDA benchmark (ResNet-50,
# batch 1 and 32, float32 and float16: fold, optimize). Under 8 minutes on one
# H100 with 16 cores.
#
# Prepare here, run there (the machine has no Node and reaches no registry):
#   node scripts/gpu/pack.js                       # .gpu/: node and the packages the check needs
#   npm run build:ts                               # dist/
#   device run, carry [".gpu", "dist"]:  bash scripts/gpu-check.sh
# It also runs on any Linux machine with a CUDA PyTorch and Node (then .gpu/ is
# not needed). Results: $OUT (or .tmp/gpu-out) gets gpu-check.md, the table
# that goes into the README, and the benchmark's JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
out=${OUT:-$PWD/.tmp/gpu-out}
work=$PWD/.tmp/gpu
mkdir -p "$out" "$work"
say() { printf 'gpu-check [%3ss]: %s\n' "$(($(date +%s) - started))" "$*"; }

# 1. Node and the packages, from .gpu/ when this machine has none.
if ! command -v node >/dev/null 2>&1; then
  [ -f .gpu/node.xz ] || { say "no node here and no .gpu/node.xz (run node scripts/gpu/pack.js first)"; exit 1; }
  mkdir -p .gpu/bin
  xz -dc .gpu/node.xz > .gpu/bin/node
  chmod +x .gpu/bin/node
  export PATH=$PWD/.gpu/bin:$PATH
fi
if [ ! -d node_modules/vitest ]; then
  [ -f .gpu/modules.tar.xz ] || { say "no node_modules and no .gpu/modules.tar.xz"; exit 1; }
  tar -xJf .gpu/modules.tar.xz
fi
[ -f dist/index.js ] || { say "no dist/ (npm run build:ts here, then carry it)"; exit 1; }
say "node $(node --version)"

# 2. The machine's own PyTorch as libtorch.
python=${PYTHON:-python3}
LIBTORCH=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export LIBTORCH
say "$(node scripts/libtorch.js --check); $("$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu-check: /' || true

# 3. Build with CMake (cmake-js's part is only to name Node's headers: node-api-headers has them).
build=$PWD/build-gpu
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$build/Release" \
  -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" >"$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >>"$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log"; exit 1; }
addon=$build/Release/torchfold.node
node scripts/libtorch.js --record "$addon" >/dev/null
export TORCHFOLD_ADDON=$addon
say "built $(node -e 'const v = require("./dist").versions; console.log(`libtorch ${v.libtorch}, CUDA build ${v.cudaBuild}, CUDA available ${require("./dist").cuda.isAvailable()}`)')"

# 4. Fixtures and the benchmark model, made by this machine's PyTorch.
"$python" scripts/gpu/models.py "$work" >"$out/models.log" 2>&1 || { tail -20 "$out/models.log"; exit 1; }
if [ ! -e test/fixtures ]; then ln -s "$work/fixtures" test/fixtures; fi
say "fixtures made"

# 5. The CUDA tests.
NO_COLOR=1 node node_modules/vitest/vitest.mjs run test/cuda.test.ts 2>&1 | tee "$out/cuda-tests.log" | tail -15
tests=${PIPESTATUS[0]}
say "CUDA tests exit $tests"

# 6. The CUDA benchmark.
node bench/gpu.js "$work/resnet50_scripted.pt" --batches 1,32 --iterations 30 --json "$out/gpu-bench.json" | tee "$out/gpu-bench.md"
say "done in $(($(date +%s) - started)) s"
{
  echo "GPU check, $(date -u +%Y-%m-%dT%H:%MZ): $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  echo "CUDA tests: exit $tests ($(grep -E '^ +Tests' "$out/cuda-tests.log" | tr -s ' '))"
  echo
  cat "$out/gpu-bench.md"
} >"$out/gpu-check.md"
exit "$tests"
