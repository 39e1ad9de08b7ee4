#include "fold_math.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#include <cmath>
#include <cstring>
#include <sstream>

namespace torchfold::core {

namespace {

at::Tensor to_f64_cpu(const at::Tensor& t) { return t.detach().to(at::kCPU, at::kDouble).contiguous(); }

bool all_finite(const at::Tensor& t) { return !t.defined() || at::isfinite(t).all().item<bool>(); }

// double -> float rounding to odd: exact values pass through; inexact ones are
// truncated toward zero with the lowest mantissa bit set. A second rounding of
// this float to any format with at least two fewer mantissa bits (half: 10,
// bfloat16: 7, against float's 23) then equals one correct rounding of d.
float round_to_odd(double d) {
  float f = static_cast<float>(d);
  if (!std::isfinite(f) || static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits |= 1u;
  std::memcpy(&f, &bits, sizeof bits);
  return f;
}

std::string describe_channels(const char* what, int64_t got, int64_t want) {
  std::ostringstream os;
  os << what << " has " << got << " channels but the weight has " << want << " output channels";
  return os.str();
}

// s = gamma / sqrt(var + eps) and t = beta - mean * s are not used directly:
// the bias is (B - m) * s + b, in that order, as documented in the header.
std::optional<std::string> check_stats(const NormStats& n, int64_t channels) {
  for (const auto* t : {&n.mean, &n.var, &n.gamma, &n.beta}) {
    if (t->defined() && t->numel() != channels) {
      return describe_channels("the BatchNorm", t->numel(), channels);
    }
  }
  if (!all_finite(n.mean) || !all_finite(n.var)) return std::string("running statistics are not finite");
  if (!all_finite(n.gamma) || !all_finite(n.beta)) return std::string("affine parameters are not finite");
  if (!std::isfinite(n.eps)) return std::string("eps is not finite");
  if (!(to_f64_cpu(n.var) + n.eps).gt(0).all().item<bool>()) return std::string("running_var + eps <= 0");
  return std::nullopt;
}

// Reshapes the per-output-channel scale so it broadcasts over the weight.
at::Tensor scale_for_weight(const at::Tensor& s, const at::Tensor& w, WeightLayout layout, int64_t groups) {
  std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
  if (layout == WeightLayout::OutFirst) {
    shape[0] = w.size(0);
    return s.reshape(shape);
  }
  // ConvTranspose: weight [in, out/g, k...]; output channel of element
  // [i, j, ...] is (i / (in/g)) * (out/g) + j.
  const int64_t in = w.size(0), out_per_group = w.size(1), in_per_group = in / groups;
  at::Tensor per_group = s.reshape({groups, 1, out_per_group});  // [g, 1, out/g]
  at::Tensor expanded = per_group.expand({groups, in_per_group, out_per_group}).reshape({in, out_per_group});
  shape[0] = in;
  shape[1] = out_per_group;
  return expanded.reshape(shape);
}

}  // namespace

int64_t out_channels(const at::Tensor& weight, WeightLayout layout, int64_t groups) {
  return layout == WeightLayout::OutFirst ? weight.size(0) : weight.size(1) * groups;
}

at::Tensor round_once(const at::Tensor& exact, c10::ScalarType dtype) {
  at::Tensor src = exact.to(at::kCPU, at::kDouble).contiguous();
  if (dtype == at::kDouble) return src.clone();
  if (dtype == at::kFloat) return src.to(at::kFloat);  // a single IEEE rounding
  // Half and bfloat16: double -> float (round to odd) -> target (to nearest even).
  at::Tensor mid = at::empty(src.sizes(), at::TensorOptions().dtype(at::kFloat));
  const double* in = src.data_ptr<double>();
  float* out = mid.data_ptr<float>();
  for (int64_t i = 0; i < src.numel(); ++i) out[i] = round_to_odd(in[i]);
  return mid.to(dtype);
}

namespace {

std::optional<std::string> check_weight(const FoldInput& in) {
  const at::Tensor& w = in.weight;
  if (!w.defined() || w.dim() < 2) return std::string("the weight is not a 2-D or larger tensor");
  if (!at::isFloatingType(w.scalar_type())) return std::string("the weight is not floating point");
  if (in.groups < 1 || (in.layout == WeightLayout::Transposed && w.size(0) % in.groups != 0)) {
    return std::string("the groups do not divide the weight's channels");
  }
  const int64_t channels = out_channels(w, in.layout, in.groups);
  if (in.bias.defined() && in.bias.numel() != channels) return describe_channels("the bias", in.bias.numel(), channels);
  return std::nullopt;
}

// The recipe of this fold's exact weight: the earlier steps, then this one.
ExactWeight extend(const FoldInput& in, const at::Tensor& scale, bool divide) {
  ExactWeight e = in.weight_exact ? *in.weight_exact : ExactWeight{in.weight, {}};
  e.steps.push_back({scale, divide});
  return e;
}

at::Tensor materialize(const ExactWeight& e, WeightLayout layout, int64_t groups) {
  at::Tensor w64 = to_f64_cpu(e.base);
  for (const auto& step : e.steps) {
    const at::Tensor sw = scale_for_weight(step.scale, e.base, layout, groups);
    w64 = step.divide ? w64 / sw : w64 * sw;
  }
  return w64;
}

// One multiplication per element, in float64, rounded once to float32 or
// float64: the common case (a first fold into a Conv*d/Linear weight on the
// CPU), without float64 temporaries. Same operations as materialize + round.
template <typename T>
at::Tensor scale_rows(const at::Tensor& base, const at::Tensor& scale, bool* finite) {
  const at::Tensor w = base.contiguous();
  at::Tensor out = at::empty_like(w, at::MemoryFormat::Contiguous);
  const T* in = w.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  const double* s = scale.data_ptr<double>();
  const int64_t rows = w.size(0), inner = rows ? w.numel() / rows : 0;
  std::atomic<bool> ok{true};
  // Rows are independent: split them over the intra-op threads, in chunks of
  // at least ~64K elements so small weights stay on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, inner));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    bool chunk_ok = true;
    for (int64_t r = begin; r < end; ++r) {
      const double k = s[r];
      const T* a = in + r * inner;
      T* b = dst + r * inner;
      for (int64_t i = 0; i < inner; ++i) b[i] = static_cast<T>(static_cast<double>(a[i]) * k);
      for (int64_t i = 0; i < inner; ++i) chunk_ok = chunk_ok && std::isfinite(b[i]);
    }
    if (!chunk_ok) ok.store(false);
  });
  *finite = ok.load();
  return out;
}

// The weight rounded to its dtype, and whether every value is finite.
at::Tensor rounded_weight(const FoldInput& in, const ExactWeight& e, bool* finite) {
  const at::Tensor& base = e.base;
  const auto dtype = base.scalar_type();
  const bool fast = e.steps.size() == 1 && !e.steps[0].divide && in.layout == WeightLayout::OutFirst &&
                    base.device().is_cpu() && (dtype == at::kFloat || dtype == at::kDouble) &&
                    base.scalar_type() == in.weight.scalar_type();
  if (fast) {
    const at::Tensor s = e.steps[0].scale.contiguous();
    return dtype == at::kFloat ? scale_rows<float>(base, s, finite) : scale_rows<double>(base, s, finite);
  }
  at::Tensor out = round_once(materialize(e, in.layout, in.groups), in.weight.scalar_type());
  *finite = all_finite(out);
  return out;
}

at::Tensor exact_bias(const FoldInput& in, const at::Tensor& zeros_like_this) {
  if (in.bias64.defined()) return in.bias64.to(at::kCPU, at::kDouble);
  return in.bias.defined() ? to_f64_cpu(in.bias) : at::zeros_like(zeros_like_this);
}

// Rounds the exact results once to the parameter dtypes, on the weight's device.
FoldOutcome finish(const FoldInput& in, ExactWeight exact, const at::Tensor& b64) {
  FoldOutcome r;
  const at::Tensor& w = in.weight;
  const c10::ScalarType bias_dtype = in.bias.defined() ? in.bias.scalar_type() : w.scalar_type();
  bool weight_finite = true;
  at::Tensor weight = rounded_weight(in, exact, &weight_finite);
  Folded out{std::move(weight), round_once(b64, bias_dtype), std::move(exact), b64};
  if (!weight_finite || !all_finite(out.bias)) {
    r.reason = "the folded values overflow " + std::string(c10::toString(w.scalar_type()));
    return r;
  }
  out.weight = out.weight.to(w.device());
  out.bias = out.bias.to(w.device());
  r.folded = std::move(out);
  return r;
}

}  // namespace

FoldOutcome fold(const FoldInput& in, const NormStats& norm) {
  FoldOutcome r;
  const at::Tensor& w = in.weight;
  if (auto why = check_weight(in)) {
    r.reason = *why;
    return r;
  }
  const int64_t channels = out_channels(w, in.layout, in.groups);
  if (auto why = check_stats(norm, channels)) {
    r.reason = *why;
    return r;
  }

  const at::Tensor mean = to_f64_cpu(norm.mean), var = to_f64_cpu(norm.var);
  const at::Tensor gamma = norm.gamma.defined() ? to_f64_cpu(norm.gamma) : at::ones_like(mean);
  const at::Tensor beta = norm.beta.defined() ? to_f64_cpu(norm.beta) : at::zeros_like(mean);
  const at::Tensor s = gamma / at::sqrt(var + norm.eps);
  const at::Tensor b0 = exact_bias(in, mean);
  const at::Tensor b64 = (b0 - mean) * s + beta;
  return finish(in, extend(in, s.contiguous(), false), b64);
}

FoldOutcome fold_affine(const FoldInput& in, const AffineMap& map) {
  FoldOutcome r;
  if (auto why = check_weight(in)) {
    r.reason = *why;
    return r;
  }
  const at::Tensor& w = in.weight;
  const int64_t channels = out_channels(w, in.layout, in.groups);
  for (const auto* t : {&map.scale, &map.shift}) {
    if (!t->defined()) continue;
    if (t->numel() != channels) {
      r.reason = describe_channels("the constant", t->numel(), channels);
      return r;
    }
    if (!all_finite(*t)) {
      r.reason = "the constant is not finite";
      return r;
    }
  }
  if (map.divide && map.scale.defined() && map.scale.eq(0).any().item<bool>()) {
    r.reason = "the divisor has zeros";
    return r;
  }
  const at::Tensor zeros = at::zeros({channels}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor b64 = exact_bias(in, zeros);
  ExactWeight exact = in.weight_exact ? *in.weight_exact : ExactWeight{in.weight, {}};
  if (map.scale.defined()) {
    const at::Tensor s = map.scale.to(at::kCPU, at::kDouble).reshape({channels}).contiguous();
    exact = extend(in, s, map.divide);
    b64 = map.divide ? b64 / s : b64 * s;
  }
  if (map.shift.defined()) b64 = b64 + map.shift.to(at::kCPU, at::kDouble).reshape({channels});
  return finish(in, std::move(exact), b64);
}

}  // namespace torchfold::core
