#include "module_copy.h"

#include <c10/core/CPUAllocator.h>

#include <cstring>
#include <future>
#include <sstream>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace torchfold::core {

namespace {

using c10::ivalue::Object;
using ObjectPtr = c10::intrusive_ptr<Object>;

// The copy of record: the serializer writes the whole module, code and
// tensors, and reads it back into a new compilation unit under the same class
// names (Module::clone() would mangle them with a counter shared by every
// clone of the unit, so saved bytes would depend on history). Costs a zip of
// the weights with their CRC32s, and the archive beside the copy in memory.
ModulePtr round_trip_copy(const torch::jit::Module& module, const c10::Device& device) {
  std::stringstream buffer;
  try {
    module.save(buffer);
  } catch (const c10::Error&) {
    return std::make_shared<torch::jit::Module>(module.clone());  // not serializable: still a private copy
  }
  return std::make_shared<torch::jit::Module>(torch::jit::load(buffer, device));
}

bool is_module(const c10::IValue& v) { return v.isObject() && v.toObjectRef().type()->is_module(); }

// A tensor the serializer writes as its whole storage plus offset, sizes and
// strides, and reads back as that storage's bytes on the device of the load,
// so a byte copy of the storage is what a round trip would give. Anything
// else (quantized, sparse, mkldnn, nested, conj/neg views, another device, a
// storage that is not a whole number of elements, which the reader truncates)
// is left to the round trip.
bool plain_tensor(const at::Tensor& t, const c10::Device& device) {
  return t.layout() == at::kStrided && !t.is_quantized() && !t.is_nested() && t.has_storage() && !t.is_conj() &&
         !t.is_neg() && t.device() == device && t.storage().nbytes() % t.element_size() == 0;
}

// A copy of a storage's bytes, made as the serializer's reader makes one: on
// the CPU a buffer of exactly the storage's size, not resizable; on a GPU a
// new tensor's storage, as the reader's move to the device gives.
c10::Storage copy_storage(const c10::Storage& s) {
  const size_t n = s.nbytes();
  if (s.device().is_cpu()) {
    at::DataPtr data = c10::GetCPUAllocator()->allocate(n);
    if (n > 0) std::memcpy(data.get(), s.data(), n);
    return c10::Storage(c10::Storage::use_byte_size_t(), n, std::move(data), /*allocator=*/nullptr,
                        /*resizable=*/false);
  }
  const auto bytes = at::TensorOptions().dtype(at::kByte).device(s.device());
  const int64_t len = static_cast<int64_t>(n);
  at::Tensor src = at::empty({0}, bytes).set_(s, 0, {len}, {1});
  return at::empty({len}, bytes).copy_(src).storage();
}

// Pass 1: a stand-in for the module tree. New objects of the same types, with
// every tensor attribute replaced by an empty placeholder and every other
// attribute shared as it is, so saving it writes all the code (and whatever
// lies in lists, dicts and class objects) but almost no tensor bytes. The
// original is only read.
class StandIn {
 public:
  explicit StandIn(c10::Device device) : device_(device) {}

  // False where the transplant could not reproduce a round trip exactly.
  bool build(const Object& original) {
    root = object(original);
    // A tensor saved with the stand-in (in a list, say) that shares a storage
    // with one copied by hand would lose the sharing.
    for (const c10::StorageImpl* s : kept_) {
      if (moved_.count(s)) ok_ = false;
    }
    objects_.clear();
    placeholders_.clear();
    return ok_ && root;
  }

  ObjectPtr root;
  // The storages of the tensor attributes, each once, in the order met.
  std::vector<c10::Storage> storages;

 private:
  ObjectPtr object(const Object& obj) {
    auto found = objects_.find(&obj);
    if (found != objects_.end()) return found->second;  // a submodule reached twice stays one object
    const c10::ClassTypePtr type = obj.type();
    auto cu = type->compilation_unit();
    // A module that pickles itself (quantized ones do) may derive state from
    // its tensors when it is loaded; the placeholders would feed it.
    if (type->findMethod("__getstate__") || type->findMethod("__setstate__") || !cu ||
        obj.slots().size() != type->numAttributes()) {
      ok_ = false;
      return ObjectPtr();
    }
    const size_t n = type->numAttributes();
    ObjectPtr out = Object::create(c10::StrongTypePtr(cu, type), n);
    objects_.emplace(&obj, out);
    for (size_t i = 0; i < n && ok_; ++i) {
      const c10::IValue& v = obj.getSlot(i);
      if (v.isTensor() && v.toTensor().defined()) {
        out->setSlot(i, placeholder(v.toTensor()));
      } else if (is_module(v)) {
        ObjectPtr sub = object(v.toObjectRef());
        if (sub) out->setSlot(i, std::move(sub));
      } else {
        keep(v);
        out->setSlot(i, v);
      }
    }
    return out;
  }

  at::Tensor placeholder(const at::Tensor& t) {
    if (!plain_tensor(t, device_)) {
      ok_ = false;
      return at::Tensor();
    }
    // The reader gives every tensor of a storage the dtype of the first one
    // it meets; a storage seen with two dtypes is the round trip's to decide.
    auto s = moved_.emplace(t.storage().unsafeGetStorageImpl(), t.scalar_type());
    if (s.second) {
      storages.push_back(t.storage());
    } else if (s.first->second != t.scalar_type()) {
      ok_ = false;
    }
    at::Tensor& p = placeholders_[t.unsafeGetTensorImpl()];
    if (!p.defined()) p = at::empty({0}, t.options());
    return p;
  }

  // Notes the storages of the tensors inside an attribute saved as it is.
  void keep(const c10::IValue& v) {
    if (!v.isPtrType() || v.isString()) return;
    v.visit([this](const c10::IValue& sub) {
      if (sub.isTensor()) {
        const at::Tensor& t = sub.toTensor();
        if (t.defined() && t.has_storage()) {
          kept_.insert(t.storage().unsafeGetStorageImpl());
        } else if (t.defined()) {
          ok_ = false;  // sparse, mkldnn: what it shares cannot be told
        }
      } else if (is_module(sub)) {
        ok_ = false;
      }
      return false;
    });
  }

  c10::Device device_;
  bool ok_ = true;
  std::unordered_map<const Object*, ObjectPtr> objects_;
  std::unordered_map<const c10::TensorImpl*, at::Tensor> placeholders_;
  std::unordered_map<const c10::StorageImpl*, at::ScalarType> moved_;
  std::unordered_set<const c10::StorageImpl*> kept_;
};

// Pass 2, beside the code's save and load: copies of the storages, made on a
// second thread, since on the CPU they take about as long as compiling the
// code does on this one (most of it the page faults of the new memory). A
// GPU copy stays on the calling thread, with its device and stream.
std::future<std::vector<c10::Storage>> start_copy(const std::vector<c10::Storage>& from, const c10::Device& device) {
  auto work = [&from] {
    std::vector<c10::Storage> out;
    out.reserve(from.size());
    for (const c10::Storage& s : from) out.push_back(copy_storage(s));
    return out;
  };
  if (device.is_cpu()) {
    try {
      return std::async(std::launch::async, work);
    } catch (const std::system_error&) {
      // No thread to be had: copy on this one when asked.
    }
  }
  return std::async(std::launch::deferred, work);
}

// A new tensor like `t` (offset, sizes, strides, requires_grad) on storage `s`.
at::Tensor view_on(const at::Tensor& t, const c10::Storage& s) {
  at::Tensor out = at::empty({0}, t.options());
  out.set_(s, t.storage_offset(), t.sizes(), t.strides());
  if (t.requires_grad()) out.set_requires_grad(true);
  return out;
}

// Pass 3: copies of the original's tensors put into the slots of the loaded
// stand-in, whose object tree has the same types and slots. One new tensor
// per original tensor, on the copy of its storage with the same offset,
// sizes and strides, so tied weights and views keep their sharing: the fold
// finds tied weights by aliasing, and the serializer's output depends on it.
class Transplant {
 public:
  explicit Transplant(std::unordered_map<const c10::StorageImpl*, c10::Storage> storages)
      : storages_(std::move(storages)) {}

  bool fill(const Object& original, Object& copy) {
    if (!filled_.insert(&original).second) return true;
    if (copy.type()->name() != original.type()->name() || copy.slots().size() != original.slots().size()) {
      return false;
    }
    for (size_t i = 0; i < original.slots().size(); ++i) {
      const c10::IValue& v = original.getSlot(i);
      if (v.isTensor() && v.toTensor().defined()) {
        if (!copy.getSlot(i).isTensor()) return false;
        copy.setSlot(i, tensor(v.toTensor()));
      } else if (is_module(v)) {
        const c10::IValue& sub = copy.getSlot(i);
        if (!sub.isObject() || !fill(v.toObjectRef(), sub.toObjectRef())) return false;
      }
    }
    return true;
  }

 private:
  at::Tensor tensor(const at::Tensor& t) {
    at::Tensor& out = tensors_[t.unsafeGetTensorImpl()];
    if (!out.defined()) out = view_on(t, storages_.at(t.storage().unsafeGetStorageImpl()));
    return out;
  }

  std::unordered_map<const c10::StorageImpl*, c10::Storage> storages_;
  std::unordered_set<const Object*> filled_;
  std::unordered_map<const c10::TensorImpl*, at::Tensor> tensors_;
};

// Saves a stand-in with placeholder tensors (the code, in effect), loads it
// into a new compilation unit, and puts copies of the real tensors in: one
// memcpy of the weights and no archive of them, so about half the time of a
// round trip and half its peak memory. Null where only the round trip can be
// trusted to give the same result.
ModulePtr stand_in_copy(const torch::jit::Module& module, const c10::Device& device, bool share) {
  StandIn plan(device);
  if (!plan.build(*module._ivalue())) return nullptr;
  // Shared: the "copies" are the storages themselves, until unshare_storages.
  auto weights = share ? std::async(std::launch::deferred, [&plan] { return plan.storages; })
                       : start_copy(plan.storages, device);  // its destructor waits for the thread on every path
  ModulePtr copy;
  try {
    std::stringstream buffer;
    torch::jit::Module(std::move(plan.root)).save(buffer);
    copy = std::make_shared<torch::jit::Module>(torch::jit::load(buffer, device));
  } catch (const std::exception&) {
    return nullptr;  // the round trip copies it, or reports why it cannot
  }
  std::vector<c10::Storage> copies = weights.get();
  std::unordered_map<const c10::StorageImpl*, c10::Storage> by_original;
  for (size_t i = 0; i < copies.size(); ++i) {
    by_original.emplace(plan.storages[i].unsafeGetStorageImpl(), std::move(copies[i]));
  }
  if (!Transplant(std::move(by_original)).fill(*module._ivalue(), *copy->_ivalue())) return nullptr;
  return copy;
}

}  // namespace

ModulePtr private_copy(const torch::jit::Module& module, bool share_storages) {
  const c10::Device device(module_device(module));
  if (ModulePtr copy = stand_in_copy(module, device, share_storages)) return copy;
  return round_trip_copy(module, device);
}

namespace {

void collect_storages(const Object& o, std::unordered_set<const Object*>& seen,
                      std::unordered_set<const c10::StorageImpl*>& out) {
  if (!seen.insert(&o).second) return;
  for (const c10::IValue& v : o.slots()) {
    if (v.isTensor() && v.toTensor().defined() && v.toTensor().has_storage()) {
      out.insert(v.toTensor().storage().unsafeGetStorageImpl());
    } else if (is_module(v)) {
      collect_storages(v.toObjectRef(), seen, out);
    }
  }
}

class Unshare {
 public:
  explicit Unshare(std::unordered_set<const c10::StorageImpl*> shared) : shared_(std::move(shared)) {}

  void walk(Object& o) {
    if (!seen_.insert(&o).second) return;
    for (size_t i = 0; i < o.slots().size(); ++i) {
      const c10::IValue v = o.getSlot(i);
      if (v.isTensor() && v.toTensor().defined() && v.toTensor().has_storage() &&
          shared_.count(v.toTensor().storage().unsafeGetStorageImpl())) {
        o.setSlot(i, tensor(v.toTensor()));
      } else if (is_module(v)) {
        walk(v.toObjectRef());
      }
    }
  }

 private:
  at::Tensor tensor(const at::Tensor& t) {
    at::Tensor& out = tensors_[t.unsafeGetTensorImpl()];
    if (out.defined()) return out;
    c10::Storage& s = storages_[t.storage().unsafeGetStorageImpl()];
    if (!s) s = copy_storage(t.storage());
    out = view_on(t, s);
    return out;
  }

  std::unordered_set<const c10::StorageImpl*> shared_;
  std::unordered_set<const Object*> seen_;
  std::unordered_map<const c10::StorageImpl*, c10::Storage> storages_;
  std::unordered_map<const c10::TensorImpl*, at::Tensor> tensors_;
};

}  // namespace

void unshare_storages(torch::jit::Module& copy, const torch::jit::Module& original) {
  std::unordered_set<const Object*> seen;
  std::unordered_set<const c10::StorageImpl*> storages;
  collect_storages(*original._ivalue(), seen, storages);
  Unshare(std::move(storages)).walk(*copy._ivalue());
}

}  // namespace torchfold::core
