#include "tensor.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cstring>
#include <regex>

#include "error.h"
#include "runtime.h"

namespace torchfold::core {

namespace {

struct DTypeName {
  const char* name;
  c10::ScalarType type;
};

constexpr DTypeName kExchangeable[] = {
    {"float32", c10::ScalarType::Float},     {"float64", c10::ScalarType::Double}, {"float16", c10::ScalarType::Half},
    {"bfloat16", c10::ScalarType::BFloat16}, {"int8", c10::ScalarType::Char},      {"int16", c10::ScalarType::Short},
    {"int32", c10::ScalarType::Int},         {"int64", c10::ScalarType::Long},     {"uint8", c10::ScalarType::Byte},
    {"bool", c10::ScalarType::Bool},
};

}  // namespace

std::string dtype_name(c10::ScalarType type) {
  for (const auto& d : kExchangeable) {
    if (d.type == type) return d.name;
  }
  // Other dtypes pass through forward() untouched; name them as libtorch does.
  std::string s = c10::toString(type);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_exchangeable(c10::ScalarType type) {
  for (const auto& d : kExchangeable) {
    if (d.type == type) return true;
  }
  return false;
}

c10::ScalarType parse_dtype(const std::string& name) {
  for (const auto& d : kExchangeable) {
    if (name == d.name) return d.type;
  }
  throw Error(ErrorCode::InvalidArg, "Expected one of float32, float64, float16, bfloat16, "
                                     "int8, int16, int32, int64, uint8, bool for dtype but received '" +
                                         name + "'");
}

c10::Device parse_device(const std::string& name) {
  static const std::regex pattern("^(cpu|cuda)(:([0-9]{1,3}))?$");
  std::smatch m;
  if (!std::regex_match(name, m, pattern) || (m[1] == "cpu" && m[2].matched)) {
    throw Error(ErrorCode::InvalidArg, "Expected 'cpu', 'cuda' or 'cuda:N' for device but received '" + name + "'");
  }
  if (m[1] == "cpu") return c10::Device(c10::DeviceType::CPU);
  const int index = m[3].matched ? std::stoi(m[3].str()) : 0;
  if (index > 63) {  // c10::DeviceIndex is 8 bits: larger numbers would wrap to another GPU
    throw Error(ErrorCode::DeviceUnavailable, "Device " + name + " is not available: CUDA device indices go up to 63");
  }
  c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
  require_available(device);
  return device;
}

// Why CUDA is not available: the build has no CUDA, or no GPU is visible.
static std::string no_cuda_reason() {
  if (built_with_cuda()) {
    return "this build has CUDA (libtorch " + libtorch_version() +
           "), but no GPU is visible (check the NVIDIA driver, nvidia-smi and CUDA_VISIBLE_DEVICES)";
  }
  return "this build is CPU-only (libtorch " + libtorch_version() +
         "): rebuild torchfold against a CUDA libtorch (LIBTORCH=... npm rebuild torchfold --build-from-source)";
}

void require_available(const c10::Device& device) {
  if (!device.is_cuda()) return;
  if (!torch::cuda::is_available()) {
    throw Error(ErrorCode::DeviceUnavailable, "Device " + device.str() + " is not available: " + no_cuda_reason());
  }
  const auto count = static_cast<int64_t>(torch::cuda::device_count());
  if (device.index() >= count) {
    throw Error(ErrorCode::DeviceUnavailable,
                "Device " + device.str() + " is not available: " + std::to_string(count) + " CUDA device(s) visible");
  }
}

std::string device_name(const c10::Device& device) {
  if (device.is_cuda()) return "cuda:" + std::to_string(device.has_index() ? device.index() : 0);
  return device.str();
}

at::Tensor tensor_from_bytes(const void* data, size_t bytes, c10::ScalarType type, const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorCode::InvalidArg, "Expected non-negative sizes for shape");
    numel *= d;
  }
  const size_t expected = static_cast<size_t>(numel) * c10::elementSize(type);
  if (expected != bytes) {
    throw Error(ErrorCode::InvalidArg, "Expected " + std::to_string(expected) +
                                           " bytes for shape and dtype but received " + std::to_string(bytes));
  }
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
  if (bytes > 0) std::memcpy(t.data_ptr(), data, bytes);
  return t;
}

size_t tensor_nbytes(const at::Tensor& tensor) { return static_cast<size_t>(tensor.numel()) * tensor.element_size(); }

void tensor_to_bytes(const at::Tensor& tensor, void* out) {
  if (!tensor.device().is_cpu()) {
    throw Error(ErrorCode::InvalidArg, "Expected a CPU tensor but received a tensor on " +
                                           device_name(tensor.device()) + "; move it with tensor.to('cpu') first");
  }
  if (!is_exchangeable(tensor.scalar_type())) {
    throw Error(ErrorCode::Unsupported,
                "Tensors of dtype " + dtype_name(tensor.scalar_type()) + " cannot be read from JavaScript");
  }
  at::Tensor c = tensor.contiguous();
  const size_t n = tensor_nbytes(c);
  if (n > 0) std::memcpy(out, c.data_ptr(), n);
}

at::Tensor tensor_to_device(const at::Tensor& tensor, const c10::Device& device) {
  require_available(device);
  return tensor.to(device);
}

}  // namespace torchfold::core
