#include "fuse.h"

#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>

#include "analyze.h"
#include "patterns.h"
#include "runtime.h"
#include "transform.h"

namespace torchfold::core {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// One entry per (operator, norm): a pair reached from several root methods
// (forward calling _forward_impl, an exported method) is listed once.
std::vector<PairReport> describe_pairs(const Analysis& a) {
  std::vector<PairReport> out;
  std::map<std::string, size_t> index;
  for (const Pair& p : a.pairs) {
    const std::string conv = p.op.weight ? p.op.weight->path : p.op.frame->path;
    const std::string key = p.norm.path + "|" + conv;
    auto it = index.find(key);
    if (it != index.end()) {
      auto& methods = out[it->second].methods;
      if (std::find(methods.begin(), methods.end(), p.method) == methods.end()) methods.push_back(p.method);
      // Folded only if it folds everywhere it runs.
      if (!p.fold && out[it->second].folded) {
        out[it->second].folded = false;
        out[it->second].reason = p.reason;
      }
      continue;
    }
    PairReport r;
    r.method = p.method;
    r.methods = {p.method};
    r.conv = conv;
    r.norm = p.norm.path;
    r.kind = p.op.kind;
    r.norm_kind = p.norm.kind;
    r.folded = p.fold;
    r.reason = p.reason;
    index[key] = out.size();
    out.push_back(std::move(r));
  }
  return out;
}

// A copy with its own compilation unit, class types and graphs, so the
// rewrite cannot reach the caller's module. A round trip through the
// serializer (rather than Module::clone(), which mangles new type names with
// a counter shared by every clone of the unit) keeps the class names of the
// input, so the same input always gives the same saved bytes.
ModulePtr private_copy(const torch::jit::Module& module) {
  std::stringstream buffer;
  try {
    module.save(buffer);
  } catch (const c10::Error&) {
    return std::make_shared<torch::jit::Module>(module.clone());  // not serializable: still a private copy
  }
  const std::string device = module_device(module);
  return std::make_shared<torch::jit::Module>(torch::jit::load(buffer, c10::Device(device)));
}

int folded_count(const std::vector<PairReport>& pairs) {
  int n = 0;
  for (const auto& p : pairs) n += p.folded ? 1 : 0;
  return n;
}

}  // namespace

FuseResult fuse_module(const torch::jit::Module& module, const FuseOptions& options) {
  apply_thread_settings();
  c10::NoGradGuard no_grad;
  const auto start = Clock::now();
  FuseResult result;
  result.report.device = module_device(module);
  AnalyzeOptions analyze_options;
  analyze_options.treat_training_as_eval = options.treat_training_as_eval;
  analyze_options.exclude = options.exclude;
  analyze_options.exclude_reason = options.exclude_reason;

  if (options.dry_run) {
    Analysis a = analyze(module, analyze_options);
    result.report.analyze_ms = ms_since(start) - a.fold_ms;
    result.report.fold_ms = a.fold_ms;
    result.report.pairs = describe_pairs(a);
    result.report.norms_before = a.norm_units;
    result.report.norms_after = a.norm_units - folded_count(result.report.pairs);
    result.report.total_ms = ms_since(start);
    return result;
  }

  auto copy = private_copy(module);
  auto t = Clock::now();
  Analysis a = analyze(*copy, analyze_options);  // also computes the folded tensors
  result.report.analyze_ms = ms_since(t) - a.fold_ms;
  result.report.fold_ms = a.fold_ms;
  result.report.pairs = describe_pairs(a);
  result.report.norms_before = a.norm_units;
  t = Clock::now();
  apply_folds(*copy, a);
  result.report.rewrite_ms = ms_since(t);
  a.view.reset();
  result.report.norms_after = count_distinct(find_norm_units(ProgramView(*copy), false));
  result.module = copy;
  result.report.total_ms = ms_since(start);
  return result;
}

}  // namespace torchfold::core
