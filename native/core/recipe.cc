#include "recipe.h"

#include <chrono>

#include "channels_last.h"
#include "error.h"
#include "optimize.h"
#include "runtime.h"

namespace torchfold::core {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

RecipeResult portable_form(const torch::jit::Module& module, const Recipe& recipe) {
  apply_thread_settings();
  const auto t0 = std::chrono::steady_clock::now();
  RecipeResult r;
  if (recipe.freeze) {
    // A frozen module has no `training` attribute (libtorch then says training): it can be frozen again.
    if (module.hasattr("training") && is_training(module)) {
      throw Error(ErrorCode::InvalidArg, "optimize needs the module in eval mode: call module.eval() first "
                                         "(freezing bakes the current mode into the graph)");
    }
    r.module = std::make_shared<torch::jit::Module>(freeze_for_inference(module, false));
  } else {
    r.module = std::make_shared<torch::jit::Module>(module.clone());
  }
  if (recipe.channels_last) {
    ChannelsLast cl = channels_last_variant(*r.module);
    r.module = cl.module;
    r.channels_last_weights = cl.weights;
  }
  r.build_ms = ms_since(t0);
  r.save_error = round_trip_error(*r.module, module_device(*r.module));
  return r;
}

RecipeResult apply_run_time(const torch::jit::Module& portable, const Recipe& recipe) {
  apply_thread_settings();
  const auto t0 = std::chrono::steady_clock::now();
  RecipeResult r;
  if (recipe.optimize_for_inference) {
    std::vector<std::string> others;
    for (const auto& name : method_names(portable)) {
      if (name != "forward") others.push_back(name);
    }
    torch::jit::Module copy = portable.clone();  // own graphs: the portable form stays as it is
    r.module = std::make_shared<torch::jit::Module>(torch::jit::optimize_for_inference(copy, others));
  } else {
    r.module = std::make_shared<torch::jit::Module>(portable.clone());
  }
  set_jit_switches(*r.module, recipe.switches);
  r.build_ms = ms_since(t0);
  return r;
}

}  // namespace torchfold::core
