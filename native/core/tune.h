// Tune mode (efficient conv-bn in eval, arXiv 2305.11624): instead of
// folding, each conv -> BatchNorm pair is rewritten so both modules keep
// their parameters and buffers, and the graph branches on the BatchNorm's
// `training` flag:
//   training: the original conv call, then the original BatchNorm call;
//   eval:     s = gamma * rsqrt(running_var + eps)      (per output channel)
//             W' = W * s,  B' = (B - running_mean) * s + beta
//             one convolution with (W', B'), computed from the live
//             parameters, so gradients reach W, B, gamma and beta.
// The result stays trainable in PyTorch and runs one convolution per pair in
// eval mode.
//
// A pair qualifies when the BatchNorm is a module call, and the value it
// normalizes is made in the same block of the same graph either by the
// convolution op itself or by a call of the conv module whose forward is
// nothing but that convolution on its input (so padding modes other than
// zeros, which pad first, are left alone).
#pragma once

#include <torch/script.h>

#include <optional>
#include <string>

#include "analyze.h"

namespace torchfold::core {

// Why a pair cannot be rewritten in tune mode, or nothing if it can.
std::optional<std::string> tune_problem(const ProgramView& view, const Pair& p);

// Rewrites every pair the analysis (made with tune = true) marked to fold.
// Returns the number of pairs rewritten.
int apply_tune(torch::jit::Module& module, Analysis& analysis);

}  // namespace torchfold::core
