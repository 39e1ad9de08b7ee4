#include "report.h"

#include "convert.h"

namespace torchfold::addon {

namespace {

Napi::Object pair_to_js(Napi::Env env, const core::PairReport& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("method", p.method);
  o.Set("methods", to_js_strings(env, p.methods));
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

Napi::Object ref_to_js(Napi::Env env, const core::GraphValueRef& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("node", r.node);
  o.Set("output", r.output);
  o.Set("input", r.input);
  o.Set("block", r.block);
  return o;
}

Napi::Object value_to_js(Napi::Env env, const core::GraphValueInfo& v) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", v.name);
  o.Set("type", v.type);
  if (v.shape_known) {
    Napi::Array shape = Napi::Array::New(env, v.shape.size());
    for (size_t i = 0; i < v.shape.size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>(v.shape[i]));
    o.Set("shape", shape);
  }
  if (!v.dtype.empty()) o.Set("dtype", v.dtype);
  Napi::Array uses = Napi::Array::New(env, v.uses.size());
  for (size_t i = 0; i < v.uses.size(); ++i) {
    Napi::Object u = Napi::Object::New(env);
    u.Set("node", v.uses[i].node);
    u.Set("input", v.uses[i].input);
    u.Set("block", v.uses[i].block);
    uses.Set(static_cast<uint32_t>(i), u);
  }
  o.Set("uses", uses);
  return o;
}

}  // namespace

Napi::Object to_js_graph(Napi::Env env, const core::GraphInfo& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("method", info.method);
  o.Set("inlined", info.inlined);
  Napi::Array inputs = Napi::Array::New(env, info.inputs.size());
  for (size_t i = 0; i < info.inputs.size(); ++i) inputs.Set(static_cast<uint32_t>(i), value_to_js(env, info.inputs[i]));
  o.Set("inputs", inputs);
  Napi::Array outputs = Napi::Array::New(env, info.outputs.size());
  for (size_t i = 0; i < info.outputs.size(); ++i) outputs.Set(static_cast<uint32_t>(i), ref_to_js(env, info.outputs[i]));
  o.Set("outputs", outputs);
  Napi::Array nodes = Napi::Array::New(env, info.nodes.size());
  for (size_t i = 0; i < info.nodes.size(); ++i) {
    const core::GraphNodeInfo& n = info.nodes[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("index", n.index);
    x.Set("kind", n.kind);
    x.Set("module", n.module);
    if (!n.callee.empty()) x.Set("callee", n.callee);
    if (!n.scope.empty()) x.Set("scope", n.scope);
    x.Set("parent", n.parent);
    x.Set("block", n.block);
    Napi::Array ins = Napi::Array::New(env, n.inputs.size());
    for (size_t j = 0; j < n.inputs.size(); ++j) ins.Set(static_cast<uint32_t>(j), ref_to_js(env, n.inputs[j]));
    x.Set("inputs", ins);
    Napi::Array outs = Napi::Array::New(env, n.outputs.size());
    for (size_t j = 0; j < n.outputs.size(); ++j) outs.Set(static_cast<uint32_t>(j), value_to_js(env, n.outputs[j]));
    x.Set("outputs", outs);
    if (!n.constant.empty()) x.Set("constant", n.constant);
    nodes.Set(static_cast<uint32_t>(i), x);
  }
  o.Set("nodes", nodes);
  return o;
}

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
