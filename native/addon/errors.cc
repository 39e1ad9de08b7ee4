#include "errors.h"

#include "addon_data.h"

namespace torchfold::addon {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  AddonData& data = addon_data(env);
  if (!data.error_factory.IsEmpty()) {
    Napi::Value err = data.error_factory.Call({Napi::String::New(env, message), Napi::String::New(env, code)});
    if (err.IsObject()) return Napi::Error(env, err);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::Error make_error(Napi::Env env, const core::Error& error) {
  return make_error(env, core::code_name(error.code()), error.what());
}

void throw_type_error(Napi::Env env, const std::string& message) {
  Napi::TypeError e = Napi::TypeError::New(env, message);
  e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG"));
  throw e;
}

}  // namespace torchfold::addon
