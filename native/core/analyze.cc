#include "analyze.h"

#include "tune.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

namespace torchfold::core {

namespace {

std::string where(const Frame& f) {
  return (f.path.empty() ? std::string("the root") : "'" + f.path + "'") + " (" + f.method + ")";
}

// The linear operator's input is provably 2-D (so BatchNorm1d normalizes the
// same dimension the weight's rows produce).
bool input_is_2d(const ProgramView& view, const LinearOp& op) {
  Site s = view.origin(Site{op.node->input(0), op.frame}, false);
  if (auto t = s.value->type()->cast<c10::TensorType>()) {
    if (t->dim() && *t->dim() == 2) return true;
  }
  Node* n = s.value->node();
  if (n->kind() == c10::aten::flatten) {
    auto start = view.constant_of(Site{n->input(1), s.frame}, false);
    auto end = view.constant_of(Site{n->input(2), s.frame}, false);
    return start && end && start->isInt() && end->isInt() && start->toInt() == 1 && end->toInt() == -1;
  }
  if (n->kind() == c10::aten::view || n->kind() == c10::aten::reshape) {
    Node* list = n->input(1)->node();
    return list->kind() == c10::prim::ListConstruct && list->inputs().size() == 2;
  }
  return false;
}

std::optional<std::string> exclusive(const ProgramView& view, const std::vector<Site>& chain, const char* what) {
  for (const Site& s : chain) {
    auto uses = view.live_uses(s.value, s.frame);
    if (uses.size() == 1) continue;
    std::string users;
    for (const auto& u : uses) users += (users.empty() ? "" : ", ") + std::string(u.user->kind().toQualString());
    return std::string(what) + " is used " + std::to_string(uses.size()) + " times in " + where(*s.frame) +
           (users.empty() ? "" : " (" + users + ")");
  }
  return std::nullopt;
}

std::optional<std::string> kinds_match(const Pair& p) {
  if (p.op.spatial_dims == 0) {
    if (p.norm.spatial_dims > 1) return p.norm.kind + " cannot follow a Linear";
    return std::nullopt;
  }
  if (p.norm.spatial_dims > 0 && p.norm.spatial_dims != p.op.spatial_dims) {
    return p.norm.kind + " cannot follow a " + std::to_string(p.op.spatial_dims) + "-d convolution";
  }
  return std::nullopt;
}

// The input of a convolution is provably batched (its type says so).
bool input_is_batched(const ProgramView& view, const LinearOp& op) {
  Site s = view.origin(Site{op.node->input(0), op.frame}, false);
  auto t = s.value->type()->cast<c10::TensorType>();
  return t && t->dim() && static_cast<int>(*t->dim()) == op.spatial_dims + 2;
}

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Adds a rank guard to a pair whose fold is exact only for input of `rank`
// dimensions; returns why not (`unproven` and the planner's reason).
std::optional<std::string> guard_rank(const ProgramView& view, const AnalyzeOptions& options, Pair& p, int64_t rank,
                                      const std::string& unproven) {
  if (options.tune) return unproven;
  auto plan = plan_rank_guard(view, p, rank);
  if (auto* why = std::get_if<std::string>(&plan)) return unproven + " (no rank guard: " + *why + ")";
  p.guard = std::get<RankGuard>(plan);
  return std::nullopt;
}

// The per-channel affine map an arithmetic op with a constant applies to the
// operator's output, or why it is not one. A constant with a batch dimension
// on an input that may be unbatched gets a rank guard.
std::optional<std::string> constant_map(const ProgramView& view, const AnalyzeOptions& options, Pair& p,
                                        const at::Tensor& weight, AffineMap* map) {
  const ConstantOp& c = *p.norm.constant;
  const int64_t channels = out_channels(weight, p.op.layout, p.op.groups);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor per_channel;
  if (c.constant.isDouble() || c.constant.isInt()) {
    const double v = c.constant.isDouble() ? c.constant.toDouble() : static_cast<double>(c.constant.toInt());
    per_channel = at::full({channels}, v, f64);
  } else {
    const at::Tensor t = c.constant.toTensor();
    if (!at::isFloatingType(t.scalar_type()) && !at::isIntegralType(t.scalar_type(), false)) {
      return "the constant's dtype " + std::string(c10::toString(t.scalar_type())) + " is not a number type";
    }
    if (t.dim() > 0 && t.scalar_type() != weight.scalar_type()) {
      return "the constant's dtype " + std::string(c10::toString(t.scalar_type())) + " differs from the weight's " +
             c10::toString(weight.scalar_type()) + " (the result's dtype would change)";
    }
    const bool linear = p.op.spatial_dims == 0;
    const int full = p.op.spatial_dims + 2;  // batched output dims (2 for Linear on 2-D input)
    if (t.dim() > full) return "the constant " + shape_of(t) + " would add dimensions to the output";
    if (t.dim() == full && !(linear ? input_is_2d(view, p.op) : input_is_batched(view, p.op))) {
      const std::string unproven = "the constant " + shape_of(t) +
                                   (linear ? " needs a 2-D input and the Linear's input cannot be proven 2-D"
                                           : " has a batch dimension and the input is not provably batched "
                                             "(an unbatched input would gain a dimension)");
      if (auto why = guard_rank(view, options, p, full, unproven)) return why;
    }
    const int64_t channel_dim = linear ? t.dim() - 1 : t.dim() - (p.op.spatial_dims + 1);
    if (t.numel() == 1) {
      per_channel = at::full({channels}, t.to(at::kCPU, at::kDouble).reshape({}).item<double>(), f64);
    } else {
      bool ok = channel_dim >= 0 && t.size(channel_dim) == channels;
      for (int64_t i = 0; ok && i < t.dim(); ++i) ok = i == channel_dim || t.size(i) == 1;
      if (!ok)
        return "the constant " + shape_of(t) + " is not a per-channel constant for " + std::to_string(channels) +
               " channels";
      per_channel = t.to(at::kCPU, at::kDouble).reshape({channels});
    }
  }
  const auto scalar = [&](double v) { return at::full({channels}, v, f64); };
  if (c.op == "mul") {
    map->scale = per_channel;
  } else if (c.op == "div") {
    map->scale = per_channel;
    map->divide = true;
  } else if (c.op == "add" || c.op == "sub") {
    const double sign = c.op == "sub" ? -1.0 : 1.0;
    if (c.op_first) {
      map->shift = per_channel * (sign * c.alpha);  // x + alpha*c, x - alpha*c
    } else {
      if (sign * c.alpha != 1.0) map->scale = scalar(sign * c.alpha);  // c + alpha*x, c - alpha*x
      map->shift = per_channel;
    }
  }
  return std::nullopt;
}

// Folds already computed in this analysis, by weight and BatchNorm module: a
// pair met in several methods (forward and _forward_impl of a scripted
// torchvision model) is computed once, and its folded tensors are shared.
using FoldMemo = std::map<std::string, FoldOutcome>;

void decide(const ProgramView& view, const AnalyzeOptions& options, Pair& p, double* fold_ms, FoldMemo& memo) {
  auto skip = [&](std::string reason) {
    p.fold = false;
    p.reason = std::move(reason);
  };
  const bool constant = p.norm.constant.has_value();
  if (!p.norm.problem.empty()) {
    return skip(constant ? p.norm.problem : p.norm.kind + " '" + p.norm.path + "': " + p.norm.problem);
  }
  if (!p.op.problem.empty()) return skip(p.op.kind + ": " + p.op.problem);
  if (auto why = exclusive(view, p.chain, "the convolution's output")) return skip(*why);
  // A constant weight is never changed (the op gets a new one), so other readers do not matter.
  if (!p.op.weight_constant) {
    if (auto why = exclusive(view, p.op.weight_chain, "the weight")) return skip(*why);
  }
  if (p.op.weight_constant && p.op.bias) {
    return skip("its weight is a graph constant but its bias is a module attribute");
  }
  const bool baked = p.op.weight_constant || p.op.bias_constant || (p.op.bias_constant_none && !p.op.weight);
  if (baked && view.frames_running(p.op.node).size() != 1) {
    return skip("its weight or bias is a graph constant in code that several module instances run");
  }
  if (!constant) {
    if (auto why = kinds_match(p)) return skip(*why);
    if (p.op.spatial_dims == 0 && !input_is_2d(view, p.op)) {
      const std::string unproven =
          "the Linear's input cannot be proven 2-D, and on 3-D input BatchNorm1d normalizes another dimension "
          "than the Linear's outputs";
      if (auto why = guard_rank(view, options, p, 2, unproven)) return skip(*why);
    }
  }
  if (options.tune) {
    if (auto why = tune_problem(view, p)) return skip(*why);
  }
  FoldInput in;
  in.weight = op_weight(p.op);
  in.bias = op_bias(p.op);
  in.layout = p.op.layout;
  in.groups = p.op.groups;
  if (options.exact && p.op.weight) {
    auto e = options.exact->find(p.op.weight->key());
    if (e != options.exact->end()) {
      in.weight_exact = e->second.first;
      in.bias64 = e->second.second;
    }
  }
  const std::string memo_key = constant || p.norm.path.empty() || !p.op.weight
                                   ? std::string()
                                   : p.op.weight->key() + '\x1f' + p.norm.kind + '\x1f' + p.norm.path;
  if (!memo_key.empty()) {
    auto hit = memo.find(memo_key);
    if (hit != memo.end()) {
      if (!hit->second.folded) return skip(hit->second.reason);
      p.folded = hit->second.folded;
      p.fold = true;
      return;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  FoldOutcome out;
  if (constant) {
    AffineMap map;
    if (auto why = constant_map(view, options, p, in.weight, &map)) return skip(*why);
    out = fold_affine(in, map);
  } else {
    out = fold(in, p.norm.stats);
  }
  *fold_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!memo_key.empty()) memo[memo_key] = out;
  if (!out.folded) return skip(out.reason);
  p.folded = std::move(out.folded);
  p.fold = true;
}

// Every GetAttr of a tensor attribute that can run, by attribute key.
std::map<std::string, std::vector<Site>> attribute_readers(const ProgramView& view) {
  std::map<std::string, std::vector<Site>> readers;
  for (const Frame* f : view.frames()) {
    for_each_node(f->graph->block(), [&](Node* n) {
      if (n->kind() != c10::prim::GetAttr || view.is_dead(n, f)) return;
      if (auto a = view.attribute_of(Site{n->output(), f}, false)) readers[a->key()].push_back(Site{n->output(), f});
    });
  }
  return readers;
}

// Attribute keys of tensors reachable under more than one name.
std::set<std::string> tied_tensors(const torch::jit::Module& m) {
  std::map<const void*, std::vector<std::string>> by_impl;
  for (const auto& p : m.named_parameters(true)) by_impl[p.value.unsafeGetTensorImpl()].push_back(p.name);
  for (const auto& b : m.named_buffers(true)) by_impl[b.value.unsafeGetTensorImpl()].push_back(b.name);
  std::set<std::string> tied;
  for (const auto& [impl, names] : by_impl) {
    if (names.size() > 1) tied.insert(names.begin(), names.end());
  }
  return tied;
}

bool same_site(const Site& a, const Site& b) { return a.value == b.value && a.frame == b.frame; }

// One pass of the rules that tie pairs together; returns whether it changed anything.
bool enforce_consistency(const ProgramView& view, std::vector<Pair>& pairs,
                         const std::map<std::string, std::vector<Site>>& readers, const std::set<std::string>& tied,
                         bool tune) {
  bool changed = false;
  auto skip = [&](Pair& p, const std::string& why) {
    if (!p.fold) return;
    p.fold = false;
    p.reason = why;
    changed = true;
  };
  std::map<const Node*, std::vector<Pair*>> by_remove, by_op;
  std::map<std::string, std::vector<Pair*>> by_weight;
  for (Pair& p : pairs) {
    by_remove[p.norm.remove].push_back(&p);
    by_op[p.op.node].push_back(&p);
    if (p.op.weight) by_weight[p.op.weight->key()].push_back(&p);
  }
  for (auto& [node, group] : by_remove) {
    const size_t runs = view.frames_running(node).size();
    bool all = group.size() == runs;
    for (Pair* p : group) all = all && p->fold;
    if (all) continue;
    for (Pair* p : group) {
      skip(*p, "its code is shared with other instances of the same class, and not all of them can fold");
    }
  }
  for (auto& [key, group] : by_weight) {
    const Pair& first = *group.front();
    // Why the weight (or bias) attributes cannot be rewritten for this group, if so.
    std::string conflict;
    for (Pair* p : group) {
      if (!p->fold || !conflict.empty()) continue;
      if (tied.count(key)) conflict = "the weight '" + key + "' is shared with another parameter (tied)";
      else if (p->norm.path != first.norm.path)
        conflict = "'" + key + "' is followed by different BatchNorms at different call sites";
    }
    for (const std::string& attr : {key, first.op.bias ? first.op.bias->key() : std::string()}) {
      if (!conflict.empty() || attr.empty() || !readers.count(attr)) continue;
      for (const Site& r : readers.at(attr)) {
        bool known = false;
        for (Pair* p : group) {
          if (!p->fold || p->site_copy) continue;
          for (const Site& w : p->op.weight_chain) known = known || same_site(w, r);
          if (attr != key) known = known || same_site(view.origin(Site{p->op.node->input(2), p->op.frame}, false), r);
        }
        if (!known && conflict.empty()) conflict = "'" + attr + "' is also read in " + where(*r.frame);
      }
    }
    if (conflict.empty()) continue;
    // Nothing in this group may rewrite the attributes: each site that folds gets its own copy.
    for (Pair* p : group) {
      if (!p->fold || p->site_copy) continue;
      auto plan = tune ? std::variant<RankGuard, std::string>(std::string("tune mode keeps the modules"))
                       : plan_site_copy(view, *p);
      if (auto* g = std::get_if<RankGuard>(&plan); g && !p->guard) {
        p->site_copy = *g;
        changed = true;
      } else {
        skip(*p, conflict + (g ? "" : " (no copy for this site: " + std::get<std::string>(plan) + ")"));
      }
    }
  }
  for (auto& [node, group] : by_op) {
    if (!group.front()->op.bias_constant_none) continue;
    bool all = group.size() == view.frames_running(node).size();
    for (Pair* p : group) all = all && p->fold && (p->site_copy || p->op.weight_chain.size() == 1);
    if (!all) {
      for (Pair* p : group)
        skip(*p, "the convolution has no bias and its code is shared with instances that cannot fold");
    }
  }
  return changed;
}

// Attribute keys some program point assigns (prim::SetAttr).
std::map<std::string, const Frame*> assigned_attributes(const ProgramView& view) {
  std::map<std::string, const Frame*> out;
  for (const Frame* f : view.frames()) {
    for_each_node(f->graph->block(), [&](Node* n) {
      if (n->kind() != c10::prim::SetAttr || view.is_dead(n, f)) return;
      if (auto m = view.module_of(n->input(0), *f)) out[join_path(m->second, n->s(c10::attr::name))] = f;
    });
  }
  return out;
}

// A constant stored in an attribute is constant only if this op is its one
// reader and nothing assigns it.
void check_constant_attributes(const ProgramView& view, const std::map<std::string, std::vector<Site>>& readers,
                               std::vector<Pair>& pairs) {
  const auto assigned = assigned_attributes(view);
  for (Pair& p : pairs) {
    if (!p.fold || !p.norm.constant || !p.norm.constant->attribute) continue;
    const std::string key = p.norm.constant->attribute->key();
    if (auto it = assigned.find(key); it != assigned.end()) {
      p.fold = false;
      p.reason = "'" + key + "' is assigned in " + where(*it->second) + ", so it is not a constant";
      continue;
    }
    auto it = readers.find(key);
    if (it == readers.end()) continue;
    for (const Site& r : it->second) {
      if (same_site(r, p.norm.constant->attribute_read)) continue;
      p.fold = false;
      p.reason = "'" + key + "' is also read in " + where(*r.frame) + ", so it cannot be absorbed";
      break;
    }
  }
}

// Why a normalization has no operator to fold into: what its input comes from.
std::string unpaired_reason(Site t) {
  Node* n = t.value->node();
  const Frame& f = *t.frame;
  const std::string in = " in " + where(f);
  if (n->kind() == c10::prim::Param) {
    if (!f.caller) return "its input is an input of the '" + f.method + "' method, not a convolution or linear";
    return "its input is a parameter" + in + " that cannot be followed to its caller";
  }
  if (n->kind() == c10::prim::If) return "its input comes from an If on a condition that is not a constant" + in;
  if (n->kind() == c10::prim::Loop) return "its input comes from a loop" + in;
  if (n->kind() == c10::prim::CallMethod || n->kind() == c10::prim::CallFunction) {
    return "its input comes from a call that cannot be followed" + in;
  }
  return std::string("its input comes from ") + n->kind().toQualString() + ", not a convolution or linear" + in;
}

}  // namespace

std::string op_path(const LinearOp& op) { return op.weight ? op.weight->path : op.frame->path; }

int count_distinct(const std::vector<NormUnit>& units) {
  std::set<std::string> seen;  // by module path: one BatchNorm called from two methods is one
  for (const NormUnit& u : units) seen.insert(u.path);
  return static_cast<int>(seen.size());
}

Analysis analyze(const torch::jit::Module& module, const AnalyzeOptions& options) {
  Analysis a;
  a.view = std::make_unique<ProgramView>(module);
  const ProgramView& view = *a.view;
  const bool constants = options.target == AnalyzeOptions::Target::Constants;
  std::vector<NormUnit> units = constants ? find_constant_units(view)
                                          : find_norm_units(view, options.treat_training_as_eval || options.tune);
  a.norm_units = constants ? static_cast<int>(units.size()) : count_distinct(units);
  FoldMemo memo;
  for (NormUnit& u : units) {
    Pair p;
    Site terminal = view.origin(Site{u.input, u.holder}, false, &p.chain);
    auto op = linear_op_at(view, terminal);
    if (!op) {
      if (!constants) {
        Unpaired x;
        x.method = u.holder->root_method;
        x.reason = unpaired_reason(terminal);
        x.norm = std::move(u);
        a.unpaired.push_back(std::move(x));
      }
      continue;
    }
    p.op = std::move(*op);
    p.method = u.holder->root_method;
    p.norm = std::move(u);
    const bool excluded = std::find(options.exclude.begin(), options.exclude.end(), p.norm.path) !=
                          options.exclude.end();
    if (excluded) {
      p.reason = options.exclude_reason;
    } else if (options.only && !options.only->count({op_path(p.op), p.norm.path})) {
      p.reason = options.only_reason;
    } else {
      decide(view, options, p, &a.fold_ms, memo);
    }
    a.pairs.push_back(std::move(p));
  }
  const auto readers = attribute_readers(view);
  if (constants) check_constant_attributes(view, readers, a.pairs);
  const auto tied = tied_tensors(module);
  for (int pass = 0; pass < 64 && enforce_consistency(view, a.pairs, readers, tied, options.tune); ++pass) {
  }
  for (Pair& p : a.pairs) {
    if (!p.fold) p.folded.reset();
  }
  return a;
}

}  // namespace torchfold::core
