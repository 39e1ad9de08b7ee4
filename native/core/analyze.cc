#include "analyze.h"

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

std::optional<std::string> exclusive(const ProgramView& view, const std::vector<Site>& chain,
                                     const char* what) {
  for (const Site& s : chain) {
    auto uses = view.live_uses(s.value);
    if (uses.size() == 1) continue;
    std::string users;
    for (const auto& u : uses) users += (users.empty() ? "" : ", ") + std::string(u.user->kind().toQualString());
    return std::string(what) + " is used " + std::to_string(uses.size()) + " times in " + where(*s.frame) +
           (users.empty() ? "" : " (" + users + ")");
  }
  return std::nullopt;
}

std::optional<std::string> kinds_match(const ProgramView& view, const Pair& p) {
  if (p.op.spatial_dims == 0) {
    if (p.norm.spatial_dims > 1) return p.norm.kind + " cannot follow a Linear";
    if (!input_is_2d(view, p.op)) {
      return std::string("the Linear's input cannot be proven 2-D, and on 3-D input BatchNorm1d normalizes "
                         "another dimension than the Linear's outputs");
    }
    return std::nullopt;
  }
  if (p.norm.spatial_dims > 0 && p.norm.spatial_dims != p.op.spatial_dims) {
    return p.norm.kind + " cannot follow a " + std::to_string(p.op.spatial_dims) + "-d convolution";
  }
  return std::nullopt;
}

void decide(const ProgramView& view, Pair& p, double* fold_ms) {
  auto skip = [&](std::string reason) { p.fold = false; p.reason = std::move(reason); };
  if (!p.norm.problem.empty()) return skip(p.norm.kind + " '" + p.norm.path + "': " + p.norm.problem);
  if (!p.op.problem.empty()) return skip(p.op.kind + ": " + p.op.problem);
  if (auto why = exclusive(view, p.chain, "the convolution's output")) return skip(*why);
  if (auto why = exclusive(view, p.op.weight_chain, "the weight")) return skip(*why);
  if (auto why = kinds_match(view, p)) return skip(*why);
  FoldInput in;
  in.weight = p.op.weight->owner.attr(p.op.weight->name).toTensor();
  if (p.op.bias) {
    c10::IValue b = p.op.bias->owner.attr(p.op.bias->name);
    if (b.isTensor()) in.bias = b.toTensor();
  }
  in.layout = p.op.layout;
  in.groups = p.op.groups;
  const auto t0 = std::chrono::steady_clock::now();
  FoldOutcome out = fold(in, p.norm.stats);
  *fold_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!out.folded) return skip(out.reason);
  p.folded = std::move(out.folded);
  p.fold = true;
}

// Every GetAttr of a tensor attribute that can run, by attribute key.
std::map<std::string, std::vector<Site>> attribute_readers(const ProgramView& view) {
  std::map<std::string, std::vector<Site>> readers;
  for (const Frame* f : view.frames()) {
    for_each_node(f->graph->block(), [&](Node* n) {
      if (n->kind() != c10::prim::GetAttr || view.is_dead(n)) return;
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
                         const std::map<std::string, std::vector<Site>>& readers,
                         const std::set<std::string>& tied) {
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
    for (Pair* p : group) {
      if (tied.count(key)) skip(*p, "the weight '" + key + "' is shared with another parameter (tied)");
      if (p->norm.path != first.norm.path) skip(*p, "'" + key + "' is followed by different BatchNorms at different call sites");
    }
    for (const std::string& attr : {key, first.op.bias ? first.op.bias->key() : std::string()}) {
      if (attr.empty() || !readers.count(attr)) continue;
      for (const Site& r : readers.at(attr)) {
        bool known = false;
        for (Pair* p : group) {
          if (!p->fold) continue;
          for (const Site& w : p->op.weight_chain) known = known || same_site(w, r);
          if (attr != key) known = known || same_site(view.origin(Site{p->op.node->input(2), p->op.frame}, false), r);
        }
        if (!known) {
          for (Pair* p : group) skip(*p, "'" + attr + "' is also read in " + where(*r.frame));
        }
      }
    }
  }
  for (auto& [node, group] : by_op) {
    if (!group.front()->op.bias_constant_none) continue;
    bool all = group.size() == view.frames_running(node).size();
    for (Pair* p : group) all = all && p->fold && p->op.weight_chain.size() == 1;
    if (!all) {
      for (Pair* p : group) skip(*p, "the convolution has no bias and its code is shared with instances that cannot fold");
    }
  }
  return changed;
}

}  // namespace

int count_distinct(const std::vector<NormUnit>& units) {
  std::set<std::string> seen;  // by module path: one BatchNorm called from two methods is one
  for (const NormUnit& u : units) seen.insert(u.path);
  return static_cast<int>(seen.size());
}

Analysis analyze(const torch::jit::Module& module, const AnalyzeOptions& options) {
  Analysis a;
  a.view = std::make_unique<ProgramView>(module);
  const ProgramView& view = *a.view;
  std::vector<NormUnit> units = find_norm_units(view, options.treat_training_as_eval);
  a.norm_units = count_distinct(units);
  for (NormUnit& u : units) {
    Pair p;
    Site terminal = view.origin(Site{u.input, u.holder}, false, &p.chain);
    auto op = linear_op_at(view, terminal);
    if (!op) continue;
    p.op = std::move(*op);
    p.method = u.holder->root_method;
    p.norm = std::move(u);
    const bool excluded = std::find(options.exclude.begin(), options.exclude.end(), p.norm.path) != options.exclude.end();
    if (excluded) {
      p.reason = options.exclude_reason;
    } else {
      decide(view, p, &a.fold_ms);
    }
    a.pairs.push_back(std::move(p));
  }
  const auto readers = attribute_readers(view);
  const auto tied = tied_tensors(module);
  for (int pass = 0; pass < 64 && enforce_consistency(view, a.pairs, readers, tied); ++pass) {
  }
  for (Pair& p : a.pairs) {
    if (!p.fold) p.folded.reset();
  }
  return a;
}

}  // namespace torchfold::core
