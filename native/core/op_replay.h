// Folds that replay the operator in the graph that runs the unit (the
// normalization call, or the arithmetic op), with tensors as graph constants.
//
// Rank guards: a fold that is exact only for one rank of the operator's
// input, kept exact for every input:
//
//   y = op'(x)                       (the operator, now with folded weights)
//   out = y if x.dim() == rank else unit(op(x, W, b))
//
// The fallback branch runs the original operator, with its original weight
// and bias as graph constants, and the original unit. Two cases need it:
//  - Linear -> BatchNorm1d when the Linear's input cannot be proven 2-D (on
//    3-D input BatchNorm1d normalizes another dimension);
//  - a per-channel constant with a batch dimension ([1, C, 1, 1]) after a
//    convolution whose input may be unbatched (it would gain a dimension).
// The fallback costs the original weight and bias in bytes, and a repeated
// call of the operator on inputs of other ranks.
//
// Site copies: when the operator's weight is also read elsewhere (the same
// conv called again without a BatchNorm, a weight tied to another, different
// BatchNorms at different call sites), the site with the unit gets its own
// copy of the operator: out = op(x, W', b') with W', b' graph constants, and
// the module's weights stay as they were. It costs the folded weight and
// bias in bytes.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "graph_walk.h"

namespace torchfold::core {

struct Pair;

struct RankGuard {
  int64_t rank = 2;                              // 0 for a site copy
  JValue* input = nullptr;                       // the operator's input, as a value of the unit's graph
  std::vector<std::optional<c10::IValue>> args;  // the operator's inputs after bias: constants
  int64_t bytes = 0;                             // the original weight and bias kept for the fallback
};

// Plans a guard for `p` (checked, not yet folded): the operator's input must
// be reachable in the graph that holds the unit, before it, and its other
// arguments constants; one module instance must run both graphs. Otherwise,
// why not.
std::variant<RankGuard, std::string> plan_rank_guard(const ProgramView& view, const Pair& p, int64_t rank);

// Plans a site copy for `p` (checked and folded): as plan_rank_guard, but
// several frames may run the operator (the same conv called at several
// sites); one must run the unit.
std::variant<RankGuard, std::string> plan_site_copy(const ProgramView& view, const Pair& p);

// Replaces the unit of a folded pair, and the call that fed it when nothing
// else uses that, by the operator with the folded weight and bias as graph
// constants.
void apply_site_copy(const Pair& p);

// Rewrites the unit of a folded pair into the guarded form. `weight` and
// `bias` are the operator's original tensors (bias undefined for None).
void apply_rank_guard(const Pair& p, const at::Tensor& weight, const at::Tensor& bias);

// Whether a node sits in the fallback branch of a rank guard (an If on
// `aten::eq(aten::dim(x), k)`, its else branch): such units and operators are
// the original path, never folded again and not counted as remaining.
bool in_rank_guard_fallback(const Node* n);

}  // namespace torchfold::core
