// The one async pattern of the addon: inputs are copied into the task on the
// JS thread (the baton); the work calls a core function on one of torchfold's
// compute threads (core/compute_pool.h, never libuv's pool) and touches
// nothing else; the result comes back through the environment's Completions
// channel, and the promise settles exactly once on the JS thread. Every
// exception thrown by the work becomes a rejection with a code.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "../core/compute_pool.h"
#include "../core/error.h"
#include "addon_data.h"
#include "completions.h"
#include "errors.h"

namespace torchfold::addon {

template <typename Result>
class PromiseWorker final : public Completions::Task {
 public:
  using Work = std::function<Result()>;
  using Finish = std::function<Napi::Value(Napi::Env, Result&)>;
  using Done = std::function<void()>;

  // `receiver` is kept alive until the promise settles; `done` runs on the JS
  // thread just before it settles (e.g. to end an in-flight count).
  static Napi::Promise Start(Napi::Object receiver, Work work, Finish finish, Done done = nullptr) {
    Napi::Env env = receiver.Env();
    std::shared_ptr<Completions> channel = addon_data(env).completions;
    auto* task = new PromiseWorker(receiver, std::move(work), std::move(finish), std::move(done), channel);
    Napi::Promise promise = task->js_->deferred.Promise();
    channel->Begin(env);
    core::compute_submit([task] {
      task->Execute();
      task->channel_->Post(task);
    });
    return promise;
  }

  void Settle(Napi::Env env) override {
    Napi::HandleScope scope(env);
    JsSide& js = *js_;
    if (js.done) js.done();
    // While a worker_thread is being terminated, settling can itself fail;
    // nothing is left to tell then, and throwing from here would abort.
    try {
      if (error_) {
        js.deferred.Reject(make_error(env, *error_).Value());
      } else {
        try {
          js.deferred.Resolve(js.finish(env, *result_));
        } catch (const Napi::Error& e) {
          js.deferred.Reject(e.Value());
        } catch (...) {
          js.deferred.Reject(make_error(env, core::describe_current_exception()).Value());
        }
      }
    } catch (...) {
    }
    delete this;
  }

  void Abandon() override {
    (void)js_.release();  // N-API handles of a gone environment: leaked on purpose
    delete this;
  }

 private:
  struct JsSide {
    Napi::ObjectReference receiver;
    Napi::Promise::Deferred deferred;
    Finish finish;
    Done done;
  };

  PromiseWorker(Napi::Object receiver, Work work, Finish finish, Done done, std::shared_ptr<Completions> channel)
      : js_(new JsSide{Napi::Persistent(receiver), Napi::Promise::Deferred::New(receiver.Env()), std::move(finish),
                       std::move(done)}),
        work_(std::move(work)),
        channel_(std::move(channel)) {}

  void Execute() {
    try {
      result_.emplace(work_());
    } catch (...) {
      error_.emplace(core::describe_current_exception());
    }
    work_ = nullptr;  // the baton's copies are freed on the compute thread
  }

  std::unique_ptr<JsSide> js_;
  Work work_;
  std::shared_ptr<Completions> channel_;
  std::optional<Result> result_;
  std::optional<core::Error> error_;
};

}  // namespace torchfold::addon
