#include "channels_last.h"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <set>

namespace torchfold::core {

namespace {

using torch::jit::Node;
using JValue = torch::jit::Value;

bool is_conv(Node* n) {
  const auto k = n->kind();
  return k == c10::aten::conv2d || k == c10::aten::_convolution || k == c10::aten::convolution ||
         k == c10::Symbol::fromQualString("aten::mkldnn_convolution");
}

void collect_convs(torch::jit::Block* block, std::vector<Node*>& out) {
  for (Node* node : block->nodes()) {
    for (torch::jit::Block* sub : node->blocks()) collect_convs(sub, out);
    if (is_conv(node)) out.push_back(node);
  }
}

int convert_weights(torch::jit::Graph& graph) {
  std::vector<Node*> convs;
  collect_convs(graph.block(), convs);
  int n = 0;
  for (Node* conv : convs) {
    auto iv = torch::jit::toIValue(conv->input(1));
    if (!iv || !iv->isTensor()) continue;
    const at::Tensor w = iv->toTensor();
    if (w.dim() != 4 || w.layout() != at::kStrided || !at::isFloatingType(w.scalar_type())) continue;
    if (w.is_contiguous(at::MemoryFormat::ChannelsLast)) continue;
    torch::jit::WithInsertPoint at_conv(conv);
    JValue* cl = graph.insertConstant(w.contiguous(at::MemoryFormat::ChannelsLast));
    conv->replaceInput(1, cl);
    ++n;
  }
  return n;
}

// x -> (x.contiguous(memory_format=channels_last) if x.dim() == 4 else x)
int convert_inputs(torch::jit::Graph& graph) {
  int n = 0;
  Node* first = graph.block()->nodes().front();
  for (size_t i = 1; i < graph.inputs().size(); ++i) {  // 0 is self
    JValue* x = graph.inputs()[i];
    if (!x->type()->cast<c10::TensorType>()) continue;
    if (!x->hasUses()) continue;
    torch::jit::WithInsertPoint before(first);
    JValue* rank = graph.insert(c10::aten::dim, {x});
    JValue* is_4d = graph.insert(c10::aten::eq, {rank, graph.insertConstant(4)});
    Node* branch = graph.insertNode(graph.create(c10::prim::If, {is_4d}, 0));
    JValue* out = branch->addOutput()->setType(x->type());
    torch::jit::Block* then_block = branch->addBlock();
    torch::jit::Block* else_block = branch->addBlock();
    {
      torch::jit::WithInsertPoint in_then(then_block);
      JValue* format = graph.insertConstant(static_cast<int64_t>(at::MemoryFormat::ChannelsLast));
      then_block->registerOutput(
          graph.insert(c10::aten::contiguous, {x}, {torch::jit::NamedValue("memory_format", format)}));
    }
    else_block->registerOutput(x);
    x->replaceAllUsesAfterNodeWith(branch, out);
    ++n;
  }
  return n;
}

}  // namespace

ChannelsLast channels_last_variant(const torch::jit::Module& frozen) {
  ChannelsLast r;
  r.module = std::make_shared<torch::jit::Module>(frozen.clone());
  std::set<const torch::jit::Graph*> seen;
  for (const auto& method : r.module->get_methods()) {
    auto graph = method.graph();
    if (!seen.insert(graph.get()).second) continue;
    r.weights += convert_weights(*graph);
    r.inputs += convert_inputs(*graph);
    torch::jit::EliminateDeadCode(graph);
    graph->lint();
  }
  return r;
}

}  // namespace torchfold::core
