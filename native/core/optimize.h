// Inference variants of a module for optimize(): freezing (attributes become
// constants, exported methods preserved) and, on top, libtorch's
// optimize_for_inference (oneDNN convolutions and friends). Each variant is
// checked for a save/load round trip, because some optimized modules cannot
// be serialized (oneDNN tensor constants); the caller decides what to do.
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "module.h"

namespace torchfold::core {

struct Variant {
  ModulePtr module;
  bool saveable = true;
  std::string save_error;  // why it cannot be saved and loaded back
  double build_ms = 0;
};

// Saves `module` to memory and loads it back: "" when that works, else why
// not (some optimized modules hold constants the serializer cannot write).
std::string round_trip_error(const torch::jit::Module& module, const std::string& device);

// libtorch's torch::jit::freeze (conv-BN folded in its graph), then with
// `optimize_for_inference` its torch::jit::optimize_for_inference; every
// exported method preserved. No checks: inference_variant adds them.
torch::jit::Module freeze_for_inference(const torch::jit::Module& module, bool optimize_for_inference);

// `optimize_for_inference` false: torch::jit::freeze only. The module must
// be in eval mode (ERR_INVALID_ARG otherwise). Every method is preserved.
Variant inference_variant(const torch::jit::Module& module, bool optimize_for_inference);

// A copy of a FROZEN module (the result of inference_variant(m, false)) whose
// 2-d float32 CPU convolutions call aten::mkldnn_convolution: oneDNN on plain
// dense tensors. At one thread libtorch 1.13 sends 1x1 stride-1 convolutions
// at small batch to the THNN path and its BLAS, which may be the slow
// reference one; optimize_for_inference avoids that too, but its oneDNN
// tensor constants cannot be saved, while mkldnn_convolution is an ordinary
// aten op, so this copy saves and loads like any module. CPU only; the saved
// file needs a libtorch built with oneDNN to run.
//
// Rewritten: aten::conv2d (int[] padding overload) and aten::_convolution
// with transposed false and zero output_padding, whose weight is a constant
// 4-d float32 CPU dense tensor, bias a constant (None or a matching float32
// CPU vector), stride/padding/dilation/groups constants, and whose input is
// not known to be another dtype, another device or another rank than 4. An
// aten::conv2d whose input rank is unknown also accepts an unbatched 3-d
// input, which mkldnn_convolution rejects: it is guarded by
// `if len(input.size()) == 4` with the original conv2d in the else branch
// (_convolution needs no guard: it rejects a 3-d input with a 4-d weight too).
// Counts are per graph: torchvision's scripted models keep _forward_impl as
// a method beside forward, so each convolution is counted twice there.
// Submodule methods are walked too, so a module that was not frozen reports
// its convolutions as kept (weights are not constants) rather than nothing.
// The input module is not modified (the copy is a clone(), with its own
// graphs; a deepcopy() would share them).
struct MkldnnRewrite {
  ModulePtr module;
  int rewritten = 0;                      // convolutions now calling mkldnn_convolution
  int guarded = 0;                        // of those, behind the rank-4 guard
  int kept = 0;                           // convolutions left as they were
  std::vector<std::string> kept_reasons;  // one per kept one: "method: op: why"
  double build_ms = 0;
};

MkldnnRewrite mkldnn_conv_variant(const torch::jit::Module& frozen);

// The optimize candidate built on mkldnn_conv_variant: the rewrite of a frozen
// module, checked for a save/load round trip like inference_variant's.
struct OnednnVariant {
  Variant variant;
  int rewritten = 0;
  int kept = 0;
  std::vector<std::string> kept_reasons;
};
OnednnVariant onednn_variant(const torch::jit::Module& frozen);

}  // namespace torchfold::core
