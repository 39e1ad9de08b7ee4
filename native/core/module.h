// TorchScript modules: load, save, copy, move, inspect and run.
//
// Preconditions: every function here may be called from any thread. A Module
// may be run from several threads at once; mutating calls (set_training) must
// not overlap a run, which the addon guarantees. load() checks the file before
// libtorch sees it, so a missing file, a folder, an empty file, a state_dict
// saved by torch.save or a non-zip file each get their own error code and a
// message that says how to fix it.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "value.h"

namespace torchfold::core {

using ModulePtr = std::shared_ptr<torch::jit::Module>;

struct NamedModule {
  std::string path;  // "" for the root, "layer1.0.conv1" for children
  std::string type;  // class name without the __torch__ prefix and mangling
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;
  std::string device;
};

// With `verify`, every record's CRC-32 is checked against the archive's
// directory first (ERR_FILE_CORRUPT on a mismatch). Always: no tensor may
// claim more bytes than its record holds (ERR_FILE_CORRUPT).
ModulePtr load_module(const std::string& path, const std::string& device, bool verify = false);
// The archive checks of load_module(verify) without loading: the problems
// found, one line each; empty when every record matches its checksum.
std::vector<std::string> verify_file(const std::string& path);
// Extra files stored in a TorchScript archive beside the model, under extra/
// (PyTorch's torch.jit.save(..., _extra_files=...)), by name.
using ExtraFiles = std::unordered_map<std::string, std::string>;

// Writes atomically: a temporary file beside `path`, flushed, then renamed.
void save_module(const torch::jit::Module& module, const std::string& path, const ExtraFiles& extra_files = {});
// Reads the named extra files of a TorchScript archive without loading the
// model (only the zip directory and those records are read). Names missing
// from the archive are missing from the result. Same file errors as load.
ExtraFiles read_extra_files(const std::string& path, const std::vector<std::string>& names);
// A deep copy: same class and code, its own parameters and buffers.
ModulePtr clone_module(const torch::jit::Module& module);
// A deep copy placed on `device`; the original is left where it is.
ModulePtr module_to_device(const torch::jit::Module& module, const std::string& device);

std::vector<std::string> method_names(const torch::jit::Module& module);
// The method's TorchScript IR; with `inlined`, every call to a submodule or
// function is inlined, so each aten op the method runs is visible.
std::string graph_text(const torch::jit::Module& module, const std::string& method, bool inlined = false);
// Parameters and buffers by dotted name (tensors shared, not copied).
std::vector<std::pair<std::string, at::Tensor>> named_tensors(const torch::jit::Module& module);
std::vector<NamedModule> named_modules(const torch::jit::Module& module);
std::vector<TensorInfo> parameters(const torch::jit::Module& module);
std::vector<TensorInfo> buffers(const torch::jit::Module& module);
std::string module_device(const torch::jit::Module& module);
size_t module_bytes(const torch::jit::Module& module);

Value run_method(const torch::jit::Module& module, const std::string& method, const std::vector<Value>& inputs);

}  // namespace torchfold::core

namespace torchfold::core {
void set_training(torch::jit::Module& module, bool on);
bool is_training(const torch::jit::Module& module);
}  // namespace torchfold::core
