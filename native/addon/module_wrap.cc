#include "module_wrap.h"

#include "addon_data.h"
#include "convert.h"
#include "errors.h"
#include "promise_worker.h"
#include "report.h"
#include "tensor_wrap.h"
#include "../core/bench.h"

namespace torchfold::addon {

Napi::Function ModuleWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeModule",
                     {
                         InstanceMethod<&ModuleWrap::Run>("run"),
                         InstanceMethod<&ModuleWrap::Save>("save"),
                         InstanceMethod<&ModuleWrap::Clone>("clone"),
                         InstanceMethod<&ModuleWrap::Fuse>("fuse"),
                         InstanceMethod<&ModuleWrap::To>("to"),
                         InstanceMethod<&ModuleWrap::Freeze>("freeze"),
                         InstanceMethod<&ModuleWrap::Onednn>("onednn"),
                         InstanceMethod<&ModuleWrap::BenchPeer>("benchPeer"),
                         InstanceMethod<&ModuleWrap::BenchTimeForward>("benchTimeForward"),
                         InstanceMethod<&ModuleWrap::BenchToDtype>("benchToDtype"),
                         InstanceMethod<&ModuleWrap::ToHalf>("toHalf"),
                         InstanceMethod<&ModuleWrap::Portable>("portable"),
                         InstanceMethod<&ModuleWrap::ApplyRunTime>("applyRunTime"),
                         InstanceMethod<&ModuleWrap::JitSwitches>("jitSwitches"),
                         InstanceMethod<&ModuleWrap::DescribeGraph>("describeGraph"),
                         InstanceMethod<&ModuleWrap::Methods>("methods"),
                         InstanceMethod<&ModuleWrap::Graph>("graph"),
                         InstanceMethod<&ModuleWrap::NamedTensors>("namedTensors"),
                         InstanceMethod<&ModuleWrap::NamedModules>("namedModules"),
                         InstanceMethod<&ModuleWrap::Parameters>("parameters"),
                         InstanceMethod<&ModuleWrap::Buffers>("buffers"),
                         InstanceMethod<&ModuleWrap::Device>("device"),
                         InstanceMethod<&ModuleWrap::Training>("training"),
                         InstanceMethod<&ModuleWrap::SetTraining>("setTraining"),
                         InstanceMethod<&ModuleWrap::InFlight>("inFlight"),
                         InstanceMethod<&ModuleWrap::Dispose>("dispose"),
                         InstanceMethod<&ModuleWrap::Disposed>("disposed"),
                     });
}

ModuleWrap::ModuleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModuleWrap>(info) {}

ModuleWrap::~ModuleWrap() {
  if (external_bytes_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
}

Napi::Object ModuleWrap::Create(Napi::Env env, core::ModulePtr module) {
  Napi::Object obj = addon_data(env).module_ctor.New({});
  Napi::ObjectWrap<ModuleWrap>::Unwrap(obj)->Set(env, std::move(module));
  return obj;
}

void ModuleWrap::Set(Napi::Env env, core::ModulePtr module) {
  module_ = std::move(module);
  if (core::module_device(*module_) == "cpu") {
    external_bytes_ = static_cast<int64_t>(core::module_bytes(*module_));
    Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
  }
}

void ModuleWrap::Release(Napi::Env env) {
  module_.reset();
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    external_bytes_ = 0;
  }
}

const core::ModulePtr& ModuleWrap::module(Napi::Env env) const {
  if (!module_) throw make_error(env, "ERR_DISPOSED", "The module has been disposed");
  return module_;
}

Napi::Value ModuleWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = string_arg(info, 0, "path");
  const std::string device = string_arg(info, 1, "device");
  const bool verify = info.Length() > 2 && info[2].ToBoolean().Value();
  return PromiseWorker<core::ModulePtr>::Start(
      Napi::Object::New(env), [path, device, verify]() { return core::load_module(path, device, verify); },
      [](Napi::Env e, core::ModulePtr& m) -> Napi::Value { return Create(e, m); });
}

Napi::Value ModuleWrap::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string method = string_arg(info, 0, "method");
  if (info.Length() < 2 || !info[1].IsArray()) throw_type_error(env, "Expected an array for inputs");
  core::ModulePtr m = module(env);
  std::vector<core::Value> inputs = to_core_values(env, info[1].As<Napi::Array>());
  ++in_flight_;
  return PromiseWorker<core::Value>::Start(
      Value(), [m, method, inputs = std::move(inputs)]() { return core::run_method(*m, method, inputs); },
      [](Napi::Env e, core::Value& out) { return to_js_value(e, out); }, [this]() { --in_flight_; });
}

Napi::Value ModuleWrap::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = string_arg(info, 0, "path");
  core::ExtraFiles extra;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object files = info[1].As<Napi::Object>();
    Napi::Array keys = files.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value v = files.Get(key);
      if (!v.IsString()) throw_type_error(env, "Expected string contents for extra file '" + key + "'");
      extra.emplace(key, v.As<Napi::String>().Utf8Value());
    }
  }
  core::ModulePtr m = module(env);
  ++in_flight_;
  return PromiseWorker<bool>::Start(
      Value(),
      [m, path, extra = std::move(extra)]() {
        core::save_module(*m, path, extra);
        return true;
      },
      [](Napi::Env e, bool&) -> Napi::Value { return e.Undefined(); }, [this]() { --in_flight_; });
}

Napi::Value ModuleWrap::StartModuleWork(std::function<core::ModulePtr()> work) {
  ++in_flight_;
  return PromiseWorker<core::ModulePtr>::Start(
      Value(), std::move(work), [](Napi::Env e, core::ModulePtr& out) -> Napi::Value { return Create(e, out); },
      [this]() { --in_flight_; });
}

Napi::Value ModuleWrap::Clone(const Napi::CallbackInfo& info) {
  core::ModulePtr m = module(info.Env());
  return StartModuleWork([m]() { return core::clone_module(*m); });
}

// fuse({ dryRun: boolean, treatTrainingAsEval: boolean }) -> { module | null, report }
Napi::Value ModuleWrap::Fuse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_type_error(env, "Expected an options object");
  Napi::Object opts = info[0].As<Napi::Object>();
  core::FuseOptions options;
  options.dry_run = opts.Get("dryRun").ToBoolean().Value();
  options.treat_training_as_eval = opts.Get("treatTrainingAsEval").ToBoolean().Value();
  options.exclude = from_js_strings(opts.Get("exclude"));
  if (opts.Get("excludeReason").IsString())
    options.exclude_reason = opts.Get("excludeReason").As<Napi::String>().Utf8Value();
  if (opts.Get("mode").IsString() && opts.Get("mode").As<Napi::String>().Utf8Value() == "tune") {
    options.mode = core::FuseOptions::Mode::Tune;
  }
  options.constants = opts.Get("constants").ToBoolean().Value();
  if (opts.Get("modules").IsArray()) {
    options.has_groups = true;
    Napi::Array groups = opts.Get("modules").As<Napi::Array>();
    for (uint32_t i = 0; i < groups.Length(); ++i) options.groups.push_back(from_js_strings(groups.Get(i)));
  }
  core::ModulePtr m = module(env);
  ++in_flight_;
  return PromiseWorker<core::FuseResult>::Start(
      Value(), [m, options]() { return core::fuse_module(*m, options); },
      [](Napi::Env e, core::FuseResult& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("module", r.module ? Napi::Value(Create(e, r.module)) : e.Null());
        out.Set("report", to_js_report(e, r.report));
        return out;
      },
      [this]() { --in_flight_; });
}

// freeze({ optimize: boolean }) -> { module, saveable, saveError, buildMs }
// benchPeer(kind) -> Promise<{ module, buildMs }>
Napi::Value ModuleWrap::BenchPeer(const Napi::CallbackInfo& info) {
  const std::string kind = string_arg(info, 0, "kind");
  core::ModulePtr m = module(info.Env());
  ++in_flight_;
  return PromiseWorker<core::PeerResult>::Start(
      Value(), [m, kind]() { return core::peer_transform(*m, kind); },
      [](Napi::Env e, core::PeerResult& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("module", Create(e, r.module));
        out.Set("buildMs", r.build_ms);
        return out;
      },
      [this]() { --in_flight_; });
}

// benchTimeForward(inputs, iterations, warmup) -> Promise<number[]> (ms per call)
Napi::Value ModuleWrap::BenchTimeForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsNumber() || !info[2].IsNumber()) {
    throw_type_error(env, "Expected (inputs, iterations, warmup)");
  }
  std::vector<core::Value> inputs = to_core_values(env, info[0].As<Napi::Array>());
  const int iterations = info[1].As<Napi::Number>().Int32Value();
  const int warmup = info[2].As<Napi::Number>().Int32Value();
  core::ModulePtr m = module(env);
  ++in_flight_;
  return PromiseWorker<std::vector<double>>::Start(
      Value(),
      [m, inputs = std::move(inputs), iterations, warmup]() {
        return core::time_forward(*m, inputs, iterations, warmup);
      },
      [](Napi::Env e, std::vector<double>& ms) -> Napi::Value {
        return to_js_array(e, ms, [&](double v) { return Napi::Number::New(e, v); });
      },
      [this]() { --in_flight_; });
}

// benchToDtype(dtype) -> Promise<NativeModule>
Napi::Value ModuleWrap::BenchToDtype(const Napi::CallbackInfo& info) {
  const std::string dtype = string_arg(info, 0, "dtype");
  core::ModulePtr m = module(info.Env());
  return StartModuleWork([m, dtype]() { return core::module_to_dtype(*m, dtype); });
}

// onednn() on a frozen module -> { module, saveable, saveError, buildMs, rewritten, kept, keptReasons }
Napi::Value ModuleWrap::Onednn(const Napi::CallbackInfo& info) {
  core::ModulePtr m = module(info.Env());
  ++in_flight_;
  return PromiseWorker<core::OnednnVariant>::Start(
      Value(), [m]() { return core::onednn_variant(*m); },
      [](Napi::Env e, core::OnednnVariant& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("module", Create(e, r.variant.module));
        out.Set("saveable", r.variant.saveable);
        if (!r.variant.saveable) out.Set("saveError", r.variant.save_error);
        out.Set("buildMs", r.variant.build_ms);
        out.Set("rewritten", r.rewritten);
        out.Set("kept", r.kept);
        out.Set("keptReasons", to_js_strings(e, r.kept_reasons));
        return out;
      },
      [this]() { --in_flight_; });
}

Napi::Value ModuleWrap::Freeze(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_type_error(env, "Expected an options object");
  const bool optimize = info[0].As<Napi::Object>().Get("optimize").ToBoolean().Value();
  core::ModulePtr m = module(env);
  ++in_flight_;
  return PromiseWorker<core::Variant>::Start(
      Value(), [m, optimize]() { return core::inference_variant(*m, optimize); },
      [](Napi::Env e, core::Variant& v) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("module", Create(e, v.module));
        out.Set("saveable", v.saveable);
        if (!v.saveable) out.Set("saveError", v.save_error);
        out.Set("buildMs", v.build_ms);
        return out;
      },
      [this]() { --in_flight_; });
}

// toHalf({ dtype: 'float16' | 'bfloat16', minParams, layers: string[] }) -> { module, report }
Napi::Value ModuleWrap::ToHalf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_type_error(env, "Expected an options object");
  Napi::Object opts = info[0].As<Napi::Object>();
  core::HalfOptions options;
  options.dtype = opts.Get("dtype").ToString().Utf8Value() == "bfloat16" ? at::kBFloat16 : at::kHalf;
  if (opts.Get("minParams").IsNumber()) options.min_params = opts.Get("minParams").As<Napi::Number>().Int64Value();
  options.layers = from_js_strings(opts.Get("layers"));
  core::ModulePtr m = module(env);
  ++in_flight_;
  using Result = std::pair<core::ModulePtr, core::HalfReport>;
  return PromiseWorker<Result>::Start(
      Value(),
      [m, options]() {
        c10::NoGradGuard no_grad;
        core::ModulePtr copy = core::private_copy(*m);
        core::HalfReport report = core::convert_to_half(*copy, options);
        return Result{copy, report};
      },
      [options](Napi::Env e, Result& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("module", Create(e, r.first));
        Napi::Object report = Napi::Object::New(e);
        report.Set("dtype", core::half_dtype_name(options.dtype));
        Napi::Array layers = Napi::Array::New(e, r.second.layers.size());
        for (size_t i = 0; i < r.second.layers.size(); ++i) {
          const auto& l = r.second.layers[i];
          Napi::Object o = Napi::Object::New(e);
          o.Set("path", l.path);
          o.Set("kind", l.kind);
          o.Set("params", static_cast<double>(l.params));
          o.Set("status", l.converted ? "converted" : "skipped");
          if (!l.converted) o.Set("reason", l.reason);
          layers.Set(static_cast<uint32_t>(i), o);
        }
        report.Set("layers", layers);
        report.Set("converted", r.second.converted);
        report.Set("paramsConverted", static_cast<double>(r.second.params_converted));
        report.Set("bytesSaved", static_cast<double>(r.second.bytes_saved));
        report.Set("callSites", r.second.call_sites);
        out.Set("report", report);
        return out;
      },
      [this]() { --in_flight_; });
}

// describeGraph({ method, inlined, shapes: number[][], highlights: [{conv, norm, folded}] }) -> { graph, dot }
Napi::Value ModuleWrap::DescribeGraph(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_type_error(env, "Expected an options object");
  Napi::Object opts = info[0].As<Napi::Object>();
  const std::string method = opts.Get("method").ToString().Utf8Value();
  const bool inlined = opts.Get("inlined").ToBoolean().Value();
  std::vector<std::vector<int64_t>> shapes;
  if (opts.Get("shapes").IsArray()) {
    Napi::Array list = opts.Get("shapes").As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); ++i) {
      std::vector<int64_t> shape;
      Napi::Array dims = list.Get(i).As<Napi::Array>();
      for (uint32_t j = 0; j < dims.Length(); ++j) shape.push_back(dims.Get(j).As<Napi::Number>().Int64Value());
      shapes.push_back(std::move(shape));
    }
  }
  std::vector<core::DotHighlight> highlights;
  if (opts.Get("highlights").IsArray()) {
    Napi::Array list = opts.Get("highlights").As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Object h = list.Get(i).As<Napi::Object>();
      highlights.push_back({h.Get("conv").ToString().Utf8Value(), h.Get("norm").ToString().Utf8Value(),
                            h.Get("folded").ToBoolean().Value()});
    }
  }
  core::ModulePtr m = module(env);
  ++in_flight_;
  using Result = std::pair<core::GraphInfo, std::string>;
  return PromiseWorker<Result>::Start(
      Value(),
      [m, method, inlined, shapes, highlights]() {
        core::GraphInfo g = core::describe_graph(*m, method, inlined, shapes);
        std::string dot = core::to_dot(g, highlights);
        return Result{std::move(g), std::move(dot)};
      },
      [](Napi::Env e, Result& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("graph", to_js_graph(e, r.first));
        out.Set("dot", r.second);
        return out;
      },
      [this]() { --in_flight_; });
}

Napi::Value ModuleWrap::To(const Napi::CallbackInfo& info) {
  const std::string device = string_arg(info, 0, "device");
  core::ModulePtr m = module(info.Env());
  return StartModuleWork([m, device]() { return core::module_to_device(*m, device); });
}

Napi::Value ModuleWrap::Methods(const Napi::CallbackInfo& info) {
  return to_js_strings(info.Env(), core::method_names(*module(info.Env())));
}

Napi::Value ModuleWrap::Graph(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string method = string_arg(info, 0, "method");
  const bool inlined = info.Length() > 1 && info[1].ToBoolean().Value();
  const core::ModulePtr& m = module(env);
  return guard_sync(env,
                    [&]() -> Napi::Value { return Napi::String::New(env, core::graph_text(*m, method, inlined)); });
}

Napi::Value ModuleWrap::NamedTensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (const auto& [name, t] : core::named_tensors(*module(env))) out.Set(name, TensorWrap::Create(env, t));
  return out;
}

Napi::Value ModuleWrap::NamedModules(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto modules = core::named_modules(*module(env));
  Napi::Array out = Napi::Array::New(env, modules.size());
  for (size_t i = 0; i < modules.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("path", modules[i].path);
    o.Set("type", modules[i].type);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

Napi::Value ModuleWrap::Parameters(const Napi::CallbackInfo& info) {
  return to_js_tensor_infos(info.Env(), core::parameters(*module(info.Env())));
}

Napi::Value ModuleWrap::Buffers(const Napi::CallbackInfo& info) {
  return to_js_tensor_infos(info.Env(), core::buffers(*module(info.Env())));
}

Napi::Value ModuleWrap::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), core::module_device(*module(info.Env())));
}

Napi::Value ModuleWrap::Training(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), core::is_training(*module(info.Env())));
}

Napi::Value ModuleWrap::SetTraining(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBoolean()) throw_type_error(env, "Expected a boolean for training");
  const core::ModulePtr& m = module(env);
  if (in_flight_ > 0) {
    throw make_error(env, "ERR_BUSY",
                     "Cannot switch train/eval mode while " + std::to_string(in_flight_) +
                         " call(s) on this module are in flight; await them first");
  }
  core::set_training(*m, info[0].As<Napi::Boolean>().Value());
  return env.Undefined();
}

Napi::Value ModuleWrap::InFlight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), in_flight_); }

Napi::Value ModuleWrap::Dispose(const Napi::CallbackInfo& info) {
  Release(info.Env());
  return info.Env().Undefined();
}

Napi::Value ModuleWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !module_); }

}  // namespace torchfold::addon
