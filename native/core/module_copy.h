// The private copy a rewrite (fold, tune, toHalf) works on.
#pragma once

#include <torch/script.h>

#include "module.h"

namespace torchfold::core {

// A copy with its own compilation unit, class types and method graphs, so a
// rewrite of it cannot reach `module`, and with the class names of `module`
// (never mangled), so the same input always gives the same saved bytes: the
// copy saves exactly as a serializer round trip of `module` would. Tensors
// are copied once each, with their aliasing (tied weights, views) kept.
// `module` is only read; it may be running on another thread.
ModulePtr private_copy(const torch::jit::Module& module);

}  // namespace torchfold::core
