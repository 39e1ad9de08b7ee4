// The one async pattern of the addon: inputs are copied into the worker on the
// JS thread (the baton), Execute() calls a core function on a libuv pool thread
// and touches nothing else, and OnOK() settles the promise exactly once on the
// JS thread. Every exception thrown by the work becomes a rejection with a code.
#pragma once

#include <napi.h>

#include <functional>
#include <optional>
#include <utility>

#include "../core/error.h"
#include "errors.h"

namespace torchfold::addon {

template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using Finish = std::function<Napi::Value(Napi::Env, Result&)>;
  using Done = std::function<void()>;

  // `receiver` is kept alive until the promise settles; `done` runs on the JS
  // thread just before it settles (e.g. to end an in-flight count).
  static Napi::Promise Start(Napi::Object receiver, const char* name, Work work, Finish finish, Done done = nullptr) {
    auto* worker = new PromiseWorker(receiver, name, std::move(work), std::move(finish), std::move(done));
    Napi::Promise promise = worker->deferred_.Promise();
    worker->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      result_.emplace(work_());
    } catch (...) {
      error_.emplace(core::describe_current_exception());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (done_) done_();
    // While a worker_thread is being terminated, settling can itself fail;
    // nothing is left to tell then, and throwing from here would abort.
    try {
      if (error_) {
        deferred_.Reject(make_error(env, *error_).Value());
        return;
      }
      try {
        deferred_.Resolve(finish_(env, *result_));
      } catch (const Napi::Error& e) {
        deferred_.Reject(e.Value());
      } catch (...) {
        deferred_.Reject(make_error(env, core::describe_current_exception()).Value());
      }
    } catch (...) {
    }
  }

  void OnError(const Napi::Error& e) override {
    if (done_) done_();
    try {
      deferred_.Reject(e.Value());
    } catch (...) {
    }
  }

 private:
  PromiseWorker(Napi::Object receiver, const char* name, Work work, Finish finish, Done done)
      : Napi::AsyncWorker(receiver.Env(), name),
        receiver_(Napi::Persistent(receiver)),
        deferred_(Napi::Promise::Deferred::New(receiver.Env())),
        work_(std::move(work)),
        finish_(std::move(finish)),
        done_(std::move(done)) {}

  Napi::ObjectReference receiver_;
  Napi::Promise::Deferred deferred_;
  Work work_;
  Finish finish_;
  Done done_;
  std::optional<Result> result_;
  std::optional<core::Error> error_;
};

}  // namespace torchfold::addon
