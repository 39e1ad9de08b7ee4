// What the benchmark needs from libtorch and nothing else does: libtorch's own
// conv-BN transforms run as peers on the same module, a forward loop timed
// inside C++ (no JS between calls, to measure the addon's overhead), and a
// float64 copy of a module for reference outputs. Not part of the public API.
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "module.h"
#include "value.h"

namespace torchfold::core {

struct PeerResult {
  ModulePtr module;
  double build_ms = 0;
};

// kind: "fold_conv_bn" (torch::jit::FoldConvBatchNorm, the pass behind
// torch.jit's quantization prep), "freeze" (torch::jit::freeze, which folds
// conv-BN in frozen graphs) or "freeze_optimize" (freeze, then
// torch::jit::optimize_for_inference). Exported methods are preserved.
PeerResult peer_transform(const torch::jit::Module& module, const std::string& kind);

// Calls forward `warmup` times, then `iterations` times, timing each call
// with a steady clock; milliseconds per call.
std::vector<double> time_forward(const torch::jit::Module& module, const std::vector<Value>& inputs, int iterations,
                                 int warmup);

// A deep copy with every floating-point parameter and buffer cast to `dtype`
// ("float64" for a reference copy).
ModulePtr module_to_dtype(const torch::jit::Module& module, const std::string& dtype);

}  // namespace torchfold::core
