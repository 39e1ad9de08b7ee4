// One way to turn failures into JS errors: a TorchfoldError built by the JS
// factory registered at start-up (so it is a real instance of the public class),
// with a stable `code`.
#pragma once

#include <napi.h>

#include <string>

#include "../core/error.h"

namespace torchfold::addon {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);
Napi::Error make_error(Napi::Env env, const core::Error& error);

// Runs fn on the JS thread; a core or libtorch failure is thrown as a TorchfoldError.
template <typename F>
auto guard_sync(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw make_error(env, core::describe_current_exception());
  }
}

// Throws a JS TypeError for a bad argument to a native entry point.
[[noreturn]] void throw_type_error(Napi::Env env, const std::string& message);

}  // namespace torchfold::addon
