// Half precision for chosen large layers: their parameters and buffers are
// stored in float16 or bfloat16, and every call of such a layer is wrapped in
// casts (input to the half dtype, output back to the input's dtype), so the
// rest of the program keeps running in its own precision.
//
// A layer's call site lives in its caller's graph, which every instance of
// the caller's class shares: a call site is cast only when every layer
// instance reached through it is converted, and a layer is converted only
// when every call site that can reach it is cast.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torchfold::core {

struct HalfOptions {
  c10::ScalarType dtype = at::kHalf;  // kHalf or kBFloat16
  int64_t min_params = 0;             // a layer qualifies when its parameter element count >= this
  std::vector<std::string> layers;    // when non-empty: exactly these module paths (min_params ignored)
};

struct HalfLayer {
  std::string path;    // "net.2", "layer1.0.fc"
  std::string kind;    // class short name: "Linear", "Conv2d", "ConvTranspose1d", ...
  int64_t params = 0;  // parameter element count
  bool converted = false;
  std::string reason;  // why not, when !converted
};

struct HalfReport {
  std::vector<HalfLayer> layers;  // every Linear / Conv / ConvTranspose submodule, in module order
  int converted = 0;
  int64_t params_converted = 0;  // parameter elements now stored in the half dtype
  int64_t bytes_saved = 0;       // parameters and buffers together
  int call_sites = 0;            // call sites wrapped in casts
  int graphs_changed = 0;
};

// The name used in messages: "float16" or "bfloat16".
std::string half_dtype_name(c10::ScalarType dtype);

// Modifies `module` IN PLACE (the caller passes a private copy whose graphs
// have not run). Candidates are submodules of class
// torch.nn.modules.linear.Linear, torch.nn.modules.conv.Conv{1,2,3}d and
// ConvTranspose{1,2,3}d. Throws Error(InvalidArg) for a dtype that is not a
// half type, a negative min_params, or a listed path that is not such a
// layer.
HalfReport convert_to_half(torch::jit::Module& module, const HalfOptions& options);

}  // namespace torchfold::core
