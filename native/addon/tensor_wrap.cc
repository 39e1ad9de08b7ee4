#include "tensor_wrap.h"

#include "../core/tensor.h"
#include "addon_data.h"
#include "convert.h"
#include "errors.h"
#include "promise_worker.h"

namespace torchfold::addon {

Napi::Function TensorWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {
                         InstanceMethod<&TensorWrap::Shape>("shape"),
                         InstanceMethod<&TensorWrap::DType>("dtype"),
                         InstanceMethod<&TensorWrap::Device>("device"),
                         InstanceMethod<&TensorWrap::ToBuffer>("toBuffer"),
                         InstanceMethod<&TensorWrap::To>("to"),
                         InstanceMethod<&TensorWrap::Dispose>("dispose"),
                         InstanceMethod<&TensorWrap::Disposed>("disposed"),
                     });
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {}

TensorWrap::~TensorWrap() {
  // Finalizers may run without a usable env during teardown; only the
  // external-memory counter needs the env, and V8 drops it with the isolate.
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
  }
}

Napi::Object TensorWrap::Create(Napi::Env env, at::Tensor tensor) {
  Napi::Object obj = addon_data(env).tensor_ctor.New({});
  Napi::ObjectWrap<TensorWrap>::Unwrap(obj)->Set(env, std::move(tensor));
  return obj;
}

TensorWrap* TensorWrap::FromObject(Napi::Env env, const Napi::Object& object) {
  if (!object.InstanceOf(addon_data(env).tensor_ctor.Value())) return nullptr;
  return Napi::ObjectWrap<TensorWrap>::Unwrap(object);
}

void TensorWrap::Set(Napi::Env env, at::Tensor tensor) {
  tensor_ = std::move(tensor);
  if (tensor_.defined() && tensor_.device().is_cpu()) {
    external_bytes_ = static_cast<int64_t>(core::tensor_nbytes(tensor_));
    Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
  }
}

void TensorWrap::Release(Napi::Env env) {
  tensor_ = at::Tensor();
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    external_bytes_ = 0;
  }
}

const at::Tensor& TensorWrap::tensor(Napi::Env env) const {
  if (!tensor_.defined()) throw make_error(env, "ERR_DISPOSED", "The tensor has been disposed");
  return tensor_;
}

Napi::Value TensorWrap::FromBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsString() || !info[2].IsArray()) {
    throw_type_error(env, "tensorFromBuffer(bytes: Uint8Array, dtype: string, shape: number[])");
  }
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  std::vector<int64_t> shape;
  Napi::Array dims = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < dims.Length(); ++i) {
    shape.push_back(dims.Get(i).As<Napi::Number>().Int64Value());
  }
  return guard_sync(env, [&]() -> Napi::Value {
    const c10::ScalarType dtype = core::parse_dtype(info[1].As<Napi::String>().Utf8Value());
    return Create(env, core::tensor_from_bytes(bytes.Data(), bytes.ByteLength(), dtype, shape));
  });
}

Napi::Value TensorWrap::Shape(const Napi::CallbackInfo& info) {
  return to_js_shape(info.Env(), tensor(info.Env()).sizes().vec());
}

Napi::Value TensorWrap::DType(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), core::dtype_name(tensor(info.Env()).scalar_type()));
}

Napi::Value TensorWrap::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), core::device_name(tensor(info.Env()).device()));
}

Napi::Value TensorWrap::ToBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = tensor(env);
  return guard_sync(env, [&]() -> Napi::Value {
    Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, core::tensor_nbytes(t));
    core::tensor_to_bytes(t, buffer.Data());
    return buffer;
  });
}

Napi::Value TensorWrap::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string device = string_arg(info, 0, "device");
  at::Tensor source = tensor(env);
  return PromiseWorker<at::Tensor>::Start(
      Value(), [source, device]() { return core::tensor_to_device(source, core::parse_device(device)); },
      [](Napi::Env e, at::Tensor& result) -> Napi::Value { return Create(e, result); });
}

Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  Release(info.Env());
  return info.Env().Undefined();
}

Napi::Value TensorWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor_.defined());
}

}  // namespace torchfold::addon
