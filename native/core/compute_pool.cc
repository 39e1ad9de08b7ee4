#include "compute_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <pthread.h>
#include <thread>

#include "error.h"
#include "runtime.h"

namespace torchfold::core {

namespace {

constexpr int kMaxThreads = 256;
constexpr int kSpinMicros = 50;

class ComputePool {
 public:
  void submit(std::function<void()> job) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (wanted_ == 0) wanted_ = default_size();
    queue_.push_back(std::move(job));
    queued_.fetch_add(1, std::memory_order_release);
    // One more thread while fewer run than wanted and jobs wait for one.
    if (running_ < wanted_ && idle_ < static_cast<int>(queue_.size())) {
      const int index = started_++;
      ++running_;
      std::thread([this, index] { loop(index); }).detach();
    } else {
      ready_.notify_one();
    }
  }

  int size() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (wanted_ == 0) wanted_ = default_size();
    return wanted_;
  }

  void resize(int n) {
    std::lock_guard<std::mutex> lock(mutex_);
    wanted_ = n;
    // Surplus threads leave when they wake; new ones start as jobs arrive.
    ready_.notify_all();
  }

 private:
  static int default_size() {
    if (const char* env = std::getenv("TORCHFOLD_COMPUTE_THREADS")) {
      char* end = nullptr;
      const long n = std::strtol(env, &end, 10);
      if (end != env && *end == '\0' && n >= 1 && n <= kMaxThreads) return static_cast<int>(n);
      // Not a count: as if unset (lib/runtime.ts warns once).
    }
    const int per_job = std::max(1, get_num_threads());
    return std::max(1, usable_cpus() / per_job);
  }

  void loop(int index) {
    // Named so that tools (top -H, /proc/<pid>/task/*/comm, tests) can tell
    // them apart; the OpenMP workers a thread starts inherit its name.
    const std::string name = "torchfold-cpu" + std::to_string(index % 100);
    pthread_setname_np(pthread_self(), name.c_str());
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_;
      ready_.wait(lock, [this] { return !queue_.empty() || running_ > wanted_; });
      --idle_;
      if (running_ > wanted_) {
        --running_;
        return;
      }
      std::function<void()> job = std::move(queue_.front());
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
      lock.unlock();
      apply_thread_settings();
      job();
      job = nullptr;  // the job's captures die here, off the lock
      spin_for_next();
      lock.lock();
    }
  }

  // A caller awaiting one call at a time submits the next a few tens of µs
  // after the last one returned; sleeping on the condition variable then
  // costs a futex wake-up, tens of µs more on a VM. So look for a queued job
  // for a short while before sleeping: a trivial call's round trip from JS
  // went from ~65 µs to ~9 µs here (bench/scheduling.js has the forwards).
  void spin_for_next() {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    while (queued_.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < until) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  int wanted_ = 0;  // 0: not chosen yet
  int running_ = 0;
  int idle_ = 0;
  int started_ = 0;             // threads ever started, for their names
  std::atomic<int> queued_{0};  // queue_.size(), readable without the lock
};

// Never destroyed: detached threads may still wait on it at exit.
ComputePool& pool() {
  static auto* instance = new ComputePool();
  return *instance;
}

}  // namespace

void compute_submit(std::function<void()> job) { pool().submit(std::move(job)); }

int compute_threads() { return pool().size(); }

void set_compute_threads(int n) {
  if (n < 1 || n > kMaxThreads) {
    throw Error(ErrorCode::InvalidArg,
                "Expected an integer from 1 to 256 for compute threads but received " + std::to_string(n));
  }
  pool().resize(n);
}

}  // namespace torchfold::core
