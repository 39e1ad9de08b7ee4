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
  if (p.folded && p.guard_rank > 0) {
    Napi::Object g = Napi::Object::New(env);
    g.Set("rank", static_cast<double>(p.guard_rank));
    g.Set("bytes", static_cast<double>(p.guard_bytes));
    o.Set("rankGuard", g);
  }
  if (p.folded && p.copy_bytes >= 0) {
    Napi::Object c = Napi::Object::New(env);
    c.Set("bytes", static_cast<double>(p.copy_bytes));
    o.Set("siteCopy", c);
  }
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
    o.Set("shape", to_js_shape(env, v.shape));
  }
  if (!v.dtype.empty()) o.Set("dtype", v.dtype);
  o.Set("uses", to_js_array(env, v.uses, [&](const core::GraphUse& use) {
          Napi::Object u = Napi::Object::New(env);
          u.Set("node", use.node);
          u.Set("input", use.input);
          u.Set("block", use.block);
          return u;
        }));
  return o;
}

}  // namespace

Napi::Object to_js_graph(Napi::Env env, const core::GraphInfo& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("method", info.method);
  o.Set("inlined", info.inlined);
  const auto value = [&](const core::GraphValueInfo& v) { return value_to_js(env, v); };
  const auto ref = [&](const core::GraphValueRef& r) { return ref_to_js(env, r); };
  o.Set("inputs", to_js_array(env, info.inputs, value));
  o.Set("outputs", to_js_array(env, info.outputs, ref));
  o.Set("nodes", to_js_array(env, info.nodes, [&](const core::GraphNodeInfo& n) {
          Napi::Object x = Napi::Object::New(env);
          x.Set("index", n.index);
          x.Set("kind", n.kind);
          x.Set("module", n.module);
          if (!n.callee.empty()) x.Set("callee", n.callee);
          if (!n.scope.empty()) x.Set("scope", n.scope);
          x.Set("parent", n.parent);
          x.Set("block", n.block);
          x.Set("inputs", to_js_array(env, n.inputs, ref));
          x.Set("outputs", to_js_array(env, n.outputs, value));
          if (!n.constant.empty()) x.Set("constant", n.constant);
          return x;
        }));
  return o;
}

Napi::Object to_js_report(Napi::Env env, const core::FuseReport& report) {
  Napi::Object o = Napi::Object::New(env);
  const auto pair = [&](const core::PairReport& p) { return pair_to_js(env, p); };
  o.Set("pairs", to_js_array(env, report.pairs, pair));
  o.Set("absorbed", to_js_array(env, report.absorbed, pair));
  o.Set("unpaired", to_js_array(env, report.unpaired, [&](const core::UnpairedReport& u) {
          Napi::Object x = Napi::Object::New(env);
          x.Set("method", u.method);
          x.Set("methods", to_js_strings(env, u.methods));
          x.Set("norm", u.norm);
          x.Set("normKind", u.norm_kind);
          x.Set("reason", u.reason);
          return x;
        }));
  o.Set("replaced", to_js_strings(env, report.replaced));
  o.Set("mode", report.mode);
  o.Set("steps", to_js_array(env, report.steps, [&](const auto& step) {
          Napi::Object s = Napi::Object::New(env);
          s.Set("name", step.name);
          s.Set("round", step.round);
          s.Set("changed", step.changed);
          s.Set("ms", step.ms);
          return s;
        }));
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
