// A JS handle on one at::Tensor. Created by Tensor.from() (host bytes, copied)
// or as a method output. dispose() drops the reference; work already queued
// holds its own reference, so it finishes safely.
#pragma once

#include <ATen/core/Tensor.h>
#include <napi.h>

namespace torchfold::addon {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Create(Napi::Env env, at::Tensor tensor);
  // The TensorWrap behind `object`, or nullptr when it is not one.
  static TensorWrap* FromObject(Napi::Env env, const Napi::Object& object);
  // tensorFromBuffer(bytes: Uint8Array, dtype: string, shape: number[])
  static Napi::Value FromBuffer(const Napi::CallbackInfo& info);

  explicit TensorWrap(const Napi::CallbackInfo& info);
  ~TensorWrap() override;

  // The tensor, or a thrown ERR_DISPOSED.
  const at::Tensor& tensor(Napi::Env env) const;

 private:
  void Set(Napi::Env env, at::Tensor tensor);
  void Release(Napi::Env env);

  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value DType(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value ToBuffer(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  at::Tensor tensor_;
  int64_t external_bytes_ = 0;
};

}  // namespace torchfold::addon
