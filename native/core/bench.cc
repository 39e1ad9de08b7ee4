#include "bench.h"

#include <torch/csrc/jit/passes/fold_conv_bn.h>

#include <chrono>

#include "error.h"
#include "optimize.h"
#include "runtime.h"
#include "tensor.h"

namespace torchfold::core {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PeerResult peer_transform(const torch::jit::Module& module, const std::string& kind) {
  apply_thread_settings();
  if (kind != "fold_conv_bn" && kind != "freeze" && kind != "freeze_optimize") {
    throw Error(ErrorCode::InvalidArg, "Unknown peer transform '" + kind + "'");
  }
  if (kind != "fold_conv_bn" && is_training(module)) {
    throw Error(ErrorCode::InvalidArg, "freeze needs the module in eval mode");
  }
  PeerResult r;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    if (kind == "fold_conv_bn") {
      r.module = std::make_shared<torch::jit::Module>(torch::jit::FoldConvBatchNorm(module));
    } else {
      r.module = std::make_shared<torch::jit::Module>(freeze_for_inference(module, kind == "freeze_optimize"));
    }
  } catch (const Error&) {
    throw;
  } catch (...) {
    throw describe_current_exception();
  }
  r.build_ms = ms_since(t0);
  return r;
}

std::vector<double> time_forward(const torch::jit::Module& module, const std::vector<Value>& inputs, int iterations,
                                 int warmup) {
  apply_thread_settings();
  for (int i = 0; i < warmup; ++i) run_method(module, "forward", inputs);
  std::vector<double> out;
  out.reserve(static_cast<size_t>(iterations));
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run_method(module, "forward", inputs);
    out.push_back(ms_since(t0));
  }
  return out;
}

ModulePtr module_to_dtype(const torch::jit::Module& module, const std::string& dtype) {
  apply_thread_settings();
  auto copy = std::make_shared<torch::jit::Module>(module.deepcopy());
  copy->to(parse_dtype(dtype));
  return copy;
}

}  // namespace torchfold::core
