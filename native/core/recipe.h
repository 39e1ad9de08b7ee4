// Recipes: how an optimized inference module is made from a module, split
// into the part that can be saved (the portable form) and the part that must
// be redone in each process.
//
//   portable form: torch::jit::freeze (attributes become constants, methods
//     kept), then optionally channels_last (channels_last.h). Saves and loads
//     anywhere, PyTorch included.
//   run-time part: optimize_for_inference (its oneDNN constants cannot be
//     saved) and the JIT fusers (jit_switches.h: process-wide switches held
//     per module object, never saved).
//
// torchfold saves the portable form with the recipe beside it and redoes the
// run-time part when it loads the file (lib/recipe.ts).
#pragma once

#include <torch/script.h>

#include <string>

#include "jit_switches.h"
#include "module.h"

namespace torchfold::core {

struct Recipe {
  bool freeze = true;                   // false: the module as given (already portable)
  bool channels_last = false;           // portable: part of the saved form
  bool optimize_for_inference = false;  // run time
  JitSwitches switches;                 // run time
};

struct RecipeResult {
  ModulePtr module;
  double build_ms = 0;
  int channels_last_weights = 0;
  std::string save_error;  // portable_form: why it cannot be saved and loaded back ("" when it can)
};

// The portable form of `module` under `recipe` (eval mode required when freezing).
RecipeResult portable_form(const torch::jit::Module& module, const Recipe& recipe);

// The run-time part applied to a portable form: a clone with its own graphs
// (optimize_for_inference, then the switches on the new object). The portable
// form is not modified.
RecipeResult apply_run_time(const torch::jit::Module& portable, const Recipe& recipe);

}  // namespace torchfold::core
