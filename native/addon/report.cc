#include "report.h"

namespace torchfold::addon {

namespace {

Napi::Object pair_to_js(Napi::Env env, const core::PairReport& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("method", p.method);
  Napi::Array methods = Napi::Array::New(env, p.methods.size());
  for (size_t i = 0; i < p.methods.size(); ++i) methods.Set(static_cast<uint32_t>(i), p.methods[i]);
  o.Set("methods", methods);
  o.Set("conv", p.conv);
  o.Set("kind", p.kind);
  if (p.constant.empty()) {
    o.Set("norm", p.norm);
    o.Set("normKind", p.norm_kind);
  } else {
    o.Set("op", p.norm_kind);
    o.Set("constant", p.constant);
  }
  o.Set("status", p.folded ? "folded" : "skipped");
  if (!p.folded) o.Set("reason", p.reason);
  return o;
}

}  // namespace

Napi::Object to_js_report(Napi::Env env, const core::FuseReport& report) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array pairs = Napi::Array::New(env, report.pairs.size());
  for (size_t i = 0; i < report.pairs.size(); ++i) pairs.Set(static_cast<uint32_t>(i), pair_to_js(env, report.pairs[i]));
  o.Set("pairs", pairs);
  Napi::Array absorbed = Napi::Array::New(env, report.absorbed.size());
  for (size_t i = 0; i < report.absorbed.size(); ++i) absorbed.Set(static_cast<uint32_t>(i), pair_to_js(env, report.absorbed[i]));
  o.Set("absorbed", absorbed);
  o.Set("mode", report.mode);
  Napi::Array steps = Napi::Array::New(env, report.steps.size());
  for (size_t i = 0; i < report.steps.size(); ++i) {
    Napi::Object s = Napi::Object::New(env);
    s.Set("name", report.steps[i].name);
    s.Set("round", report.steps[i].round);
    s.Set("changed", report.steps[i].changed);
    s.Set("ms", report.steps[i].ms);
    steps.Set(static_cast<uint32_t>(i), s);
  }
  o.Set("steps", steps);
  Napi::Object norms = Napi::Object::New(env);
  norms.Set("before", report.norms_before);
  norms.Set("after", report.norms_after);
  o.Set("batchNorms", norms);
  Napi::Object timings = Napi::Object::New(env);
  timings.Set("analyze", report.analyze_ms);
  timings.Set("fold", report.fold_ms);
  timings.Set("rewrite", report.rewrite_ms);
  timings.Set("total", report.total_ms);
  o.Set("timings", timings);
  o.Set("device", report.device);
  return o;
}

}  // namespace torchfold::addon
