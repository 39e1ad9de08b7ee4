#include "patterns.h"

#include "op_replay.h"

#include <set>
#include <sstream>

namespace torchfold::core {

namespace {

const std::set<std::string> kBatchNorms = {
    "torch.nn.modules.batchnorm.BatchNorm1d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.batchnorm.BatchNorm3d",
};
const char* kFrozenBatchNorm = "torchvision.ops.misc.FrozenBatchNorm2d";

std::string short_name(const std::string& qualified) {
  const auto dot = qualified.rfind('.');
  return dot == std::string::npos ? qualified : qualified.substr(dot + 1);
}

// Reads a tensor argument (or None) of a node, following values back with
// the instance's attributes. Returns false when it is neither.
bool tensor_arg(const ProgramView& view, Site s, at::Tensor* out, std::vector<std::string>* keys) {
  auto c = view.constant_of(s, /*use_attributes=*/true);
  if (!c) return false;
  if (c->isNone()) return true;
  if (!c->isTensor()) return false;
  *out = c->toTensor();
  if (auto a = view.attribute_of(s, true)) keys->push_back(a->key());
  return true;
}

// Fills a unit's statistics from an aten::batch_norm node running in `frame`.
void read_batch_norm(const ProgramView& view, Node* bn, const Frame* frame, bool treat_training_as_eval,
                     NormUnit* unit) {
  NormStats& st = unit->stats;
  auto arg = [&](size_t i) { return Site{bn->input(i), frame}; };
  if (!tensor_arg(view, arg(1), &st.gamma, &unit->stat_keys) || !tensor_arg(view, arg(2), &st.beta, &unit->stat_keys) ||
      !tensor_arg(view, arg(3), &st.mean, &unit->stat_keys) || !tensor_arg(view, arg(4), &st.var, &unit->stat_keys)) {
    unit->problem = "its parameters or statistics are computed, not stored in the module";
    return;
  }
  auto eps = view.constant_of(arg(7), true);
  if (!eps || !eps->isDouble()) {
    unit->problem = "its eps is not a constant";
    return;
  }
  st.eps = eps->toDouble();
  auto training = view.eval_bool(arg(5), true);
  if (!training) {
    unit->problem = "it cannot be told whether it runs in training mode";
    return;
  }
  unit->training = *training;
  if (!st.mean.defined() || !st.var.defined()) {
    unit->problem = "it has no running statistics (track_running_stats=False)";
  } else if (*training && !treat_training_as_eval) {
    unit->problem =
        "it is in training mode (batch statistics); pass treatTrainingAsEval to fold its running statistics";
  }
}

// The eps a traced FrozenBatchNorm2d baked into its graph (the attribute is a
// Python float a trace does not keep): the constant of `running_var (+ reshape) + eps`.
std::optional<double> traced_eps(const Frame& f) {
  std::optional<double> eps;
  for_each_node(f.graph->block(), [&](Node* n) {
    if (eps || n->kind() != c10::aten::add || n->inputs().size() < 2) return;
    Node* var = n->input(0)->node();
    while (var->kind() == c10::aten::reshape || var->kind() == c10::aten::view) var = var->input(0)->node();
    if (var->kind() != c10::prim::GetAttr || var->s(c10::attr::name) != "running_var") return;
    if (n->input(1)->node()->kind() != c10::prim::Constant) return;
    auto c = torch::jit::toIValue(n->input(1));
    if (c && c->isDouble()) eps = c->toDouble();
    if (c && c->isTensor() && c->toTensor().numel() == 1) eps = c->toTensor().to(at::kDouble).item<double>();
  });
  return eps;
}

void read_frozen(const torch::jit::Module& m, const Frame& f, NormUnit* unit) {
  NormStats& st = unit->stats;
  const char* names[] = {"weight", "bias", "running_mean", "running_var"};
  at::Tensor* slots[] = {&st.gamma, &st.beta, &st.mean, &st.var};
  for (int i = 0; i < 4; ++i) {
    if (!m.hasattr(names[i]) || !m.attr(names[i]).isTensor()) {
      unit->problem = std::string("it has no tensor '") + names[i] + "'";
      return;
    }
    *slots[i] = m.attr(names[i]).toTensor();
    unit->stat_keys.push_back(join_path(unit->path, names[i]));
  }
  if (m.hasattr("eps") && m.attr("eps").isDouble()) {
    st.eps = m.attr("eps").toDouble();
  } else if (m.type()->hasConstant("eps")) {
    st.eps = m.type()->getConstant("eps").toDouble();
  } else if (auto eps = traced_eps(f)) {
    st.eps = *eps;
  } else {
    unit->problem = "it has no eps";
  }
}

// The single live aten::batch_norm a module's forward runs (itself or in a
// function it calls, as F.batch_norm), if the forward returns its result
// computed from its own input.
std::optional<Site> module_batch_norm(const ProgramView& view, const Frame& f, size_t input_index) {
  std::vector<Site> found;
  std::vector<const Frame*> todo = {&f};
  while (!todo.empty()) {
    const Frame* cur = todo.back();
    todo.pop_back();
    for_each_node(cur->graph->block(), [&](Node* n) {
      if (n->kind() == c10::aten::batch_norm && !view.is_dead(n, cur)) found.push_back(Site{n->output(), cur});
    });
    for (const auto& c : cur->children) todo.push_back(c.get());
  }
  if (found.size() != 1 || f.graph->outputs().size() != 1) return std::nullopt;
  const Site bn = found.front();
  Site ret = view.origin(Site{f.graph->outputs()[0], &f}, true);
  std::vector<Site> chain;  // the input may come from further back: it must pass f's parameter
  view.origin(Site{bn.value->node()->input(0), bn.frame}, false, &chain);
  const bool returns_it = ret.value == bn.value && ret.frame == bn.frame;
  bool reads_input = false;
  for (const Site& s : chain)
    reads_input = reads_input || (s.frame == &f && s.value == f.graph->inputs().at(input_index));
  if (!returns_it || !reads_input) return std::nullopt;
  return bn;
}

NormUnit module_unit(const Frame& f, const std::string& cls) {
  NormUnit u;
  u.holder = f.caller;
  u.remove = f.call_node;
  u.input = f.call_node->input(1);
  u.path = f.path;
  u.kind = short_name(cls);
  const char last = u.kind.size() >= 2 ? u.kind[u.kind.size() - 2] : '?';
  if (last >= '1' && last <= '3') u.spatial_dims = last - '0';
  return u;
}

}  // namespace

std::string class_name(const torch::jit::Module& m) {
  auto type = m.type();
  if (!type || !type->name()) return "";
  std::string name = type->name()->qualifiedName();
  const std::string prefix = "__torch__.";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  const std::string mangle = "___torch_mangle_";
  for (size_t pos; (pos = name.find(mangle)) != std::string::npos;) {
    const size_t end = name.find('.', pos);
    name.erase(pos, end == std::string::npos ? std::string::npos : end - pos + 1);
  }
  return name;
}

std::vector<NormUnit> find_norm_units(const ProgramView& view, bool treat_training_as_eval) {
  std::vector<NormUnit> units;
  std::set<std::pair<const Node*, const Frame*>> owned;  // batch_norms that belong to a module unit
  std::set<const Frame*> fallback;                       // frames called from a rank guard's original path
  for (const Frame* f : view.frames()) {
    const std::string cls = class_name(f->instance);
    // The original path a rank guard keeps is not a unit of its own (op_replay.h).
    if (f->caller && (fallback.count(f->caller) || in_rank_guard_fallback(f->call_node))) {
      fallback.insert(f);
      continue;
    }
    const bool module_call = f->caller && !f->is_function && f->method == "forward" && f->graph->inputs().size() == 2;
    if (module_call && cls == kFrozenBatchNorm) {
      NormUnit u = module_unit(*f, cls);
      u.spatial_dims = 2;
      read_frozen(f->instance, *f, &u);
      units.push_back(std::move(u));
      continue;
    }
    if (module_call && kBatchNorms.count(cls)) {
      if (auto bn = module_batch_norm(view, *f, 1)) {
        NormUnit u = module_unit(*f, cls);
        read_batch_norm(view, bn->value->node(), bn->frame, treat_training_as_eval, &u);
        owned.insert({bn->value->node(), bn->frame});
        units.push_back(std::move(u));
      }
    }
    // F.batch_norm(...) in scripted code is a call of a shared function: remove
    // the call (in the caller's graph), not the op inside the shared function.
    const bool function_call = f->caller && f->is_function && f->method == "batch_norm" && !f->graph->inputs().empty();
    if (function_call) {
      auto bn = module_batch_norm(view, *f, 0);
      if (bn && !owned.count({bn->value->node(), bn->frame})) {
        NormUnit u;
        u.holder = f->caller;
        u.remove = f->call_node;
        u.input = f->call_node->input(1);
        u.kind = "batch_norm";
        read_batch_norm(view, bn->value->node(), bn->frame, treat_training_as_eval, &u);
        auto mean = view.attribute_of(Site{bn->value->node()->input(3), bn->frame}, true);
        u.path = mean ? mean->path : f->path;
        owned.insert({bn->value->node(), bn->frame});
        units.push_back(std::move(u));
      }
    }
    for_each_node(f->graph->block(), [&](Node* n) {
      if (n->kind() != c10::aten::batch_norm || view.is_dead(n, f) || owned.count({n, f})) return;
      if (in_rank_guard_fallback(n)) return;
      NormUnit u;
      u.holder = f;
      u.remove = n;
      u.input = n->input(0);
      u.kind = "batch_norm";
      read_batch_norm(view, n, f, treat_training_as_eval, &u);
      auto mean = view.attribute_of(Site{n->input(3), f}, true);
      u.path = mean ? mean->path : f->path;
      units.push_back(std::move(u));
    });
  }
  return units;
}

}  // namespace torchfold::core

namespace torchfold::core {

namespace {

struct OpShape {
  WeightLayout layout;
  int groups_input;      // -1: no groups argument (linear)
  int transposed_input;  // -1: fixed by the op
};

std::optional<OpShape> op_shape(c10::Symbol kind) {
  const std::string k = kind.toQualString();
  if (k == "aten::conv1d" || k == "aten::conv2d" || k == "aten::conv3d") return OpShape{WeightLayout::OutFirst, 6, -1};
  if (k == "aten::conv_transpose1d" || k == "aten::conv_transpose2d" || k == "aten::conv_transpose3d") {
    return OpShape{WeightLayout::Transposed, 6, -1};
  }
  if (k == "aten::_convolution" || k == "aten::convolution") return OpShape{WeightLayout::OutFirst, 8, 6};
  if (k == "aten::linear") return OpShape{WeightLayout::OutFirst, -1, -1};
  return std::nullopt;
}

// A defined tensor made by a prim::Constant.
std::optional<at::Tensor> tensor_constant(Site s) {
  if (s.value->node()->kind() != c10::prim::Constant) return std::nullopt;
  auto c = torch::jit::toIValue(s.value);
  if (!c || !c->isTensor() || !c->toTensor().defined()) return std::nullopt;
  return c->toTensor();
}

std::string op_kind_name(const LinearOp& op, const at::Tensor& weight) {
  if (op.node->kind() == c10::aten::linear) return "Linear";
  const std::string owner = op.weight ? class_name(op.weight->owner) : "";
  const std::string base = op.layout == WeightLayout::Transposed ? "ConvTranspose" : "Conv";
  const std::string name = base + std::to_string(weight.dim() - 2) + "d";
  return owner.rfind("torch.nn.modules.conv.", 0) == 0 ? name : name + " (functional)";
}

}  // namespace

at::Tensor op_weight(const LinearOp& op) {
  if (op.weight_constant) return torch::jit::toIValue(op.weight_constant->output())->toTensor();
  return op.weight->owner.attr(op.weight->name).toTensor();
}

at::Tensor op_bias(const LinearOp& op) {
  if (op.bias_constant) return torch::jit::toIValue(op.bias_constant->output())->toTensor();
  if (op.bias) {
    c10::IValue b = op.bias->owner.attr(op.bias->name);
    if (b.isTensor()) return b.toTensor();
  }
  return at::Tensor();
}

std::optional<LinearOp> linear_op_at(const ProgramView& view, Site terminal) {
  Node* n = terminal.value->node();
  auto shape = op_shape(n->kind());
  if (!shape || n->outputs().size() != 1) return std::nullopt;
  LinearOp op;
  op.frame = terminal.frame;
  op.node = n;
  op.layout = shape->layout;
  auto at_input = [&](int i) { return Site{n->input(static_cast<size_t>(i)), terminal.frame}; };
  if (shape->transposed_input >= 0) {
    auto t = view.constant_of(at_input(shape->transposed_input), false);
    if (!t || !t->isBool()) {
      op.problem = "its 'transposed' flag is not a constant";
      op.kind = "convolution";  // the reason reads "convolution: ..."
      return op;
    }
    if (t->toBool()) op.layout = WeightLayout::Transposed;
  }
  if (shape->groups_input >= 0) {
    auto g = view.constant_of(at_input(shape->groups_input), false);
    if (!g || !g->isInt()) {
      op.problem = "its groups are not a constant";
      op.kind = "convolution";  // the reason reads "convolution: ..."
      return op;
    }
    op.groups = g->toInt();
  }
  view.origin(at_input(1), false, &op.weight_chain);
  op.weight = view.attribute_of(at_input(1), false);
  at::Tensor weight;
  if (op.weight && op.weight->owner.attr(op.weight->name).isTensor()) {
    weight = op.weight->owner.attr(op.weight->name).toTensor();
  } else if (auto c = tensor_constant(op.weight_chain.back())) {
    op.weight.reset();
    op.weight_constant = op.weight_chain.back().value->node();
    weight = *c;
  } else {
    op.weight.reset();
    op.problem = "its weight is neither a tensor attribute of a module nor a constant";
    op.kind = "convolution";
    return op;
  }
  op.spatial_dims = n->kind() == c10::aten::linear ? 0 : static_cast<int>(weight.dim()) - 2;
  op.kind = op_kind_name(op, weight);
  Site bias = view.origin(at_input(2), false);
  bool bias_none = false;
  if (bias.value->node()->kind() == c10::prim::Constant) {
    auto c = torch::jit::toIValue(bias.value);
    bias_none = c && c->isNone();
  }
  if (bias_none) {
    op.bias_constant_none = true;
  } else if (auto b = view.attribute_of(at_input(2), false)) {
    op.bias = b;
  } else if (tensor_constant(bias)) {
    op.bias_constant = bias.value->node();
  } else {
    op.problem = "its bias is computed, not stored in the module";
  }
  return op;
}

}  // namespace torchfold::core

namespace torchfold::core {

namespace {

std::string shape_text(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// The constant operand of an arithmetic op: a number or tensor literal, or a
// tensor attribute read as is (its other readers are checked in analysis).
std::optional<ConstantOp> constant_operand(const ProgramView& view, Site s) {
  ConstantOp c;
  Site o = view.origin(s, false);
  if (o.value->node()->kind() == c10::prim::Constant) {
    auto v = torch::jit::toIValue(o.value);
    if (!v) return std::nullopt;
    if (v->isDouble() || v->isInt()) {
      c.constant = *v;
      std::ostringstream os;
      os << "scalar " << (v->isDouble() ? v->toDouble() : static_cast<double>(v->toInt()));
      c.describe = os.str();
      return c;
    }
    if (v->isTensor() && v->toTensor().defined()) {
      c.constant = *v;
      c.describe = "constant " + shape_text(v->toTensor());
      return c;
    }
    return std::nullopt;
  }
  if (auto a = view.attribute_of(s, false)) {
    c10::IValue v = a->owner.attr(a->name);
    if (!v.isTensor() || !v.toTensor().defined()) return std::nullopt;
    c.constant = v;
    c.attribute = a;
    c.attribute_read = o;
    c.describe = "'" + a->key() + "' " + shape_text(v.toTensor());
    return c;
  }
  return std::nullopt;
}

const char* arithmetic_name(const Node* n) {
  if (n->kind() == c10::aten::mul) return "mul";
  if (n->kind() == c10::aten::div) return "div";
  if (n->kind() == c10::aten::add) return "add";
  if (n->kind() == c10::aten::sub) return "sub";
  return nullptr;
}

}  // namespace

std::vector<NormUnit> find_constant_units(const ProgramView& view) {
  std::vector<NormUnit> units;
  for (const Frame* f : view.frames()) {
    for_each_node(f->graph->block(), [&](Node* n) {
      const char* name = arithmetic_name(n);
      if (!name || view.is_dead(n, f) || n->outputs().size() != 1 || n->inputs().size() < 2) return;
      if (in_rank_guard_fallback(n)) return;
      // div with rounding_mode, and the overloads with an out= argument, are not affine.
      const std::string op = name;
      if (op == "div" && n->inputs().size() != 2) return;
      if ((op == "mul") && n->inputs().size() != 2) return;
      if ((op == "add" || op == "sub") && n->inputs().size() != 3) return;
      if (!n->input(0)->type()->isSubtypeOf(*c10::TensorType::get()) &&
          !n->input(1)->type()->isSubtypeOf(*c10::TensorType::get()))
        return;
      int op_index = -1;
      for (int i : {0, 1}) {
        Site terminal = view.origin(Site{n->input(static_cast<size_t>(i)), f}, false);
        if (linear_op_at(view, terminal)) {
          op_index = i;
          break;
        }
      }
      if (op_index < 0) return;
      auto c = constant_operand(view, Site{n->input(static_cast<size_t>(1 - op_index)), f});
      if (!c) return;
      c->op = op;
      c->op_first = op_index == 0;
      NormUnit u;
      u.holder = f;
      u.remove = n;
      u.input = n->input(static_cast<size_t>(op_index));
      u.kind = op;
      u.path = c->attribute ? c->attribute->key() : f->path;
      if (n->inputs().size() == 3) {
        auto alpha = view.constant_of(Site{n->input(2), f}, false);
        if (alpha && (alpha->isDouble() || alpha->isInt())) {
          c->alpha = alpha->isDouble() ? alpha->toDouble() : static_cast<double>(alpha->toInt());
        } else {
          u.problem = "its alpha is not a constant";
        }
      }
      if (op == "div" && !c->op_first) u.problem = "it divides by the operator's output, which is not linear";
      if (c->attribute) u.stat_keys.push_back(c->attribute->key());
      u.constant = std::move(c);
      units.push_back(std::move(u));
    });
  }
  return units;
}

}  // namespace torchfold::core
