// Inference variants of a module for optimize(): freezing (attributes become
// constants, exported methods preserved) and, on top, libtorch's
// optimize_for_inference (oneDNN convolutions and friends). Each variant is
// checked for a save/load round trip, because some optimized modules cannot
// be serialized (oneDNN tensor constants); the caller decides what to do.
#pragma once

#include <torch/script.h>

#include <string>

#include "module.h"

namespace torchfold::core {

struct Variant {
  ModulePtr module;
  bool saveable = true;
  std::string save_error;  // why it cannot be saved and loaded back
  double build_ms = 0;
};

// `optimize_for_inference` false: torch::jit::freeze only. The module must
// be in eval mode (ERR_INVALID_ARG otherwise). Every method is preserved.
Variant inference_variant(const torch::jit::Module& module, bool optimize_for_inference);

}  // namespace torchfold::core
