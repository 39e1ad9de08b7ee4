// Entry point: registers the native surface described in lib/binding.ts.
// State lives in per-environment instance data (AddonData), so the addon can
// be loaded by several worker_threads at once.
#include <napi.h>

#include "../core/compute_pool.h"
#include "../core/jit_switches.h"
#include "../core/runtime.h"
#include "../core/tensor.h"
#include "addon_data.h"
#include "convert.h"
#include "errors.h"
#include "promise_worker.h"
#include "module_wrap.h"
#include "tensor_wrap.h"

namespace torchfold::addon {

AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

namespace {

Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) throw_type_error(info.Env(), "Expected a function");
  addon_data(info.Env()).error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value LoadLibrary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = string_arg(info, 0, "path");
  return PromiseWorker<bool>::Start(
      Napi::Object::New(env),
      [path]() {
        core::load_library(path);
        return true;
      },
      [](Napi::Env e, bool&) -> Napi::Value { return e.Undefined(); });
}

// readExtraFiles(path, names) -> Promise<{ [name]: string }>
Napi::Value ReadExtraFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = string_arg(info, 0, "path");
  if (info.Length() < 2 || !info[1].IsArray()) throw_type_error(env, "Expected an array of names");
  std::vector<std::string> names = from_js_strings(info[1]);
  return PromiseWorker<core::ExtraFiles>::Start(
      Napi::Object::New(env), [path, names = std::move(names)]() { return core::read_extra_files(path, names); },
      [](Napi::Env e, core::ExtraFiles& files) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        for (const auto& [k, v] : files) o.Set(k, Napi::String::New(e, v));
        return o;
      });
}

// verifyFile(path) -> Promise<string[]>: the archive's problems, [] when intact.
Napi::Value VerifyFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = string_arg(info, 0, "path");
  return PromiseWorker<std::vector<std::string>>::Start(
      Napi::Object::New(env), [path]() { return core::verify_file(path); },
      [](Napi::Env e, std::vector<std::string>& problems) -> Napi::Value { return to_js_strings(e, problems); });
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw_type_error(env, "Expected a number for threads");
  const int n = info[0].As<Napi::Number>().Int32Value();
  guard_sync(env, [&]() { core::set_num_threads(n); });
  return env.Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), core::get_num_threads());
}

Napi::Value SetComputeThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw_type_error(env, "Expected a number for compute threads");
  const int n = info[0].As<Napi::Number>().Int32Value();
  guard_sync(env, [&]() { core::set_compute_threads(n); });
  return env.Undefined();
}

Napi::Value GetComputeThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), core::compute_threads());
}

// fusers() -> { llga, nnc: '' when available, else why not }
Napi::Value Fusers(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("llga", core::llga_unavailable_reason());
  o.Set("nnc", core::nnc_unavailable_reason());
  return o;
}

Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), guard_sync(info.Env(), [] { return core::cuda_available(); }));
}

// Throws ERR_DEVICE_UNAVAILABLE (with core's reason) when the device named is
// not present; the CLI asks it so its wording is the API's.
Napi::Value CheckDevice(const Napi::CallbackInfo& info) {
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  guard_sync(info.Env(), [&] { return core::parse_device(name).is_cuda(); });
  return info.Env().Undefined();
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), guard_sync(info.Env(), [] { return core::cuda_device_count(); }));
}

Napi::Value Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("libtorch", core::libtorch_version());
  o.Set("libtorchHeaders", core::libtorch_header_version());
  o.Set("napi", Napi::Number::New(env, NAPI_VERSION));
  o.Set("cudaBuild", Napi::Boolean::New(env, core::built_with_cuda()));
  return o;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted by node-addon-api at env teardown
  data->completions = Completions::Create(env);
  Napi::Function module_ctor = ModuleWrap::Define(env);
  Napi::Function tensor_ctor = TensorWrap::Define(env);
  data->module_ctor = Napi::Persistent(module_ctor);
  data->tensor_ctor = Napi::Persistent(tensor_ctor);

  exports.Set("NativeModule", module_ctor);
  exports.Set("NativeTensor", tensor_ctor);
  exports.Set("setErrorFactory", Napi::Function::New<SetErrorFactory>(env, "setErrorFactory"));
  exports.Set("load", Napi::Function::New<ModuleWrap::Load>(env, "load"));
  exports.Set("tensorFromBuffer", Napi::Function::New<TensorWrap::FromBuffer>(env, "tensorFromBuffer"));
  exports.Set("loadLibrary", Napi::Function::New<LoadLibrary>(env, "loadLibrary"));
  exports.Set("readExtraFiles", Napi::Function::New<ReadExtraFiles>(env, "readExtraFiles"));
  exports.Set("verifyFile", Napi::Function::New<VerifyFile>(env, "verifyFile"));
  exports.Set("setNumThreads", Napi::Function::New<SetNumThreads>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<GetNumThreads>(env, "getNumThreads"));
  exports.Set("setComputeThreads", Napi::Function::New<SetComputeThreads>(env, "setComputeThreads"));
  exports.Set("getComputeThreads", Napi::Function::New<GetComputeThreads>(env, "getComputeThreads"));
  exports.Set("fusers", Napi::Function::New<Fusers>(env, "fusers"));
  exports.Set("cudaIsAvailable", Napi::Function::New<CudaIsAvailable>(env, "cudaIsAvailable"));
  exports.Set("cudaDeviceCount", Napi::Function::New<CudaDeviceCount>(env, "cudaDeviceCount"));
  exports.Set("checkDevice", Napi::Function::New<CheckDevice>(env, "checkDevice"));
  exports.Set("versions", Napi::Function::New<Versions>(env, "versions"));
  return exports;
}

}  // namespace torchfold::addon

static Napi::Object InitTorchfold(Napi::Env env, Napi::Object exports) { return torchfold::addon::Init(env, exports); }

NODE_API_MODULE(torchfold, InitTorchfold)
