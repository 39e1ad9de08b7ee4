// A JS handle on one TorchScript module. Work on it (run, save, clone, to)
// runs on the libuv pool with its own shared_ptr to the module, so dispose()
// never pulls the module out from under a running call: the memory is freed
// when the last in-flight call ends. Mode changes (train/eval) are refused
// while calls are in flight, so they never race a forward.
#pragma once

#include <napi.h>

#include "../core/half.h"
#include "../core/module.h"
#include "../core/optimize.h"

namespace torchfold::addon {

class ModuleWrap : public Napi::ObjectWrap<ModuleWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Create(Napi::Env env, core::ModulePtr module);
  // load(path: string, device: string): Promise<NativeModule>
  static Napi::Value Load(const Napi::CallbackInfo& info);

  explicit ModuleWrap(const Napi::CallbackInfo& info);
  ~ModuleWrap() override;

 private:
  void Set(Napi::Env env, core::ModulePtr module);
  void Release(Napi::Env env);
  // The module, or a thrown ERR_DISPOSED.
  const core::ModulePtr& module(Napi::Env env) const;
  // Starts async work that yields a new module (clone, to).
  Napi::Value StartModuleWork(std::function<core::ModulePtr()> work);

  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Clone(const Napi::CallbackInfo& info);
  Napi::Value Fuse(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Freeze(const Napi::CallbackInfo& info);
  Napi::Value Onednn(const Napi::CallbackInfo& info);
  // Benchmark-only entry points (lib/internal/bench.ts): libtorch peers, a
  // forward loop timed in C++, a float64 copy.
  Napi::Value BenchPeer(const Napi::CallbackInfo& info);
  Napi::Value BenchTimeForward(const Napi::CallbackInfo& info);
  Napi::Value BenchToDtype(const Napi::CallbackInfo& info);
  Napi::Value ToHalf(const Napi::CallbackInfo& info);
  // module_wrap_recipe.cc
  Napi::Value Portable(const Napi::CallbackInfo& info);
  Napi::Value ApplyRunTime(const Napi::CallbackInfo& info);
  Napi::Value JitSwitches(const Napi::CallbackInfo& info);
  Napi::Value DescribeGraph(const Napi::CallbackInfo& info);
  Napi::Value Methods(const Napi::CallbackInfo& info);
  Napi::Value Graph(const Napi::CallbackInfo& info);
  Napi::Value NamedTensors(const Napi::CallbackInfo& info);
  Napi::Value NamedModules(const Napi::CallbackInfo& info);
  Napi::Value Parameters(const Napi::CallbackInfo& info);
  Napi::Value Buffers(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Training(const Napi::CallbackInfo& info);
  Napi::Value SetTraining(const Napi::CallbackInfo& info);
  Napi::Value InFlight(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  core::ModulePtr module_;
  int in_flight_ = 0;
  int64_t external_bytes_ = 0;
};

}  // namespace torchfold::addon
