#include "transform.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <map>
#include <set>

namespace torchfold::core {

namespace {

using torch::jit::Graph;

c10::TypePtr optional_tensor() { return c10::OptionalType::create(c10::TensorType::get()); }

// Sets a tensor attribute, keeping the old value's requires_grad (or, for an
// attribute just added, that of `like`). An attribute just added to the class
// has no slot in this object yet: reading it would run past the object's
// slots, so it counts as None.
void set_tensor(torch::jit::Module& owner, const std::string& name, at::Tensor value, const std::string& like) {
  auto obj = owner._ivalue();
  const size_t slot = obj->type()->getAttributeSlot(name);
  if (slot < obj->slots().size()) {
    const c10::IValue& old = obj->getSlot(slot);
    if (old.isTensor() && old.toTensor().defined()) {
      value.set_requires_grad(old.toTensor().requires_grad());
      obj->setSlot(slot, value);
      return;
    }
  }
  const c10::IValue model = owner.hasattr(like) ? owner.attr(like) : c10::IValue();
  value.set_requires_grad(model.isTensor() && model.toTensor().requires_grad());
  obj->setSlot(slot, value);
}

// A parameter typed None (a scripted conv declared without bias) cannot be
// retyped in place, so it is removed and added again as Optional[Tensor] in
// every object of the class, and the graphs that read it learn the new type
// (a NoneType value would otherwise be treated as the constant None).
void retype_none_parameter(torch::jit::Module& root, const c10::ClassTypePtr& type, const std::string& name) {
  std::vector<c10::intrusive_ptr<c10::ivalue::Object>> objects;
  for (const auto& m : root.modules()) {
    if (m.type() == type) objects.push_back(m._ivalue());
  }
  for (auto& obj : objects) obj->unsafeRemoveAttr(name);
  type->unsafeRemoveAttribute(name);
  type->addAttribute(name, optional_tensor(), /*is_parameter=*/true);
  for (auto& obj : objects) obj->setAttr(name, c10::IValue());
  for (const auto& m : root.modules()) {
    for (const auto& method : m.get_methods()) {
      for_each_node(method.graph()->block(), [&](Node* n) {
        if (n->kind() == c10::prim::GetAttr && n->s(c10::attr::name) == name && n->input(0)->type() == type) {
          n->output()->setType(optional_tensor());
        }
      });
    }
  }
}

// Makes sure the owner's class lets `bias` hold a tensor: None-typed
// attributes become Optional[Tensor]; a missing one is added as a parameter.
void allow_tensor_bias(torch::jit::Module& root, torch::jit::Module& owner, const std::string& name) {
  auto type = owner.type();
  if (!type->hasAttribute(name)) {
    type->addAttribute(name, optional_tensor(), /*is_parameter=*/true);
    return;
  }
  if (type->getAttribute(name)->kind() != c10::TypeKind::NoneType) return;
  if (type->is_parameter(type->getAttributeSlot(name))) {
    retype_none_parameter(root, type, name);
  } else {
    type->unsafeChangeAttributeType(name, optional_tensor());
  }
}

// The attribute a bias-less operator's new bias goes in. Modules keep "bias"
// (nn.Conv2d(bias=False) declares it None); a weight under another name (a
// functional conv on the module's own parameters) gets "<weight>_bias", and a
// name some other attribute already holds is never reused. One name per
// (class, weight): instances of a class share the graph that reads it.
std::string new_bias_name(const torch::jit::Module& owner, const std::string& weight,
                          std::map<std::pair<const c10::ClassType*, std::string>, std::string>& chosen) {
  const auto key = std::make_pair(owner.type().get(), weight);
  if (auto it = chosen.find(key); it != chosen.end()) return it->second;
  auto type = owner.type();
  std::string name = weight == "weight" ? "bias" : weight + "_bias";
  const bool usable = weight == "weight" &&
                      (!type->hasAttribute(name) || type->getAttribute(name)->kind() == c10::TypeKind::NoneType ||
                       owner.attr(name).isNone());
  if (!usable) {
    const std::string base = weight + "_bias";
    name = base;
    for (int i = 1; type->hasAttribute(name) || type->hasConstant(name); ++i) name = base + "_" + std::to_string(i);
  }
  chosen[key] = name;
  return name;
}

// A conv whose graph passes a constant None as bias: read the new attribute
// from the module the weight is read from, right before the op.
void read_bias_in_graph(const LinearOp& op, const std::string& name) {
  Node* weight_read = op.weight_chain.back().value->node();
  Graph* graph = op.node->owningGraph();
  torch::jit::WithInsertPoint guard(op.node);
  JValue* bias = graph->insertGetAttr(weight_read->input(0), name);
  op.node->replaceInput(2, bias);
}

struct BiasNames {
  std::set<const Node*> rewired;
  std::map<std::pair<const c10::ClassType*, std::string>, std::string> chosen;
};

// Gives the op a new constant as input `i` (the old one is left to dead-code
// elimination: constants may be pooled and read elsewhere).
void constant_input(const LinearOp& op, size_t i, const at::Tensor& value) {
  torch::jit::WithInsertPoint guard(op.node);
  op.node->replaceInput(i, op.node->owningGraph()->insertConstant(value));
}

void set_folded_params(torch::jit::Module& root, Pair& p, BiasNames& names) {
  // Graph constants (analysis made sure one frame runs this op, and that a
  // constant weight has no bias attribute).
  if (!p.op.weight || p.op.bias_constant) {
    if (p.op.weight) set_tensor(p.op.weight->owner, p.op.weight->name, p.folded->weight, p.op.weight->name);
    else constant_input(p.op, 1, p.folded->weight);
    constant_input(p.op, 2, p.folded->bias);
    return;
  }
  const std::string& weight = p.op.weight->name;
  set_tensor(p.op.weight->owner, weight, p.folded->weight, weight);
  if (p.op.bias) {
    torch::jit::Module bias_owner = p.op.bias->owner;
    allow_tensor_bias(root, bias_owner, p.op.bias->name);
    set_tensor(bias_owner, p.op.bias->name, p.folded->bias, weight);
    return;
  }
  // bias_constant_none: analysis guaranteed the weight is read in the op's graph.
  torch::jit::Module owner = p.op.weight->owner;
  const std::string name = new_bias_name(owner, weight, names.chosen);
  allow_tensor_bias(root, owner, name);
  set_tensor(owner, name, p.folded->bias, weight);
  if (names.rewired.insert(p.op.node).second) read_bias_in_graph(p.op, name);
}

// The unit's input (x of CallMethod(module, x), of F.batch_norm, of
// aten::batch_norm, or the operator's operand of a mul/div/add/sub) takes the
// place of its output.
void remove_norm(const NormUnit& u) {
  u.remove->output()->replaceAllUsesWith(u.input);
  u.remove->destroy();
}

// Objects of a class that gained an attribute need a slot for it, even the
// instances no method calls: give those None.
void fill_missing_slots(torch::jit::Module& root) {
  for (const auto& m : root.modules()) {
    auto obj = m._ivalue();
    const size_t want = obj->type()->numAttributes();
    for (size_t i = obj->slots().size(); i < want; ++i) obj->setSlot(i, c10::IValue());
  }
}

const char* kIdentityClass = "__torch__.torchfold.Identity";

// A new instance of the empty module that stands in for a folded norm: no
// parameters or buffers, forward returns its input. One class per
// compilation unit, made on first use.
torch::jit::Module identity_module(torch::jit::Module& root) {
  auto cu = root._ivalue()->compilation_unit();
  const c10::QualifiedName name(kIdentityClass);
  if (auto type = cu->get_class(name)) {
    torch::jit::Module m(cu, type);
    m.register_attribute("training", c10::BoolType::get(), false);
    return m;
  }
  torch::jit::Module m(name, cu, /*shouldMangle=*/false);
  m.register_attribute("training", c10::BoolType::get(), false);
  m.define("def forward(self, input: Tensor) -> Tensor:\n  return input\n");
  return m;
}

// Whether some method of some class in the tree still reads attribute `name`
// of an object of class `owner` (the folded norm's module).
bool still_read(const torch::jit::Module& root, const c10::ClassTypePtr& owner, const std::string& name) {
  std::set<const c10::ClassType*> seen;
  for (const auto& m : root.modules()) {
    if (!seen.insert(m.type().get()).second) continue;
    for (const auto& method : m.get_methods()) {
      bool found = false;
      for_each_node(method.graph()->block(), [&](Node* n) {
        found = found ||
                (n->kind() == c10::prim::GetAttr && n->s(c10::attr::name) == name && n->input(0)->type() == owner);
      });
      if (found) return true;
    }
  }
  return false;
}

// Replaces the folded norm modules by empty Identity modules under the same
// names, as torch.ao's fuse_modules does, so their parameters and buffers
// leave the module and Sequential indexing keeps working. A name is replaced
// in every instance of its parent's class at once (the class declares the
// attribute's type), so only where all of them folded that norm and no code
// reads it any more.
std::vector<std::string> replace_folded_norms(torch::jit::Module& root, const std::set<std::string>& folded) {
  std::map<std::string, torch::jit::Module> by_path;
  for (const auto& m : root.named_modules()) by_path.emplace(m.name, m.value);
  std::map<std::pair<const c10::ClassType*, std::string>, std::vector<std::string>> groups;
  for (const std::string& path : folded) {
    const auto dot = path.rfind('.');
    const std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
    const std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
    auto it = by_path.find(parent);
    if (it == by_path.end() || !by_path.count(path)) continue;
    groups[{it->second.type().get(), name}].push_back(parent);
  }
  std::vector<std::string> replaced;
  for (const auto& [key, parents] : groups) {
    const auto& [type, name] = key;
    std::vector<torch::jit::Module> instances;
    for (const auto& [path, m] : by_path) {
      if (m.type().get() == type) instances.push_back(m);
    }
    if (instances.size() != parents.size()) continue;
    const c10::ClassTypePtr parent_type = instances.front().type();
    if (still_read(root, parent_type, name)) continue;
    torch::jit::Module identity = identity_module(root);
    parent_type->unsafeChangeAttributeType(name, identity.type());
    for (const std::string& parent : parents) {
      torch::jit::Module owner = by_path.at(parent);
      owner._ivalue()->setAttr(name, identity_module(root)._ivalue());
      replaced.push_back(join_path(parent, name));
    }
  }
  std::sort(replaced.begin(), replaced.end());
  return replaced;
}

}  // namespace

TransformStats apply_folds(torch::jit::Module& module, Analysis& analysis, ExactParams* exact) {
  TransformStats stats;
  std::set<std::string> weights_done;
  std::set<const Node*> removed;
  BiasNames bias_names;
  std::set<Graph*> touched;
  for (Pair& p : analysis.pairs) {
    if (!p.fold) continue;
    ++stats.folded;
    if (p.site_copy) {  // the module's tensors stay; this site runs its own folded copy
      if (removed.insert(p.norm.remove).second) {
        touched.insert(p.norm.remove->owningGraph());
        apply_site_copy(p);
      }
      continue;
    }
    const std::string weight_key = p.op.weight ? p.op.weight->key()
                                               : "constant@" + std::to_string(reinterpret_cast<uintptr_t>(p.op.node));
    const at::Tensor weight0 = p.guard ? op_weight(p.op).clone() : at::Tensor();
    const at::Tensor bias0 = p.guard && op_bias(p.op).defined() ? op_bias(p.op).clone() : at::Tensor();
    if (weights_done.insert(weight_key).second) {
      set_folded_params(module, p, bias_names);
      if (exact && p.op.weight) (*exact)[weight_key] = {p.folded->weight_exact, p.folded->bias64};
      touched.insert(p.op.node->owningGraph());
    }
    if (removed.insert(p.norm.remove).second) {
      touched.insert(p.norm.remove->owningGraph());
      if (p.guard) {
        apply_rank_guard(p, weight0, bias0);
      } else {
        remove_norm(p.norm);
      }
    }
  }
  fill_missing_slots(module);
  for (Graph* g : touched) {
    torch::jit::EliminateDeadCode(g->block(), true,
                                  torch::jit::DCESideEffectPolicy::DONT_DELETE_NODES_WITH_SIDE_EFFECTS);
  }
  stats.graphs_changed = static_cast<int>(touched.size());
  std::set<std::string> norm_modules;
  for (const Pair& p : analysis.pairs) {
    if (p.fold && !p.norm.constant && p.norm.kind != "batch_norm" && !p.norm.path.empty()) {
      norm_modules.insert(p.norm.path);
    }
  }
  stats.dropped_norms = replace_folded_norms(module, norm_modules);
  return stats;
}

}  // namespace torchfold::core
