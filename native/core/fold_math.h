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

namespace torchfold::core {

// Where a weight keeps its output channels.
enum class WeightLayout {
  OutFirst,    // Conv*d [out, in/g, k...], Linear [out, in]
  Transposed,  // ConvTranspose*d [in, out/g, k...]
};

struct NormStats {
  at::Tensor mean, var;   // required
  at::Tensor gamma, beta; // undefined when affine=False
  double eps = 1e-5;
};

struct FoldInput {
  at::Tensor weight;
  at::Tensor bias;        // undefined when the conv has none
  // Exact float64 values of weight and bias when an earlier fold in the same
  // run produced them: a chain (conv -> mul -> BN) is then rounded once, at
  // the end, instead of once per step. Undefined: use weight/bias.
  at::Tensor weight64, bias64;
  WeightLayout layout = WeightLayout::OutFirst;
  int64_t groups = 1;
};

struct Folded {
  at::Tensor weight, bias;      // same dtype and device as the input weight
  at::Tensor weight64, bias64;  // the exact values before rounding (CPU float64)
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
