// The channels_last layout for a FROZEN module: every constant 4-d float
// convolution weight is stored channels_last, and every 4-d tensor argument of
// the root's methods is made channels_last on entry (`if x.dim() == 4`; other
// ranks pass unchanged). oneDNN's convolutions then run without reordering
// between NCHW and its blocked layouts, which helps depthwise-heavy networks
// most (EfficientNet, MobileNet). Values are unchanged: only strides differ,
// and a 4-d output may come back channels_last (torchfold reads tensors by
// value, whatever their strides). The copy saves and loads like any module
// (strides are part of the saved tensors) and runs in any libtorch.
// The input module is not modified (clone(): own graphs, shared constants).
#pragma once

#include <torch/script.h>

#include "module.h"

namespace torchfold::core {

struct ChannelsLast {
  ModulePtr module;
  int weights = 0;  // convolution weights now channels_last
  int inputs = 0;   // method arguments converted on entry
};

ChannelsLast channels_last_variant(const torch::jit::Module& frozen);

}  // namespace torchfold::core
