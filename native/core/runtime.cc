#include "runtime.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <atomic>
#include <cstdlib>
#include <dlfcn.h>
#include <sched.h>
#include <thread>
#include <mutex>
#include <set>
#include <sys/stat.h>

#include "error.h"

// The build passes the version as a bare token (quotes do not survive gyp).
#define TORCHFOLD_STRINGIFY_(x) #x
#define TORCHFOLD_STRINGIFY(x) TORCHFOLD_STRINGIFY_(x)

namespace torchfold::core {

namespace {
std::atomic<int> wanted_threads{0};  // 0: leave libtorch's default
std::once_flag default_once;

// libtorch starts with one intra-op thread per physical core: one on a
// machine with two hyper-threads of one core. At one thread, libtorch 1.13
// sends 1x1 convolutions at batch < 16 to its slow reference-BLAS path (it
// takes oneDNN only with more threads): ResNet-50 at batch 1 runs ~10x slower
// (bench/README.md). So, unless the user chose (TORCHFOLD_NUM_THREADS,
// OMP_NUM_THREADS, or set_num_threads), use at least two threads where two
// CPUs are available.
void choose_default() {
  if (const char* env = std::getenv("TORCHFOLD_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n > 0 && n <= 1024) {
      wanted_threads.store(static_cast<int>(n));
      return;
    }
    // Not a thread count: as if unset (lib/runtime.ts warns once).
  }
  if (std::getenv("OMP_NUM_THREADS") || std::getenv("MKL_NUM_THREADS")) return;
  const int cpus = usable_cpus();
  if (cpus >= 2 && at::get_num_threads() < 2) wanted_threads.store(2);
}

void ensure_default() { std::call_once(default_once, choose_default); }
}  // namespace

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

void set_num_threads(int n) {
  if (n < 1) throw Error(ErrorCode::InvalidArg, "Expected a positive integer for threads");
  ensure_default();
  wanted_threads.store(n);
  at::set_num_threads(n);
}

int get_num_threads() {
  ensure_default();
  const int wanted = wanted_threads.load();
  return wanted > 0 ? wanted : at::get_num_threads();
}

void apply_thread_settings() {
  ensure_default();
  const int wanted = wanted_threads.load();
  if (wanted > 0 && at::get_num_threads() != wanted) at::set_num_threads(wanted);
}

bool cuda_available() { return torch::cuda::is_available(); }

int cuda_device_count() { return cuda_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

std::string libtorch_version() {
#ifdef TORCHFOLD_LIBTORCH_VERSION
  return TORCHFOLD_STRINGIFY(TORCHFOLD_LIBTORCH_VERSION);
#else
  return TORCH_VERSION;
#endif
}
std::string libtorch_header_version() { return TORCH_VERSION; }

bool built_with_cuda() {
#ifdef TORCHFOLD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

void load_library(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(ErrorCode::FileNotFound, "No such file: " + path);
  if (!S_ISREG(st.st_mode)) throw Error(ErrorCode::NotAFile, path + " is not a regular file");
  // A second copy of a library registers its operators again, which libtorch
  // treats as fatal inside dlopen: load each file (by device and inode) once.
  static std::mutex mutex;  // also: dlerror() is not thread-safe
  static std::set<std::pair<dev_t, ino_t>> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (!loaded.insert({st.st_dev, st.st_ino}).second) return;
  if (::dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    loaded.erase({st.st_dev, st.st_ino});
    const char* why = ::dlerror();
    throw Error(ErrorCode::Torch, "Cannot load operator library " + path + ": " + (why ? why : "unknown error"));
  }
}

}  // namespace torchfold::core
