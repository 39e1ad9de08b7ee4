#include "op_replay.h"

#include <torch/csrc/jit/ir/ir.h>

#include "analyze.h"

namespace torchfold::core {

namespace {

using torch::jit::Block;
using torch::jit::Graph;

// A value `v` is available at node `n`: it is made in a block that holds n
// (or one of n's enclosing nodes) and before it.
bool available_at(JValue* v, Node* n) {
  const Block* home = v->node()->kind() == c10::prim::Param ? v->owningGraph()->block() : v->node()->owningBlock();
  Node* cur = n;
  while (cur && cur->owningBlock() != home) cur = cur->owningBlock() ? cur->owningBlock()->owningNode() : nullptr;
  if (!cur) return false;
  return v->node()->kind() == c10::prim::Param || v->node()->isBefore(cur);
}

// The shape apply_rank_guard makes: If(aten::eq(aten::dim(x), k)) whose
// first branch only returns a value made outside, and whose second branch
// runs one operator on x with a constant weight, then the unit.
bool is_rank_guard(const Node* owner) {
  if (owner->kind() != c10::prim::If || owner->blocks().size() != 2) return false;
  Node* eq = owner->input(0)->node();
  if (eq->kind() != c10::aten::eq || eq->inputs().size() != 2) return false;
  Node* dim = eq->input(0)->node();
  if (dim->kind() != c10::aten::dim || eq->input(1)->node()->kind() != c10::prim::Constant) return false;
  const Block* folded = owner->blocks()[0];
  if (folded->nodes().begin() != folded->nodes().end()) return false;
  std::vector<const Node*> work;
  for (const Node* n : owner->blocks()[1]->nodes())
    if (n->kind() != c10::prim::Constant) work.push_back(n);
  return work.size() == 2 && work[0]->inputs().size() >= 2 && work[0]->input(0) == dim->input(0) &&
         work[0]->input(1)->node()->kind() == c10::prim::Constant;
}

}  // namespace

namespace {

std::variant<RankGuard, std::string> plan_replay(const ProgramView& view, const Pair& p, int64_t rank, bool op_unique) {
  const Frame* holder = p.norm.holder;
  if (view.frames_running(p.norm.remove).size() != 1 || (op_unique && view.frames_running(p.op.node).size() != 1)) {
    return std::string("its code is shared by several module instances");
  }
  // The operator's input, followed out of the calls between it and the unit.
  Site s{p.op.node->input(0), p.op.frame};
  for (int guard = 0; s.frame != holder && guard < 256; ++guard) {
    Node* n = s.value->node();
    const Frame& f = *s.frame;
    if (n->kind() != c10::prim::Param || n != f.graph->param_node() || !f.caller) break;
    if (!f.is_function && s.value->offset() == 0) break;
    s = Site{f.call_node->input(s.value->offset() + (f.is_function ? 1 : 0)), f.caller};
  }
  if (s.frame != holder || !available_at(s.value, p.norm.remove)) {
    return std::string("the operator's input is not a value of the code that runs the normalization");
  }
  RankGuard g;
  g.rank = rank;
  g.input = s.value;
  for (size_t i = 3; i < p.op.node->inputs().size(); ++i) {
    auto c = view.constant_arg(Site{p.op.node->input(i), p.op.frame});
    if (!c) return std::string("the operator's arguments are not constants");
    g.args.push_back(c);
  }
  const at::Tensor w = op_weight(p.op), b = op_bias(p.op);
  g.bytes = static_cast<int64_t>(w.nbytes()) + (b.defined() ? static_cast<int64_t>(b.nbytes()) : 0);
  return g;
}

// A new node running the operator of `p` on `input` with constant weight and
// bias and the constant arguments, inserted before `before`.
Node* replay_op(const Pair& p, const RankGuard& g, const at::Tensor& weight, const at::Tensor& bias, Node* before) {
  Graph* graph = before->owningGraph();
  torch::jit::WithInsertPoint here(before);
  std::vector<JValue*> inputs = {g.input, graph->insertConstant(weight),
                                 bias.defined() ? graph->insertConstant(bias) : graph->insertConstant(c10::IValue())};
  for (const auto& a : g.args) inputs.push_back(graph->insertConstant(*a));
  Node* op = graph->create(p.op.node->kind(), inputs, 1)->insertBefore(before);
  op->output()->setType(p.op.node->output()->type());
  return op;
}

}  // namespace

std::variant<RankGuard, std::string> plan_rank_guard(const ProgramView& view, const Pair& p, int64_t rank) {
  return plan_replay(view, p, rank, true);
}

std::variant<RankGuard, std::string> plan_site_copy(const ProgramView& view, const Pair& p) {
  auto plan = plan_replay(view, p, 0, false);
  if (auto* g = std::get_if<RankGuard>(&plan); g && p.folded) {
    g->bytes = static_cast<int64_t>(p.folded->weight.nbytes() + p.folded->bias.nbytes());
  }
  return plan;
}

void apply_site_copy(const Pair& p) {
  Node* unit = p.norm.remove;
  Node* op = replay_op(p, *p.site_copy, p.folded->weight, p.folded->bias, unit);
  unit->output()->replaceAllUsesWith(op->output());
  unit->destroy();
  // The call (or op) that made the unit's input, now unused; calls are not
  // removed by dead-code elimination (they may have side effects).
  Node* producer = p.norm.input->node();
  if (producer->kind() == c10::prim::CallMethod && !p.norm.input->hasUses() && producer->outputs().size() == 1) {
    producer->destroy();
  }
}

void apply_rank_guard(const Pair& p, const at::Tensor& weight, const at::Tensor& bias) {
  const RankGuard& g = *p.guard;
  Node* unit = p.norm.remove;
  Graph* graph = unit->owningGraph();
  Node* cond_if = nullptr;
  {
    torch::jit::WithInsertPoint here(unit);
    JValue* dim = graph->insert(c10::aten::dim, {g.input});
    JValue* cond = graph->insert(c10::aten::eq, {dim, graph->insertConstant(g.rank)});
    cond_if = graph->create(c10::prim::If, {cond}, 1)->insertBefore(unit);
  }
  cond_if->output()->setType(unit->output()->type());
  Block* folded = cond_if->addBlock();
  Block* original = cond_if->addBlock();
  unit->output()->replaceAllUsesWith(cond_if->output());
  folded->registerOutput(p.norm.input);
  // The fallback: the operator with its original weight and bias, then the unit.
  unit->moveBefore(original->return_node());
  Node* op = replay_op(p, g, weight, bias, unit);
  for (size_t i = 0; i < unit->inputs().size(); ++i) {
    if (unit->input(i) == p.norm.input) unit->replaceInput(i, op->output());
  }
  original->registerOutput(unit->output());
}

bool in_rank_guard_fallback(const Node* n) {
  for (const Node* cur = n; cur;) {
    const Block* b = cur->owningBlock();
    const Node* owner = b ? b->owningNode() : nullptr;
    if (!owner) return false;
    if (b == owner->blocks()[1] && is_rank_guard(owner)) return true;
    cur = owner;
  }
  return false;
}

}  // namespace torchfold::core
