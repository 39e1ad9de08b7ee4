// Process-wide libtorch settings and facts: intra-op threads, CUDA, versions.
//
// libtorch's intra-op thread count is per OS thread under OpenMP, and torchfold
// runs work on its own compute threads (compute_pool.h), so set_num_threads()
// records the wish and apply_thread_settings() (called at the start of every
// job) applies it on the thread that runs the job.
#pragma once

#include <string>

namespace torchfold::core {

void set_num_threads(int n);
int get_num_threads();
void apply_thread_settings();

// The CPUs this process may run on (its affinity mask).
int usable_cpus();

bool cuda_available();
int cuda_device_count();

// The libtorch version the addon was built against, as the locator found it
// (e.g. "1.13.1"), and the version in libtorch's headers ("1.13.0").
std::string libtorch_version();
std::string libtorch_header_version();
bool built_with_cuda();

}  // namespace torchfold::core

namespace torchfold::core {
// Loads a shared library that registers TorchScript operators (e.g.
// torchvision's), as torch.ops.load_library does: dlopen, RTLD_GLOBAL, kept
// open for the life of the process. Missing file -> ERR_FILE_NOT_FOUND; a
// library that cannot be loaded -> ERR_TORCH with the loader's reason.
void load_library(const std::string& path);
}  // namespace torchfold::core
