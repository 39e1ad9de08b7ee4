// Phase two of a fuse: applies an Analysis to the module it was made on
// (always a clone of the caller's module). For each folded pair the
// operator's weight and bias attributes get the folded tensors, and the
// normalization (the module call, or the aten::batch_norm node) is removed
// from the graph that holds it; dead code is then eliminated. A folded norm
// module that nothing reads any more is replaced by an empty Identity module
// under the same name (its parameters and buffers leave the module). Other
// module paths, parameter names and method signatures stay as they were.
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "analyze.h"

namespace torchfold::core {

struct TransformStats {
  int folded = 0;  // pairs folded
  int graphs_changed = 0;
  // Folded norm modules replaced by empty torchfold.Identity modules (their
  // parameters and buffers gone), by path.
  std::vector<std::string> dropped_norms;
};

// With `exact`, the float64 values of every folded weight and bias are
// recorded there for later folds in the same run.
TransformStats apply_folds(torch::jit::Module& module, Analysis& analysis, ExactParams* exact = nullptr);

}  // namespace torchfold::core
