// Recognizes the two ends of a pair in a ProgramView: normalization units
// (a call of a BatchNorm / FrozenBatchNorm2d module, or a functional
// aten::batch_norm) and the linear operators that can absorb them
// (convolutions, transposed convolutions, linear).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "fold_math.h"
#include "graph_walk.h"

namespace torchfold::core {

// An arithmetic op with a constant that a linear operator's output passes
// through: mul, div, add, sub (constant absorption).
struct ConstantOp {
  std::string op;                    // "mul", "div", "add", "sub"
  bool op_first = true;              // the operator's output is the op's first operand
  c10::IValue constant;              // a number or a tensor, as found
  double alpha = 1.0;                // add/sub's alpha
  std::optional<AttrRef> attribute;  // where a tensor constant is stored, if it is an attribute
  Site attribute_read;               // the GetAttr it is read through
  std::string describe;              // "scalar 0.5", "'scale' [8, 1, 1]", "constant [8, 1, 1]"
};

struct NormUnit {
  const Frame* holder = nullptr;  // frame whose graph holds `remove`
  Node* remove = nullptr;         // CallMethod of the norm module, or aten::batch_norm
  JValue* input = nullptr;        // the normalized value, in holder's graph
  std::string path;               // module path (or the owner of its statistics)
  std::string kind;               // "BatchNorm2d", "FrozenBatchNorm2d", "batch_norm"
  int spatial_dims = -1;          // 1, 2, 3 for BatchNorm{1,2,3}d; -1 unknown
  // Statistics, resolved with the instance's current attributes. `problem` is
  // set (and the rest may be empty) when they cannot be used.
  NormStats stats;
  std::vector<std::string> stat_keys;  // attribute keys read (for tying checks)
  bool training = false;
  std::string problem;
  std::optional<ConstantOp> constant;  // set for constant absorption units
};

struct LinearOp {
  const Frame* frame = nullptr;
  Node* node = nullptr;
  std::string kind;       // "Conv2d", "ConvTranspose1d", "Linear", ...
  int spatial_dims = -1;  // 0 for Linear, -1 unknown
  WeightLayout layout = WeightLayout::OutFirst;
  int64_t groups = 1;
  std::optional<AttrRef> weight;
  std::optional<AttrRef> bias;  // set when read from an attribute (whose value may be None)
  bool bias_constant_none = false;
  // A weight or bias baked into the graph as a tensor constant (traced from
  // tensors that are not parameters, or a module frozen without folding):
  // its prim::Constant. A fold gives the op new constants.
  Node* weight_constant = nullptr;
  Node* bias_constant = nullptr;
  std::vector<Site> weight_chain;  // from the op's weight input back to its GetAttr
  std::string problem;
};

std::vector<NormUnit> find_norm_units(const ProgramView& view, bool treat_training_as_eval);
// Arithmetic ops with a constant whose other operand is a linear operator's
// output (constant absorption). Only ops whose constant is really constant
// (a literal, a traced constant, a tensor attribute) are listed.
std::vector<NormUnit> find_constant_units(const ProgramView& view);

// The operator that produced `s` (after following values back), if it is one.
std::optional<LinearOp> linear_op_at(const ProgramView& view, Site terminal);

// The operator's weight, and its bias (undefined when None), from its
// attributes or graph constants.
at::Tensor op_weight(const LinearOp& op);
at::Tensor op_bias(const LinearOp& op);

// The class name of a module without "__torch__." and mangling.
std::string class_name(const torch::jit::Module& m);

}  // namespace torchfold::core
