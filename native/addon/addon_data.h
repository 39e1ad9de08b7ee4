// Per-environment state: one instance per Node environment (main thread or a
// worker_thread), so no N-API reference is ever shared between environments.
#pragma once

#include <napi.h>

#include <memory>

#include "completions.h"

namespace torchfold::addon {

struct AddonData {
  Napi::FunctionReference module_ctor;
  Napi::FunctionReference tensor_ctor;
  Napi::FunctionReference error_factory;     // (message, code) => TorchfoldError
  std::shared_ptr<Completions> completions;  // results of compute threads come back here
};

AddonData& addon_data(Napi::Env env);

}  // namespace torchfold::addon
