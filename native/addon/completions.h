// The way back from torchfold's compute threads (core/compute_pool.h) to one
// Node environment's JS thread: a thread-safe function per environment.
//
// While any task of the environment is in flight the channel keeps its event
// loop alive (as libuv work would); when none is, it does not. When the
// environment goes away (a worker_thread ends) with tasks still running, those
// tasks are abandoned: their C++ results are freed, their JS handles are
// deliberately leaked (they cannot be touched without the environment).
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

namespace torchfold::addon {

class Completions {
 public:
  class Task {
   public:
    virtual ~Task() = default;
    // On the JS thread, exactly once: settle the promise, then `delete this`.
    virtual void Settle(Napi::Env env) = 0;
    // On any thread, when the environment is gone: free what C++ owns, leak
    // the JS handles, then `delete this`.
    virtual void Abandon() = 0;
  };

  static std::shared_ptr<Completions> Create(Napi::Env env);
  ~Completions();

  // JS thread: a task of this environment starts.
  void Begin(Napi::Env env);
  // Any thread: `task` has finished; it is settled (or abandoned) exactly once.
  void Post(Task* task);

 private:
  Completions() = default;
  static void CallJs(napi_env env, napi_value, void*, void* data);
  static void OnEnvCleanup(void* arg);

  std::mutex mutex_;  // guards tsfn_ use against the environment's teardown
  napi_threadsafe_function tsfn_ = nullptr;
  bool closed_ = false;
  int in_flight_ = 0;  // JS thread only
};

}  // namespace torchfold::addon
