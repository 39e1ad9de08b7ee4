// A whole fuse (or, with dry_run, an inspect): clone, analyze, fold,
// rewrite, and a report of what was done, what was left and why, and how
// long each phase took. The caller's module is never modified.
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "module.h"

namespace torchfold::core {

struct FuseOptions {
  bool dry_run = false;
  bool treat_training_as_eval = false;
  // Norm module paths to leave unfolded (validation uses it to isolate a
  // pair), with the reason to report for them.
  std::vector<std::string> exclude;
  std::string exclude_reason = "excluded by the caller";
};

struct PairReport {
  std::string method;     // first root method the pair was found in
  std::vector<std::string> methods;  // every root method it runs under
  std::string conv;       // module path of the operator's weight owner
  std::string norm;       // module path of the normalization
  std::string kind;       // "Conv2d", "ConvTranspose2d", "Linear", "Conv2d (functional)"
  std::string norm_kind;  // "BatchNorm2d", "FrozenBatchNorm2d", "batch_norm"
  bool folded = false;
  std::string reason;     // why not, when !folded
};

struct FuseReport {
  std::vector<PairReport> pairs;
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
