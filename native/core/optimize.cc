#include "optimize.h"

#include <ATen/Context.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <chrono>
#include <optional>
#include <set>
#include <sstream>

#include "error.h"
#include "runtime.h"

namespace torchfold::core {

namespace {

using torch::jit::Node;
using JValue = torch::jit::Value;

// conv2d's int[2] arguments and _convolution's int[] ones, known at compile
// time: a constant, or a ListConstruct of int constants (freezing propagates
// constants through forward; other methods may keep the ListConstruct). One
// value stands for both spatial dims, as it does for conv2d; it is expanded
// because mkldnn_convolution's int[] does not broadcast ("dimensions are
// invalid").
std::optional<std::vector<int64_t>> int_pair(JValue* v) {
  std::vector<int64_t> out;
  if (auto iv = torch::jit::toIValue(v)) {
    if (!iv->isIntList()) return std::nullopt;
    out = iv->toIntVector();
  } else if (v->node()->kind() == c10::prim::ListConstruct) {
    for (JValue* item : v->node()->inputs()) {
      auto i = torch::jit::constant_as<int64_t>(item);
      if (!i) return std::nullopt;
      out.push_back(*i);
    }
  } else {
    return std::nullopt;
  }
  if (out.size() == 1) out.push_back(out[0]);
  if (out.size() != 2) return std::nullopt;
  return out;
}

std::optional<at::Tensor> constant_tensor(JValue* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isTensor()) return std::nullopt;
  return iv->toTensor();
}

bool is_plain_cpu_float(const at::Tensor& t) {
  return t.layout() == at::kStrided && t.device().is_cpu() && t.scalar_type() == at::kFloat;
}

struct ConvPlan {
  ConvPlan() = default;
  // A plan that keeps the node, for this reason (`return {"why"}`).
  ConvPlan(std::string why) : why_not(std::move(why)) {}  // NOLINT(google-explicit-constructor)

  std::string why_not;  // empty: rewrite
  bool guard = false;   // emit `if len(input.size()) == 4` around it
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
};

// Decides whether `conv` (aten::conv2d or aten::_convolution) can call
// mkldnn_convolution with the same result, and with which arguments. What is
// known at compile time and would make the original fail or do something
// else keeps the node. One difference is left to run time: a bfloat16 input
// (whose dtype the graph does not record) makes conv2d fail on the float32
// weight, while mkldnn_convolution computes in bfloat16.
ConvPlan plan_conv(Node* conv) {
  ConvPlan plan;
  const bool is_conv2d = conv->kind() == c10::aten::conv2d;
  if (is_conv2d) {
    // conv2d.padding (padding='same'/'valid') has a str in that slot and
    // computes its own, possibly asymmetric, padding.
    if (conv->inputs().size() != 7) return {"unexpected conv2d signature"};
    if (conv->input(4)->type()->kind() == c10::TypeKind::StringType) return {"string padding ('same'/'valid')"};
  } else {
    // _convolution(input, weight, bias, stride, padding, dilation, transposed,
    // output_padding, groups, benchmark, deterministic, cudnn_enabled[,
    // allow_tf32]): the flags after groups only matter to CUDA.
    if (conv->inputs().size() < 12) return {"unexpected _convolution signature"};
    auto transposed = torch::jit::constant_as<bool>(conv->input(6));
    if (!transposed) return {"transposed is not a constant"};
    if (*transposed) return {"transposed convolution"};
    auto output_padding = int_pair(conv->input(7));
    if (!output_padding || (*output_padding)[0] != 0 || (*output_padding)[1] != 0) {
      return {"output_padding is not constant zeros"};
    }
  }
  if (!at::hasMKLDNN()) return {"libtorch is built without oneDNN"};

  JValue* input = conv->input(0);
  auto weight = constant_tensor(conv->input(1));
  if (!weight) return {"weight is not a constant (is the module frozen?)"};
  // 4-d weights only: conv1d/conv3d also reach _convolution.
  if (weight->dim() != 4) return {"weight is " + std::to_string(weight->dim()) + "-d, not 4-d"};
  if (!is_plain_cpu_float(*weight)) return {"weight is not a dense float32 CPU tensor"};
  if (weight->numel() == 0) return {"empty weight"};

  auto bias = torch::jit::toIValue(conv->input(2));
  if (!bias) return {"bias is not a constant"};
  if (!bias->isNone()) {
    if (!bias->isTensor() || !is_plain_cpu_float(bias->toTensor()) || bias->toTensor().dim() != 1 ||
        bias->toTensor().size(0) != weight->size(0)) {
      return {"bias is not a float32 CPU vector matching the weight"};
    }
  }

  auto stride = int_pair(conv->input(3));
  auto padding = int_pair(conv->input(4));
  auto dilation = int_pair(conv->input(5));
  auto groups = torch::jit::constant_as<int64_t>(conv->input(is_conv2d ? 6 : 8));
  if (!stride || !padding || !dilation || !groups) return {"stride/padding/dilation/groups not constant"};
  // Values conv2d rejects with an error are kept, so the error stays.
  for (int i = 0; i < 2; ++i) {
    if ((*stride)[i] < 1 || (*dilation)[i] < 1 || (*padding)[i] < 0) return {"invalid stride/padding/dilation"};
  }
  if (*groups < 1 || weight->size(0) % *groups != 0) return {"invalid groups"};

  // Frozen graphs type their inputs as plain Tensor, so usually nothing is
  // known here; what is known must agree.
  auto type = input->type()->cast<c10::TensorType>();
  if (!type) return {"input is not typed as a Tensor"};
  if (auto st = type->scalarType(); st && *st != at::kFloat) {
    return {std::string("input is ") + c10::toString(*st)};
  }
  if (auto device = type->device(); device && !device->is_cpu()) return {"input is not on the CPU"};
  if (auto rank = type->dim()) {
    if (*rank != 4) return {"input is " + std::to_string(*rank) + "-d"};
  } else {
    // mkldnn_convolution needs a 4-d input ("Expected 4-dimensional input for
    // 4-dimensional weight"), as _convolution does, so an unknown rank only
    // matters for conv2d, which also takes an unbatched 3-d input.
    plan.guard = is_conv2d;
  }
  plan.stride = *stride;
  plan.padding = *padding;
  plan.dilation = *dilation;
  plan.groups = *groups;
  return plan;
}

// Replaces `conv` by aten::mkldnn_convolution(input, weight, bias, padding,
// stride, dilation, groups) (padding before stride, unlike conv2d). With a
// guard, the original conv2d moves into the else branch of
// `if len(input.size()) == 4`, unchanged.
void rewrite_conv(torch::jit::Graph& graph, Node* conv, const ConvPlan& plan) {
  JValue* out = conv->output();
  torch::jit::WithInsertPoint before(conv);
  JValue* padding = graph.insertConstant(plan.padding);
  JValue* stride = graph.insertConstant(plan.stride);
  JValue* dilation = graph.insertConstant(plan.dilation);
  JValue* groups = graph.insertConstant(plan.groups);
  auto emit = [&] {
    JValue* y = graph.insert(c10::Symbol::fromQualString("aten::mkldnn_convolution"),
                             {conv->input(0), conv->input(1), conv->input(2), padding, stride, dilation, groups}, {},
                             conv->sourceRange());
    y->setType(out->type());
    return y;
  };
  if (!plan.guard) {
    out->replaceAllUsesWith(emit());
    conv->destroy();
    return;
  }
  // len(input.size()), not input.dim(): libtorch's peephole pass
  // (PeepholeOptimizeAliasSensitive) rewrites dim(conv2d(...)) to 4 although
  // an unbatched conv2d returns 3-d, which would defeat the guard whenever the
  // input comes from a kept conv2d.
  JValue* sizes = graph.insert(c10::aten::size, {conv->input(0)});
  JValue* rank = graph.insert(c10::aten::len, {sizes});
  JValue* is_4d = graph.insert(c10::aten::eq, {rank, graph.insertConstant(4)});
  Node* branch = graph.insertNode(graph.create(c10::prim::If, {is_4d}, 0));
  JValue* result = branch->addOutput()->setType(out->type());
  out->replaceAllUsesWith(result);
  torch::jit::Block* then_block = branch->addBlock();
  torch::jit::Block* else_block = branch->addBlock();
  {
    torch::jit::WithInsertPoint in_then(then_block);
    then_block->registerOutput(emit());
  }
  conv->moveBefore(else_block->return_node());
  else_block->registerOutput(out);
}

void collect_convs(torch::jit::Block* block, std::vector<Node*>& out) {
  for (Node* node : block->nodes()) {
    for (torch::jit::Block* sub : node->blocks()) collect_convs(sub, out);
    if (node->kind() == c10::aten::conv2d || node->kind() == c10::aten::_convolution) out.push_back(node);
  }
}

}  // namespace

namespace {

// Saves to memory and loads back: some optimized modules hold constants the
// serializer cannot write (oneDNN tensors), which only shows here.
void check_round_trip(const torch::jit::Module& module, const std::string& device, Variant* v) {
  try {
    std::stringstream buffer;
    module.save(buffer);
    torch::jit::load(buffer, c10::Device(device));
  } catch (const c10::Error& e) {
    v->saveable = false;
    v->save_error = torch_message(e);
  } catch (const std::exception& e) {
    v->saveable = false;
    v->save_error = e.what();
  }
}

}  // namespace

std::string round_trip_error(const torch::jit::Module& module, const std::string& device) {
  Variant v;
  check_round_trip(module, device, &v);
  return v.save_error;
}

torch::jit::Module freeze_for_inference(const torch::jit::Module& module, bool optimize_for_inference) {
  std::vector<std::string> others;
  for (const auto& name : method_names(module)) {
    if (name != "forward") others.push_back(name);
  }
  torch::jit::Module frozen = torch::jit::freeze(module, others, /*optimize_numerics=*/true);
  if (optimize_for_inference) frozen = torch::jit::optimize_for_inference(frozen, others);
  return frozen;
}

Variant inference_variant(const torch::jit::Module& module, bool optimize_for_inference) {
  apply_thread_settings();
  // A frozen module has no `training` attribute (libtorch then says training): it can be frozen again.
  if (module.hasattr("training") && is_training(module)) {
    throw Error(ErrorCode::InvalidArg, "optimize needs the module in eval mode: call module.eval() first "
                                       "(freezing bakes the current mode into the graph)");
  }
  const auto t0 = std::chrono::steady_clock::now();
  Variant v;
  torch::jit::Module frozen = freeze_for_inference(module, optimize_for_inference);
  v.module = std::make_shared<torch::jit::Module>(frozen);
  v.build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  check_round_trip(frozen, module_device(module), &v);
  return v;
}

MkldnnRewrite mkldnn_conv_variant(const torch::jit::Module& frozen) {
  const auto t0 = std::chrono::steady_clock::now();
  // clone(), not deepcopy(): deepcopy makes a new object of the same class
  // type, and a method's graph belongs to the type, so rewriting the copy's
  // graphs would rewrite the input's too. clone() gives the copy its own type
  // with copied graphs; constant tensors are shared, and never written.
  MkldnnRewrite r;
  r.module = std::make_shared<torch::jit::Module>(frozen.clone());
  // A frozen module's methods are fully inlined, so the root's methods hold
  // every convolution; submodule methods are walked too so that a module
  // that was not frozen reports its convolutions as kept instead of nothing.
  // Instances of one class share its graphs: each graph is visited once.
  std::set<const torch::jit::Graph*> seen;
  for (const auto& sub : r.module->named_modules()) {
    for (const auto& method : sub.value.get_methods()) {
      auto graph = method.graph();
      if (!seen.insert(graph.get()).second) continue;
      const std::string where = (sub.name.empty() ? "" : sub.name + ".") + method.name();
      std::vector<Node*> convs;
      collect_convs(graph->block(), convs);
      for (Node* conv : convs) {
        ConvPlan plan = plan_conv(conv);
        if (plan.why_not.empty()) {
          rewrite_conv(*graph, conv, plan);
          ++r.rewritten;
          if (plan.guard) ++r.guarded;
        } else {
          ++r.kept;
          r.kept_reasons.push_back(where + ": " + conv->kind().toQualString() + " -> %" + conv->output()->debugName() +
                                   ": " + plan.why_not);
        }
      }
      // Drops the constants only the replaced convolutions used, then checks
      // the graph is still well formed before anything runs or saves it.
      torch::jit::EliminateDeadCode(graph);
      graph->lint();
    }
  }
  r.build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace torchfold::core

namespace torchfold::core {

OnednnVariant onednn_variant(const torch::jit::Module& frozen) {
  apply_thread_settings();
  MkldnnRewrite r = mkldnn_conv_variant(frozen);
  OnednnVariant out;
  out.variant.module = r.module;
  out.variant.build_ms = r.build_ms;
  out.rewritten = r.rewritten;
  out.kept = r.kept;
  out.kept_reasons = std::move(r.kept_reasons);
  check_round_trip(*r.module, module_device(*r.module), &out.variant);
  return out;
}

}  // namespace torchfold::core
