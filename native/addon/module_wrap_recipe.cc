// ModuleWrap's recipe methods (core/recipe.h): the portable form of a module
// and the run-time part applied to one, for lib/recipe.ts.
#include "../core/recipe.h"
#include "convert.h"
#include "errors.h"
#include "module_wrap.h"
#include "promise_worker.h"

namespace torchfold::addon {

namespace {
bool flag(Napi::Object o, const char* name) { return o.Get(name).ToBoolean().Value(); }

Napi::Object result_object(Napi::Env e, core::RecipeResult& r) {
  Napi::Object out = Napi::Object::New(e);
  out.Set("module", ModuleWrap::Create(e, r.module));
  out.Set("buildMs", r.build_ms);
  out.Set("channelsLastWeights", r.channels_last_weights);
  if (!r.save_error.empty()) out.Set("saveError", r.save_error);
  return out;
}
}  // namespace

// portable({ freeze, channelsLast }) -> Promise<{ module, buildMs, channelsLastWeights }>
Napi::Value ModuleWrap::Portable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_type_error(env, "Expected an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  core::Recipe recipe;
  recipe.freeze = flag(o, "freeze");
  recipe.channels_last = flag(o, "channelsLast");
  core::ModulePtr m = module(env);
  ++in_flight_;
  return PromiseWorker<core::RecipeResult>::Start(
      Value(), [m, recipe]() { return core::portable_form(*m, recipe); }, result_object, [this]() { --in_flight_; });
}

// applyRunTime({ optimizeForInference, llga, nnc }) -> Promise<{ module, buildMs }>
Napi::Value ModuleWrap::ApplyRunTime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_type_error(env, "Expected an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  core::Recipe recipe;
  recipe.optimize_for_inference = flag(o, "optimizeForInference");
  recipe.switches.llga = flag(o, "llga");
  recipe.switches.nnc = flag(o, "nnc");
  core::ModulePtr m = module(env);
  ++in_flight_;
  return PromiseWorker<core::RecipeResult>::Start(
      Value(), [m, recipe]() { return core::apply_run_time(*m, recipe); }, result_object, [this]() { --in_flight_; });
}

// jitSwitches() -> 'llga', 'nnc', 'llga+nnc' or ''
Napi::Value ModuleWrap::JitSwitches(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), core::jit_switches_of(*module(info.Env())).describe());
}

}  // namespace torchfold::addon
