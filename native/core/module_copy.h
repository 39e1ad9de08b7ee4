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
//
// With `share_storages`, the copy's tensors are new tensor objects that still
// view `module`'s storages: for a rewrite that replaces most of them anyway
// (fold writes new weights), copying them first would be wasted time and
// memory. Such a copy must only be read until unshare_storages() has run on
// it, which copies whatever still shares a storage with `module`.
ModulePtr private_copy(const torch::jit::Module& module, bool share_storages = false);

// Gives every tensor attribute of `copy` that views a storage of `original`
// its own copy of that storage (one copy per storage, offsets, sizes, strides
// and sharing kept). Tensors `copy` got elsewhere are left alone.
void unshare_storages(torch::jit::Module& copy, const torch::jit::Module& original);

}  // namespace torchfold::core
