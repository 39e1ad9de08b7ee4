// JS values <-> core::Value, on the JS thread only. Tensors cross as
// TensorWrap objects; everything else is copied.
#pragma once

#include <napi.h>

#include <vector>

#include "../core/module.h"
#include "../core/value.h"

namespace torchfold::addon {

core::Value to_core_value(Napi::Env env, const Napi::Value& value, int depth = 0);
std::vector<core::Value> to_core_values(Napi::Env env, const Napi::Array& values);
Napi::Value to_js_value(Napi::Env env, const core::Value& value);

Napi::Array to_js_shape(Napi::Env env, const std::vector<int64_t>& shape);
Napi::Array to_js_tensor_infos(Napi::Env env, const std::vector<core::TensorInfo>& infos);
Napi::Array to_js_strings(Napi::Env env, const std::vector<std::string>& strings);
// The strings of a JS array (each element converted with ToString); empty for a non-array.
// A JS array holding convert(item) for each item, in order.
template <typename Items, typename Convert>
Napi::Array to_js_array(Napi::Env env, const Items& items, Convert convert) {
  Napi::Array out = Napi::Array::New(env, items.size());
  uint32_t i = 0;
  for (const auto& item : items) out.Set(i++, convert(item));
  return out;
}

std::vector<std::string> from_js_strings(Napi::Value value);

// Argument helpers for native entry points: a JS TypeError when the type is wrong.
std::string string_arg(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace torchfold::addon
