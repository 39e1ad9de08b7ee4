#include "optimize.h"

#include <chrono>
#include <sstream>

#include "error.h"
#include "runtime.h"

namespace torchfold::core {

Variant inference_variant(const torch::jit::Module& module, bool optimize_for_inference) {
  apply_thread_settings();
  if (is_training(module)) {
    throw Error(ErrorCode::InvalidArg, "optimize needs the module in eval mode: call module.eval() first "
                                       "(freezing bakes the current mode into the graph)");
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> others;
  for (const auto& name : method_names(module)) {
    if (name != "forward") others.push_back(name);
  }
  Variant v;
  torch::jit::Module frozen = torch::jit::freeze(module, others, /*optimize_numerics=*/true);
  if (optimize_for_inference) frozen = torch::jit::optimize_for_inference(frozen, others);
  v.module = std::make_shared<torch::jit::Module>(frozen);
  v.build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  try {
    std::stringstream buffer;
    frozen.save(buffer);
    torch::jit::load(buffer, c10::Device(module_device(module)));
  } catch (const c10::Error& e) {
    v.saveable = false;
    v.save_error = torch_message(e);
  } catch (const std::exception& e) {
    v.saveable = false;
    v.save_error = e.what();
  }
  return v;
}

}  // namespace torchfold::core
