#include "fuse.h"

#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "analyze.h"
#include "patterns.h"
#include "runtime.h"
#include "transform.h"
#include "tune.h"
#include "error.h"

namespace torchfold::core {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// One entry per (operator, norm): a pair reached from several root methods
// (forward calling _forward_impl, an exported method) is listed once. Entries
// from a later round of the same run update earlier ones.
class PairBook {
 public:
  void add(const Analysis& a) {
    std::map<std::string, PairReport> round;  // this analysis, one entry per key
    std::vector<std::string> order;
    for (const Pair& p : a.pairs) {
      const std::string conv = op_path(p.op);
      const std::string key = p.norm.constant ? conv + "|" + p.norm.kind + "|" + p.norm.constant->describe
                                              : p.norm.path + "|" + conv;
      auto it = round.find(key);
      if (it == round.end()) {
        PairReport r;
        r.method = p.method;
        r.conv = conv;
        r.norm = p.norm.constant ? "" : p.norm.path;
        r.kind = p.op.kind;
        r.norm_kind = p.norm.kind;
        r.folded = true;
        if (p.norm.constant) r.constant = p.norm.constant->describe;
        it = round.emplace(key, std::move(r)).first;
        order.push_back(key);
        constant_[key] = p.norm.constant.has_value();
      }
      PairReport& r = it->second;
      if (std::find(r.methods.begin(), r.methods.end(), p.method) == r.methods.end()) r.methods.push_back(p.method);
      if (!p.fold && r.folded) {  // folded only if it folds everywhere it runs
        r.folded = false;
        r.reason = p.reason;
      }
      if (p.fold && p.guard) {
        r.guard_rank = p.guard->rank;
        r.guard_bytes = p.guard->bytes;
      }
      if (p.fold && p.site_copy) r.copy_bytes = std::max<int64_t>(r.copy_bytes, 0) + p.site_copy->bytes;
    }
    for (const Unpaired& u : a.unpaired) {
      const std::string key = u.norm.path + "|" + u.norm.kind;
      auto [it, fresh] = unpaired_.try_emplace(key);
      if (fresh) {
        it->second.method = u.method;
        it->second.norm = u.norm.path;
        it->second.norm_kind = u.norm.kind;
        it->second.reason = u.reason;
        unpaired_order_.push_back(key);
      }
      auto& methods = it->second.methods;
      if (std::find(methods.begin(), methods.end(), u.method) == methods.end()) methods.push_back(u.method);
    }
    for (const std::string& key : order) {
      auto it = index_.find(key);
      if (it == index_.end()) {
        index_[key] = entries_.size();
        keys_.push_back(key);
        entries_.push_back(round[key]);
      } else if (!entries_[it->second].folded) {
        entries_[it->second] = round[key];  // a later round may fold what an earlier one could not
      }
    }
  }
  // The unpaired norms that no round paired with an operator.
  std::vector<UnpairedReport> unpaired() const {
    std::set<std::string> paired;
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (!constant_.at(keys_[i])) paired.insert(entries_[i].norm + "|" + entries_[i].norm_kind);
    }
    std::vector<UnpairedReport> out;
    for (const std::string& key : unpaired_order_) {
      if (!paired.count(key)) out.push_back(unpaired_.at(key));
    }
    return out;
  }
  std::vector<PairReport> pairs(bool constants) const {
    std::vector<PairReport> out;
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (constant_.at(keys_[i]) == constants) out.push_back(entries_[i]);
    }
    return out;
  }

 private:
  std::vector<PairReport> entries_;
  std::vector<std::string> keys_;
  std::map<std::string, bool> constant_;
  std::map<std::string, size_t> index_;
  std::map<std::string, UnpairedReport> unpaired_;
  std::vector<std::string> unpaired_order_;
};

int folded_count(const std::vector<PairReport>& pairs) {
  int n = 0;
  for (const auto& p : pairs) n += p.folded ? 1 : 0;
  return n;
}

}  // namespace

namespace {

std::string quoted_group(const std::vector<std::string>& g) {
  std::string s = "[";
  for (size_t i = 0; i < g.size(); ++i) s += (i ? ", '" : "'") + g[i] + "'";
  return s + "]";
}

bool has_submodule(const torch::jit::Module& root, const std::string& path) {
  for (const auto& m : root.named_modules()) {
    if (m.name == path) return true;
  }
  return false;
}

bool same(const Site& a, const Site& b) { return a.value == b.value && a.frame == b.frame; }

// Checks every requested group against an analysis made with `only` = the
// groups; throws ERR_FUSE_GROUP naming the first group that cannot fold.
void check_groups(const torch::jit::Module& module, const Analysis& a,
                  const std::vector<std::vector<std::string>>& groups) {
  const ProgramView& view = *a.view;
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    auto fail = [&](const std::string& why) {
      throw Error(ErrorCode::FuseGroup, "options.modules[" + std::to_string(i) + "] " + quoted_group(g) + ": " + why);
    };
    for (const std::string& path : g) {
      if (!has_submodule(module, path)) fail("'" + path + "' is not a submodule of this module");
    }
    std::vector<const Pair*> found;
    for (const Pair& p : a.pairs) {
      if (op_path(p.op) == g[0] && p.norm.path == g[1]) found.push_back(&p);
    }
    if (found.empty()) {
      for (const Pair& p : a.pairs) {
        if (p.norm.path == g[1])
          fail("'" + g[1] + "' runs on the output of '" + op_path(p.op) + "', not of '" + g[0] + "'");
      }
      for (const Pair& p : a.pairs) {
        if (op_path(p.op) == g[0])
          fail("the output of '" + g[0] + "' goes to '" + p.norm.path + "', not to '" + g[1] + "'");
      }
      fail("not a convolution/linear -> BatchNorm pair in the graph ('" + g[1] +
           "' is not a BatchNorm that runs directly on the output of '" + g[0] + "')");
    }
    for (const Pair* p : found) {
      if (!p->fold) fail("cannot be folded: " + p->reason);
    }
    if (g.size() < 3) continue;
    // [conv, norm, activation]: the activation must run on the norm's output;
    // it stays as it is.
    bool follows = false;
    for (const Pair* p : found) {
      const Site norm_out = view.origin(Site{p->norm.remove->output(), p->norm.holder}, false);
      for (const Frame* f : view.frames()) {
        if (f->path != g[2] || !f->caller || f->is_function || f->call_node->inputs().size() < 2) continue;
        follows = follows || same(view.origin(Site{f->call_node->input(1), f->caller}, false), norm_out);
      }
    }
    if (!follows) fail("'" + g[2] + "' does not run on the output of '" + g[1] + "'");
  }
}

}  // namespace

FuseResult fuse_module(const torch::jit::Module& module, const FuseOptions& options) {
  apply_thread_settings();
  c10::NoGradGuard no_grad;
  const auto start = Clock::now();
  FuseResult result;
  FuseReport& report = result.report;
  report.device = module_device(module);
  const bool tune = options.mode == FuseOptions::Mode::Tune;
  report.mode = tune ? "tune" : "fold";
  AnalyzeOptions norms;
  norms.treat_training_as_eval = options.treat_training_as_eval;
  norms.tune = tune;
  norms.exclude = options.exclude;
  norms.exclude_reason = options.exclude_reason;
  if (options.has_groups) {
    norms.only.emplace();
    for (const auto& g : options.groups) {
      if (g.size() >= 2) norms.only->insert({g[0], g[1]});
    }
    norms.only_reason = "not listed in options.modules";
  }
  ExactParams exact;
  norms.exact = &exact;
  AnalyzeOptions constants = norms;
  constants.target = AnalyzeOptions::Target::Constants;
  constants.tune = false;
  constants.only.reset();

  // The plain analysis needs no copy; anything that iterates works on one.
  // A fold replaces most weights, so its copy shares the input's storages
  // until the end (only read until then) and copies what is left.
  const bool share = !options.dry_run && !tune;
  ModulePtr copy = options.dry_run && !options.constants ? nullptr : private_copy(module, share);
  const torch::jit::Module& subject = copy ? *copy : module;
  PairBook book;
  bool first = true;
  const int max_rounds = options.constants ? 8 : 1;
  for (int round = 1; round <= max_rounds; ++round) {
    int changed = 0;
    if (options.constants) {
      auto t = Clock::now();
      Analysis a = analyze(*copy, constants);
      report.analyze_ms += ms_since(t) - a.fold_ms;
      report.fold_ms += a.fold_ms;
      book.add(a);
      t = Clock::now();
      TransformStats st = apply_folds(*copy, a, &exact);
      report.rewrite_ms += ms_since(t);
      report.steps.push_back({"constants", round, st.folded, ms_since(t) + a.fold_ms});
      changed += st.folded;
    }
    auto t = Clock::now();
    Analysis a = analyze(subject, norms);
    report.analyze_ms += ms_since(t) - a.fold_ms;
    report.fold_ms += a.fold_ms;
    if (first) {
      report.norms_before = a.norm_units;
      if (options.has_groups) check_groups(subject, a, options.groups);
      first = false;
    }
    book.add(a);
    if (copy) {
      t = Clock::now();
      int n = 0;
      if (tune) {
        n = apply_tune(*copy, a);
      } else {
        TransformStats st = apply_folds(*copy, a, &exact);
        n = st.folded;
        report.replaced.insert(report.replaced.end(), st.dropped_norms.begin(), st.dropped_norms.end());
      }
      for (const Pair& p : a.pairs) {
        if (p.fold) norms.exclude.push_back(p.norm.path);  // done: a later round must not touch it again
      }
      norms.exclude_reason = "already rewritten";
      report.rewrite_ms += ms_since(t);
      report.steps.push_back({tune ? "tune" : "fold", round, n, ms_since(t) + a.fold_ms});
      changed += n;
    }
    if (changed == 0) break;
  }
  report.pairs = book.pairs(false);
  report.absorbed = book.pairs(true);
  report.unpaired = book.unpaired();
  if (copy) {
    report.norms_after = tune ? report.norms_before - folded_count(report.pairs)
                              : count_distinct(find_norm_units(ProgramView(*copy), false));
  } else {
    report.norms_after = report.norms_before - folded_count(report.pairs);
  }
  if (copy && share) unshare_storages(*copy, module);
  if (!options.dry_run) result.module = copy;
  report.total_ms = ms_since(start);
  return result;
}

}  // namespace torchfold::core
