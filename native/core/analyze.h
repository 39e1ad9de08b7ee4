// Phase one of a fuse: find every (linear operator -> normalization) pair in
// every method and decide, with a reason, whether it folds. Nothing is
// changed, so inspect() is exactly this phase.
//
// A pair folds only when all of these hold:
//  - the operator's output reaches the norm and nothing else (uses inside a
//    branch that a constant rules out do not count), across any number of
//    module boundaries;
//  - the norm runs in eval mode (or treat_training_as_eval) with running
//    statistics, finite values and var + eps > 0, and its channels match;
//  - the weight (and bias) attributes are read by nothing but operators
//    whose pairs fold with the same norm, and are not tied to other tensors;
//  - code shared between instances of one class (one graph, several frames)
//    folds in every instance, because the rewrite changes that graph for all.
#pragma once

#include <torch/script.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fold_math.h"
#include "graph_walk.h"
#include "patterns.h"
#include "op_replay.h"

namespace torchfold::core {

// Exact (float64) weight and bias of operators folded earlier in the same
// run, by weight key, so a chain of folds rounds once.
using ExactParams = std::map<std::string, std::pair<ExactWeight, at::Tensor>>;

struct AnalyzeOptions {
  // What to look for after each operator: BatchNorms, or arithmetic with constants.
  enum class Target { Norms, Constants } target = Target::Norms;
  bool treat_training_as_eval = false;
  // Tune mode: pairs are checked for the on-the-fly rewrite (tune.h) instead
  // of being folded; BatchNorms in training mode are fine.
  bool tune = false;
  std::vector<std::string> exclude;  // norm paths never to fold
  std::string exclude_reason;
  // When set, only these (operator path, norm path) pairs may fold; the rest
  // are skipped with only_reason.
  std::optional<std::set<std::pair<std::string, std::string>>> only;
  std::string only_reason;
  const ExactParams* exact = nullptr;
};

struct Pair {
  NormUnit norm;
  LinearOp op;
  std::vector<Site> chain;  // from the norm's input back to the operator's output
  std::string method;       // the root method it was found in
  bool fold = false;
  std::string reason;  // why not, when !fold
  std::optional<Folded> folded;
  // Set when the fold is exact for one input rank only: the rewrite keeps
  // the original path for the others (op_replay.h).
  std::optional<RankGuard> guard;
  // Set when the weight is also read elsewhere: this site gets its own copy
  // of the operator with the folded tensors as constants, and the module's
  // weight and bias stay as they were (op_replay.h).
  std::optional<RankGuard> site_copy;
};

// A normalization that runs on something no linear operator made, with why
// in words ("its input comes from aten::cat, not a convolution or linear").
struct Unpaired {
  NormUnit norm;
  std::string method;  // the root method it was found in
  std::string reason;
};

struct Analysis {
  std::unique_ptr<ProgramView> view;
  std::vector<Pair> pairs;
  std::vector<Unpaired> unpaired;  // norms only (not constant absorption)
  int norm_units = 0;              // distinct normalizations that run
  double fold_ms = 0;              // time spent computing folded tensors (part of analyze)
};

Analysis analyze(const torch::jit::Module& module, const AnalyzeOptions& options);

// Normalizations counted once each, however many methods run them.
int count_distinct(const std::vector<NormUnit>& units);

// The module path of the operator's weight owner (what reports call "conv").
std::string op_path(const LinearOp& op);

}  // namespace torchfold::core
