// A whole fuse (or, with dry_run, an inspect): clone, analyze, fold,
// rewrite, and a report of what was done, what was left and why, and how
// long each phase took. The caller's module is never modified.
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "module.h"
#include "module_copy.h"  // private_copy: what fuse rewrites

namespace torchfold::core {

struct FuseOptions {
  enum class Mode { Fold, Tune } mode = Mode::Fold;
  bool dry_run = false;
  // Also absorb arithmetic with constants (mul/div/add/sub) into the operators.
  bool constants = false;
  // Fold exactly these groups ([conv, norm] or [conv, norm, activation]) and
  // nothing else; a group that cannot fold is an ERR_FUSE_GROUP error.
  std::vector<std::vector<std::string>> groups;
  bool has_groups = false;
  bool treat_training_as_eval = false;
  // Norm module paths to leave unfolded (validation uses it to isolate a
  // pair), with the reason to report for them.
  std::vector<std::string> exclude;
  std::string exclude_reason = "excluded by the caller";
};

struct PairReport {
  std::string method;                // first root method the pair was found in
  std::vector<std::string> methods;  // every root method it runs under
  std::string conv;                  // module path of the operator's weight owner
  std::string norm;                  // module path of the normalization
  std::string kind;                  // "Conv2d", "ConvTranspose2d", "Linear", "Conv2d (functional)"
  std::string norm_kind;             // "BatchNorm2d", "FrozenBatchNorm2d", "batch_norm"
  bool folded = false;
  std::string reason;    // why not, when !folded
  std::string constant;  // constant absorption: "scalar 0.5", "'scale' [8, 1, 1]"
  // Folded behind a rank guard (op_replay.h): the input rank it is exact for,
  // and the bytes of original weight and bias kept for other ranks.
  int64_t guard_rank = 0;
  int64_t guard_bytes = 0;
  // Folded as a copy of the operator for this site (op_replay.h): its bytes.
  int64_t copy_bytes = -1;
};

// A normalization that runs but follows no convolution/linear (so nothing can
// absorb it), with why in words.
struct UnpairedReport {
  std::string method;                // first root method it was found in
  std::vector<std::string> methods;  // every root method it runs under
  std::string norm;                  // module path (for batch_norm: the owner of its statistics)
  std::string norm_kind;             // "BatchNorm2d", "FrozenBatchNorm2d", "batch_norm"
  std::string reason;
};

struct StepReport {
  std::string name;  // "fold", "tune", "constants"
  int round = 1;
  int changed = 0;  // pairs folded (or rewritten) by this step
  double ms = 0;
};

struct FuseReport {
  std::string mode = "fold";
  std::vector<PairReport> pairs;
  std::vector<PairReport> absorbed;  // constant absorption (kind = the op: "mul", ...)
  // Normalizations that run and are in no pair: every one is in pairs or here.
  std::vector<UnpairedReport> unpaired;
  // Folded norm modules replaced by an empty torchfold.Identity module.
  std::vector<std::string> replaced;
  std::vector<StepReport> steps;
  int norms_before = 0;  // normalizations that run, before
  int norms_after = 0;   // ... and after (counted again on the result)
  double analyze_ms = 0, fold_ms = 0, rewrite_ms = 0, total_ms = 0;
  std::string device;
};

struct FuseResult {
  ModulePtr module;  // null for a dry run
  FuseReport report;
};

FuseResult fuse_module(const torch::jit::Module& module, const FuseOptions& options);

}  // namespace torchfold::core
