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
  o.Set("norm", p.norm);
  o.Set("kind", p.kind);
  o.Set("normKind", p.norm_kind);
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
