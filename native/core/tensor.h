// Tensors and devices by name: the dtype and device vocabulary shared with JS,
// creation from host bytes and copy back to host bytes. Host bytes are always
// copied, so a tensor never aliases memory owned by the JS heap.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torchfold::core {

// "float32", "float64", "float16", "bfloat16", "int8", "int16", "int32",
// "int64", "uint8", "bool" and the names of other dtypes libtorch may return.
std::string dtype_name(c10::ScalarType type);
// Throws ERR_INVALID_ARG for a name outside the ten dtypes JS can exchange.
c10::ScalarType parse_dtype(const std::string& name);
bool is_exchangeable(c10::ScalarType type);

// "cpu", "cuda", "cuda:N". Throws ERR_INVALID_ARG on a malformed name and
// ERR_DEVICE_UNAVAILABLE when the device is not present in this process.
c10::Device parse_device(const std::string& name);
void require_available(const c10::Device& device);
std::string device_name(const c10::Device& device);

// Copies `bytes` (exactly numel * element size) into a new CPU tensor.
at::Tensor tensor_from_bytes(const void* data, size_t bytes, c10::ScalarType type, const std::vector<int64_t>& shape);
// Copies a CPU tensor's elements, in row-major order, into `out` (nbytes()).
void tensor_to_bytes(const at::Tensor& tensor, void* out);
size_t tensor_nbytes(const at::Tensor& tensor);

// Moves (copies) a tensor to another device; no-op when already there.
at::Tensor tensor_to_device(const at::Tensor& tensor, const c10::Device& device);

}  // namespace torchfold::core
