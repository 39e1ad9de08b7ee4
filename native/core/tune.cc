#include "tune.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <set>
#include <variant>

namespace torchfold::core {

namespace {

using torch::jit::Graph;

// Everything the rewrite needs, found before any graph changes.
struct Plan {
  Node* norm_call = nullptr;           // CallMethod of the BatchNorm module, in the holder graph
  Node* producer = nullptr;            // what makes the BatchNorm's input there: the op or the conv module call
  Node* op = nullptr;                  // the convolution / linear op
  bool direct = false;                 // producer == op
  JValue* input = nullptr;             // the op's input, as a value of the holder graph
  JValue* conv_module = nullptr;       // the conv module (call case)
  std::string weight_name, bias_name;  // attributes of conv_module (call case)
  JValue* weight = nullptr;            // direct case: the op's own weight and bias values
  JValue* bias = nullptr;
  bool has_bias = false;
  std::vector<c10::IValue> constant_args;  // call case: op inputs from 3 on
  WeightLayout layout = WeightLayout::OutFirst;
  int64_t weight_dim = 0;
  double eps = 1e-5;
};

bool passes(const std::vector<Site>& chain, JValue* v, const Frame* f) {
  for (const Site& s : chain) {
    if (s.value == v && s.frame == f) return true;
  }
  return false;
}

bool is_tensor(const c10::TypePtr& t) { return t->kind() == c10::TypeKind::TensorType; }
bool is_optional_tensor(const c10::TypePtr& t) {
  auto o = t->cast<c10::OptionalType>();
  return o && o->getElementType()->kind() == c10::TypeKind::TensorType;
}

std::variant<Plan, std::string> make_plan(const ProgramView& view, const Pair& p) {
  Plan plan;
  const NormUnit& u = p.norm;
  if (u.constant) return std::string("tune mode applies to BatchNorms only");
  if (u.kind == "FrozenBatchNorm2d") return std::string("FrozenBatchNorm2d has no training mode; use mode 'fold'");
  if (u.remove->kind() != c10::prim::CallMethod) {
    return std::string("tune mode needs a BatchNorm module call (this one is functional); use mode 'fold'");
  }
  const Frame* holder = u.holder;
  plan.norm_call = u.remove;
  plan.producer = u.input->node();
  plan.op = p.op.node;
  plan.eps = u.stats.eps;
  plan.layout = p.op.layout;
  if (!p.op.weight || p.op.bias_constant) {
    return std::string(
        "tune mode needs the weight and bias in module attributes (these are graph constants); use mode 'fold'");
  }
  const at::Tensor weight = op_weight(p.op);
  plan.weight_dim = weight.dim();
  if (p.op.layout == WeightLayout::Transposed && p.op.groups != 1) {
    return std::string("tune mode does not rewrite grouped transposed convolutions; use mode 'fold'");
  }
  if (plan.producer->owningBlock() != plan.norm_call->owningBlock()) {
    return std::string("the convolution and the BatchNorm run in different blocks");
  }
  auto bn_type = plan.norm_call->input(0)->type()->cast<c10::ClassType>();
  for (const char* name : {"running_mean", "running_var", "training"}) {
    if (!bn_type || !bn_type->hasAttribute(name)) return std::string("the BatchNorm has no attribute '") + name + "'";
  }
  if (plan.producer == p.op.node && p.op.frame == holder) {
    plan.direct = true;
    plan.input = p.op.node->input(0);
    plan.weight = p.op.node->input(1);
    plan.bias = p.op.node->input(2);
    plan.has_bias = !p.op.bias_constant_none;
    if (!is_tensor(plan.weight->type())) return std::string("the weight is not typed Tensor");
    if (plan.has_bias && !is_tensor(plan.bias->type()) && !is_optional_tensor(plan.bias->type())) {
      return std::string("the bias is not typed Tensor");
    }
    return plan;
  }
  if (plan.producer->kind() != c10::prim::CallMethod || plan.producer->s(c10::attr::name) != "forward" ||
      plan.producer->inputs().size() < 2) {
    return std::string("the BatchNorm's input is not made by a conv module call in the same graph");
  }
  for (size_t i = 2; i < plan.producer->inputs().size(); ++i) {  // e.g. ConvTranspose's output_size=None
    auto c = view.constant_of(Site{plan.producer->input(i), holder}, false);
    if (!c || !c->isNone()) return std::string("the conv module is called with more than its input");
  }
  auto callee = holder->child_for_call.find(plan.producer);
  if (callee == holder->child_for_call.end() || callee->second->path != p.op.weight->path) {
    return std::string("the BatchNorm's input is not made by a call of the module that owns the weight");
  }
  std::vector<Site> chain;
  view.origin(Site{p.op.node->input(0), p.op.frame}, false, &chain);
  if (!passes(chain, plan.producer->input(1), holder)) {
    return std::string("the conv module does more than one convolution of its input (e.g. a padding mode); "
                       "use mode 'fold'");
  }
  plan.input = plan.producer->input(1);
  plan.conv_module = plan.producer->input(0);
  auto conv_type = plan.conv_module->type()->cast<c10::ClassType>();
  plan.weight_name = p.op.weight->name;
  if (!conv_type || !conv_type->hasAttribute(plan.weight_name) ||
      !is_tensor(conv_type->getAttribute(plan.weight_name))) {
    return std::string("the conv module's weight is not typed Tensor");
  }
  if (p.op.bias) {
    if (p.op.bias->path != p.op.weight->path) return std::string("the bias belongs to another module");
    plan.bias_name = p.op.bias->name;
    auto t = conv_type->getAttribute(plan.bias_name);
    plan.has_bias = t->kind() != c10::TypeKind::NoneType;
    if (plan.has_bias && !is_tensor(t) && !is_optional_tensor(t)) return std::string("the bias is not typed Tensor");
  }
  for (size_t i = 3; i < p.op.node->inputs().size(); ++i) {
    auto c = view.constant_arg(Site{p.op.node->input(i), p.op.frame});
    if (!c) return std::string("the convolution's arguments are not constants");
    plan.constant_args.push_back(*c);
  }
  return plan;
}

JValue* as_tensor(Graph& g, JValue* v) {
  return is_tensor(v->type()) ? v : g.insertUncheckedCast(v, c10::TensorType::get());
}

// The attribute `name` of a module value as a Tensor; null if it is typed None.
JValue* tensor_attr(Graph& g, JValue* module, const std::string& name) {
  auto type = module->type()->expect<c10::ClassType>();
  if (type->getAttribute(name)->kind() == c10::TypeKind::NoneType) return nullptr;
  return as_tensor(g, g.insertGetAttr(module, name));
}

void rewrite(const Plan& plan) {
  Graph& g = *plan.norm_call->owningGraph();
  Node* bn = plan.norm_call;
  JValue* bn_module = bn->input(0);
  torch::jit::WithInsertPoint at_bn(bn);
  JValue* training = g.insertGetAttr(bn_module, "training");
  Node* branch = g.insertNode(g.create(c10::prim::If, 0));
  branch->addInput(training);
  JValue* out = branch->addOutput()->setType(bn->output()->type());
  bn->output()->replaceAllUsesWith(out);
  torch::jit::Block* train = branch->addBlock();
  torch::jit::Block* eval = branch->addBlock();
  // Training: the original calls, unchanged.
  plan.producer->moveBefore(train->return_node());
  bn->moveBefore(train->return_node());
  train->registerOutput(bn->output());
  // Eval: fold on the fly from the live parameters and statistics.
  torch::jit::WithInsertPoint in_eval(eval);
  JValue* mean = tensor_attr(g, bn_module, "running_mean");
  JValue* var = tensor_attr(g, bn_module, "running_var");
  JValue* gamma = tensor_attr(g, bn_module, "weight");
  JValue* beta = tensor_attr(g, bn_module, "bias");
  JValue* scale = g.insert(c10::aten::rsqrt, {g.insert(c10::aten::add, {var, plan.eps})});
  if (gamma) scale = g.insert(c10::aten::mul, {gamma, scale});
  std::vector<int64_t> shape(static_cast<size_t>(plan.weight_dim), 1);
  shape[plan.layout == WeightLayout::OutFirst ? 0 : 1] = -1;
  JValue* weight = plan.direct ? plan.weight : g.insertGetAttr(plan.conv_module, plan.weight_name);
  JValue* scaled_weight = g.insert(c10::aten::mul, {weight, g.insert(c10::aten::reshape, {scale, shape})});
  JValue* bias = nullptr;
  if (plan.has_bias) bias = plan.direct ? plan.bias : g.insertGetAttr(plan.conv_module, plan.bias_name);
  JValue* centered = nullptr;
  if (!bias) {
    centered = g.insert(c10::aten::neg, {mean});
  } else if (is_tensor(bias->type())) {
    centered = g.insert(c10::aten::sub, {bias, mean});
  } else {
    // Optional[Tensor]: which instances have a bias is known only at run time.
    JValue* none = g.insertConstant(c10::IValue());
    Node* has = g.insertNode(g.create(c10::aten::__isnot__, {bias, none}));
    has->output()->setType(c10::BoolType::get());
    Node* pick = g.insertNode(g.create(c10::prim::If, 0));
    pick->addInput(has->output());
    centered = pick->addOutput()->setType(c10::TensorType::get());
    torch::jit::Block* with = pick->addBlock();
    torch::jit::Block* without = pick->addBlock();
    {
      torch::jit::WithInsertPoint in_with(with);
      with->registerOutput(g.insert(c10::aten::sub, {as_tensor(g, bias), mean}));
    }
    {
      torch::jit::WithInsertPoint in_without(without);
      without->registerOutput(g.insert(c10::aten::neg, {mean}));
    }
  }
  JValue* new_bias = g.insert(c10::aten::mul, {centered, scale});
  if (beta) new_bias = g.insert(c10::aten::add, {new_bias, beta});
  std::vector<JValue*> args = {plan.input, scaled_weight, new_bias};
  for (size_t i = 3; i < plan.op->inputs().size(); ++i) {
    args.push_back(plan.direct ? plan.op->input(i) : g.insertConstant(plan.constant_args[i - 3]));
  }
  size_t next = 0;
  Node* conv = g.createClone(plan.op, [&](JValue*) { return args[next++]; });
  g.insertNode(conv);
  eval->registerOutput(conv->output());
}

}  // namespace

std::optional<std::string> tune_problem(const ProgramView& view, const Pair& p) {
  auto plan = make_plan(view, p);
  if (auto* why = std::get_if<std::string>(&plan)) return *why;
  return std::nullopt;
}

int apply_tune(torch::jit::Module& module, Analysis& analysis) {
  std::vector<Plan> plans;
  std::set<const Node*> seen;
  for (Pair& p : analysis.pairs) {
    if (!p.fold || !seen.insert(p.norm.remove).second) continue;
    auto plan = make_plan(*analysis.view, p);
    if (auto* ok = std::get_if<Plan>(&plan)) plans.push_back(*ok);
  }
  std::set<Graph*> touched;
  for (const Plan& plan : plans) {
    rewrite(plan);
    touched.insert(plan.norm_call->owningGraph());
  }
  for (Graph* g : touched) {
    torch::jit::EliminateDeadCode(g->block(), true,
                                  torch::jit::DCESideEffectPolicy::DONT_DELETE_NODES_WITH_SIDE_EFFECTS);
  }
  return static_cast<int>(plans.size());
}

}  // namespace torchfold::core
