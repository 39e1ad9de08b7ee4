#include "completions.h"

#include "addon_data.h"

namespace torchfold::addon {

std::shared_ptr<Completions> Completions::Create(Napi::Env env) {
  std::shared_ptr<Completions> c(new Completions());
  napi_value name = Napi::String::New(env, "torchfold");
  NAPI_THROW_IF_FAILED(env,
                       napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, c.get(),
                                                       &Completions::CallJs, &c->tsfn_),
                       nullptr);
  // Idle: the process may exit while nothing is in flight.
  napi_unref_threadsafe_function(env, c->tsfn_);
  // Added after the thread-safe function, so it runs before Node's own
  // cleanup of it (hooks run in reverse order): once closed_ is set, no
  // compute thread touches tsfn_ again.
  // The hook holds its own reference, whatever order teardown frees in.
  napi_add_env_cleanup_hook(env, &Completions::OnEnvCleanup, new std::shared_ptr<Completions>(c));
  return c;
}

Completions::~Completions() = default;

void Completions::OnEnvCleanup(void* arg) {
  auto* self = static_cast<std::shared_ptr<Completions>*>(arg);
  {
    std::lock_guard<std::mutex> lock((*self)->mutex_);
    (*self)->closed_ = true;
  }
  delete self;
}

void Completions::Begin(Napi::Env env) {
  if (in_flight_++ == 0) napi_ref_threadsafe_function(env, tsfn_);
}

// Tasks hold a shared_ptr to their channel, so `this` (the thread-safe
// function's context) lives as long as any task that can reach CallJs.
void Completions::Post(Task* task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!closed_ && napi_call_threadsafe_function(tsfn_, task, napi_tsfn_nonblocking) == napi_ok) return;
  }
  task->Abandon();
}

void Completions::CallJs(napi_env env, napi_value, void* context, void* data) {
  auto* task = static_cast<Task*>(data);
  if (env == nullptr) {  // the environment is being torn down
    task->Abandon();
    return;
  }
  auto* self = static_cast<Completions*>(context);
  if (--self->in_flight_ == 0) napi_unref_threadsafe_function(env, self->tsfn_);
  task->Settle(Napi::Env(env));
}

}  // namespace torchfold::addon
