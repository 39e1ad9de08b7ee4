// The folding arithmetic, in one place, over plain tensors.
//
// For a BatchNorm with running mean m, variance v, epsilon e, scale g (1 when
// affine=False) and shift b (0 when affine=False), per channel c:
//     s[c] = g[c] / sqrt(v[c] + e)
//     W'   = W * s        (scaling the output channel of every weight element)
//     B'   = (B - m) * s + b          (B = 0 for a conv without bias)
// Everything is computed in float64 from the stored values, in exactly this
// order, and rounded ONCE to the parameter dtype (float32, float64, float16,
// bfloat16). Halves are rounded through float with round-to-odd, so the
// result is the correctly rounded float64 value, not a double rounding.
//
// Preconditions are checked, not assumed: every statistic finite, v + e > 0,
// channel counts matching, and every folded value finite in the target dtype.
// A failed check returns a reason instead of a result.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace torchfold::core {

// Where a weight keeps its output channels.
enum class WeightLayout {
  OutFirst,    // Conv*d [out, in/g, k...], Linear [out, in]
  Transposed,  // ConvTranspose*d [in, out/g, k...]
};

struct NormStats {
  at::Tensor mean, var;    // required
  at::Tensor gamma, beta;  // undefined when affine=False
  double eps = 1e-5;
};

// The exact float64 value of a weight after this run's folds, kept as a
// recipe instead of a float64 tensor: the weight before the first fold and the
// per-output-channel maps applied to it, in order. Replaying them in float64
// performs the same operations in the same order as computing each step on a
// float64 tensor, so a chain is still rounded once, without holding a float64
// copy (2x the weight's bytes) of every folded weight for the whole run.
struct ExactWeight {
  at::Tensor base;  // the weight before this run's first fold into it (any floating dtype)
  struct Step {
    at::Tensor scale;  // [channels] float64, CPU
    bool divide = false;
  };
  std::vector<Step> steps;
};

struct FoldInput {
  at::Tensor weight;
  at::Tensor bias;  // undefined when the conv has none
  // The exact values of weight and bias when an earlier fold in the same run
  // produced them: a chain (conv -> mul -> BN) is then rounded once, at the
  // end, instead of once per step. Empty/undefined: use weight/bias.
  std::optional<ExactWeight> weight_exact;
  at::Tensor bias64;
  WeightLayout layout = WeightLayout::OutFirst;
  int64_t groups = 1;
};

struct Folded {
  at::Tensor weight, bias;   // same dtype and device as the input weight
  ExactWeight weight_exact;  // the exact weight before rounding, as a recipe
  at::Tensor bias64;         // the exact bias before rounding (CPU float64)
};

// A per-output-channel affine map applied to the operator's output:
//     y = x * scale + shift      (or x / scale + shift with divide)
// Each tensor is [channels] float64, or undefined for "none". Folds as
//     W' = W * scale (W / scale),   B' = B * scale (B / scale) + shift.
struct AffineMap {
  at::Tensor scale;
  at::Tensor shift;
  bool divide = false;
};

struct FoldOutcome {
  std::optional<Folded> folded;
  std::string reason;  // why not, when folded is empty
};

// Number of output channels of a weight with the given layout and groups.
int64_t out_channels(const at::Tensor& weight, WeightLayout layout, int64_t groups);

FoldOutcome fold(const FoldInput& in, const NormStats& norm);
FoldOutcome fold_affine(const FoldInput& in, const AffineMap& map);

// Rounds a float64 tensor once to `dtype` (correctly rounded; see above).
at::Tensor round_once(const at::Tensor& exact, c10::ScalarType dtype);

}  // namespace torchfold::core
