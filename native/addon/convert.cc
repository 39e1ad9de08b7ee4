#include "convert.h"

#include "addon_data.h"
#include "errors.h"
#include "tensor_wrap.h"

namespace torchfold::addon {

namespace {
constexpr int kMaxDepth = 64;
}

core::Value to_core_value(Napi::Env env, const Napi::Value& v, int depth) {
  if (depth > kMaxDepth) throw_type_error(env, "Inputs nest deeper than 64 levels (a cycle?)");
  if (v.IsUndefined() || v.IsNull()) return core::Value::none();
  if (v.IsBoolean()) return core::Value::of_bool(v.As<Napi::Boolean>().Value());
  if (v.IsNumber()) return core::Value::of_double(v.As<Napi::Number>().DoubleValue());
  if (v.IsBigInt()) {
    bool lossless = false;
    int64_t i = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throw_type_error(env, "Expected a bigint within int64 range");
    return core::Value::of_int(i);
  }
  if (v.IsString()) return core::Value::of_string(v.As<Napi::String>().Utf8Value());
  if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    std::vector<core::Value> items;
    items.reserve(a.Length());
    for (uint32_t i = 0; i < a.Length(); ++i) items.push_back(to_core_value(env, a.Get(i), depth + 1));
    return core::Value::of_items(core::Value::Kind::List, std::move(items));
  }
  if (v.IsObject()) {
    Napi::Object o = v.As<Napi::Object>();
    if (TensorWrap* t = TensorWrap::FromObject(env, o)) return core::Value::of_tensor(t->tensor(env));
    if (v.IsTypedArray() || v.IsArrayBuffer()) {
      throw_type_error(env, "Expected a Tensor but received a typed array; wrap it with Tensor.from()");
    }
    core::Value out;
    out.kind = core::Value::Kind::Dict;
    Napi::Array keys = o.GetPropertyNames();  // own enumerable string keys, "__proto__" included
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      Napi::Value key = keys.Get(i);
      out.entries.emplace_back(core::Value::of_string(key.ToString().Utf8Value()),
                               to_core_value(env, o.Get(key), depth + 1));
    }
    return out;
  }
  throw_type_error(env, "Cannot pass a " + std::string(v.IsFunction() ? "function" : "symbol") + " to TorchScript");
}

std::vector<core::Value> to_core_values(Napi::Env env, const Napi::Array& values) {
  std::vector<core::Value> out;
  out.reserve(values.Length());
  for (uint32_t i = 0; i < values.Length(); ++i) out.push_back(to_core_value(env, values.Get(i)));
  return out;
}

namespace {

Napi::Value int_to_js(Napi::Env env, int64_t i) {
  constexpr int64_t kSafe = 9007199254740991LL;  // Number.MAX_SAFE_INTEGER
  if (i >= -kSafe && i <= kSafe) return Napi::Number::New(env, static_cast<double>(i));
  return Napi::BigInt::New(env, i);
}

Napi::Value dict_to_js(Napi::Env env, const core::Value& v) {
  bool string_keys = true;
  for (const auto& e : v.entries) string_keys = string_keys && e.first.kind == core::Value::Kind::String;
  if (string_keys) {
    Napi::Object o = Napi::Object::New(env);
    // Defined, not assigned: a key named "__proto__" must stay a key.
    for (const auto& [key, value] : v.entries) {
      o.DefineProperty(Napi::PropertyDescriptor::Value(key.text, to_js_value(env, value), napi_default_jsproperty));
    }
    return o;
  }
  // Dicts with int (or other) keys keep their key types in a Map.
  Napi::Function map_ctor = env.Global().Get("Map").As<Napi::Function>();
  Napi::Object map = map_ctor.New({});
  Napi::Function set = map.Get("set").As<Napi::Function>();
  for (const auto& [key, value] : v.entries) {
    set.Call(map, {to_js_value(env, key), to_js_value(env, value)});
  }
  return map;
}

}  // namespace

Napi::Value to_js_value(Napi::Env env, const core::Value& v) {
  switch (v.kind) {
    case core::Value::Kind::None: return env.Null();
    case core::Value::Kind::Bool: return Napi::Boolean::New(env, v.boolean);
    case core::Value::Kind::Int: return int_to_js(env, v.integer);
    case core::Value::Kind::Double: return Napi::Number::New(env, v.number);
    case core::Value::Kind::String: return Napi::String::New(env, v.text);
    case core::Value::Kind::Tensor: return TensorWrap::Create(env, v.tensor);
    case core::Value::Kind::List:
    case core::Value::Kind::Tuple: {
      Napi::Array a = Napi::Array::New(env, v.items.size());
      for (size_t i = 0; i < v.items.size(); ++i) a.Set(static_cast<uint32_t>(i), to_js_value(env, v.items[i]));
      return a;
    }
    case core::Value::Kind::Dict: return dict_to_js(env, v);
  }
  return env.Undefined();
}

Napi::Array to_js_shape(Napi::Env env, const std::vector<int64_t>& shape) {
  Napi::Array a = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i)
    a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  return a;
}

Napi::Array to_js_tensor_infos(Napi::Env env, const std::vector<core::TensorInfo>& infos) {
  Napi::Array a = Napi::Array::New(env, infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", infos[i].name);
    o.Set("shape", to_js_shape(env, infos[i].shape));
    o.Set("dtype", infos[i].dtype);
    o.Set("device", infos[i].device);
    a.Set(static_cast<uint32_t>(i), o);
  }
  return a;
}

Napi::Array to_js_strings(Napi::Env env, const std::vector<std::string>& strings) {
  Napi::Array a = Napi::Array::New(env, strings.size());
  for (size_t i = 0; i < strings.size(); ++i) a.Set(static_cast<uint32_t>(i), strings[i]);
  return a;
}

std::vector<std::string> from_js_strings(Napi::Value value) {
  std::vector<std::string> out;
  if (!value.IsArray()) return out;
  Napi::Array a = value.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).ToString().Utf8Value());
  return out;
}

std::string string_arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || !info[index].IsString()) {
    throw_type_error(info.Env(), std::string("Expected a string for ") + name);
  }
  return info[index].As<Napi::String>().Utf8Value();
}

}  // namespace torchfold::addon
