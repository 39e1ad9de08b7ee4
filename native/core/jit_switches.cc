#include "jit_switches.h"

#include <ATen/Config.h>
#if __has_include(<torch/csrc/jit/codegen/fuser/interface.h>)
#include <torch/csrc/jit/codegen/fuser/interface.h>
#define TORCHFOLD_HAS_NNC_SWITCH 1
#else
#define TORCHFOLD_HAS_NNC_SWITCH 0  // Debian's 1.13 does not ship the header
#endif
#include <torch/csrc/jit/passes/pass_manager.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>

#include <mutex>
#include <shared_mutex>
#include <vector>

#if __has_include(<torch/csrc/jit/codegen/onednn/interface.h>)
#include <torch/csrc/jit/codegen/onednn/interface.h>
#define TORCHFOLD_HAS_LLGA 1
#else
#define TORCHFOLD_HAS_LLGA 0
#endif

#include "error.h"
#include "runtime.h"

namespace torchfold::core {

namespace {

using ObjectPtr = c10::intrusive_ptr<c10::ivalue::Object>;
using WeakObject = c10::weak_intrusive_ptr<c10::ivalue::Object>;

std::shared_mutex& run_lock() {
  static std::shared_mutex lock;
  return lock;
}

// Which module objects have switches: few entries, pruned as modules die.
struct Table {
  std::mutex mutex;
  std::vector<std::pair<WeakObject, JitSwitches>> entries;
};
Table& table() {
  static auto* t = new Table();  // never destroyed: modules may outlive statics
  return *t;
}

JitSwitches lookup(const torch::jit::Module& module) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  const c10::ivalue::Object* key = module._ivalue().get();
  for (auto& [weak, switches] : t.entries) {
    if (weak._unsafe_get_target() == key && !weak.expired()) return switches;
  }
  return {};
}

// Turns the switches on for the lifetime of this object (under the exclusive lock).
class Enabled {
 public:
  explicit Enabled(JitSwitches s) : s_(s) {
#if TORCHFOLD_HAS_LLGA
    if (s_.llga) pass_ = torch::jit::registerPrePass(torch::jit::fuser::onednn::fuseGraph);
#endif
#if TORCHFOLD_HAS_NNC_SWITCH
    if (s_.nnc) {
      cpu_fusion_was_ = torch::jit::canFuseOnCPU();
      texpr_was_ = torch::jit::tensorExprFuserEnabled();
      torch::jit::overrideCanFuseOnCPU(true);
      torch::jit::setTensorExprFuserEnabled(true);
    }
#endif
  }
  ~Enabled() {
#if TORCHFOLD_HAS_LLGA
    if (s_.llga) torch::jit::clearPrePass(pass_);
#endif
#if TORCHFOLD_HAS_NNC_SWITCH
    if (s_.nnc) {
      torch::jit::overrideCanFuseOnCPU(cpu_fusion_was_);
      torch::jit::setTensorExprFuserEnabled(texpr_was_);
    }
#endif
  }
  Enabled(const Enabled&) = delete;
  Enabled& operator=(const Enabled&) = delete;

 private:
  JitSwitches s_;
  torch::jit::GraphPassNameType pass_{};
  bool cpu_fusion_was_ = false;
  bool texpr_was_ = true;
};

}  // namespace

std::string JitSwitches::describe() const {
  std::string out;
  if (llga) out = "llga";
  if (nnc) out += out.empty() ? "nnc" : "+nnc";
  return out;
}

std::string llga_unavailable_reason() {
#if TORCHFOLD_HAS_LLGA
  if (!AT_MKLDNN_ENABLED()) return "this libtorch is built without oneDNN";
  return "";
#else
  return "this libtorch (" + libtorch_version() + ") has no oneDNN Graph fuser";
#endif
}

std::string nnc_unavailable_reason() {
#if TORCHFOLD_HAS_NNC_SWITCH
  return "";
#else
  return "this libtorch (" + libtorch_version() + ") has no switch for NNC fusion on the CPU in its headers";
#endif
}

void set_jit_switches(const torch::jit::Module& module, JitSwitches switches) {
  if (switches.llga) {
    const std::string why = llga_unavailable_reason();
    if (!why.empty()) throw Error(ErrorCode::Unsupported, "oneDNN Graph fusion is not available: " + why);
  }
  if (switches.nnc) {
    const std::string why = nnc_unavailable_reason();
    if (!why.empty()) throw Error(ErrorCode::Unsupported, "NNC fusion is not available: " + why);
  }
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto& e = t.entries;
  e.erase(std::remove_if(e.begin(), e.end(), [](const auto& x) { return x.first.expired(); }), e.end());
  const c10::ivalue::Object* key = module._ivalue().get();
  for (auto& [weak, s] : e) {
    if (weak._unsafe_get_target() == key) {
      s = switches;
      return;
    }
  }
  if (switches.any()) e.emplace_back(WeakObject(module._ivalue()), switches);
}

JitSwitches jit_switches_of(const torch::jit::Module& module) { return lookup(module); }

struct JitSwitchScope::State {
  std::shared_lock<std::shared_mutex> shared;
  std::unique_lock<std::shared_mutex> exclusive;
  std::unique_ptr<Enabled> enabled;
};

JitSwitchScope::JitSwitchScope(const torch::jit::Module& module) : state_(new State()) {
  const JitSwitches s = lookup(module);
  if (!s.any()) {
    state_->shared = std::shared_lock<std::shared_mutex>(run_lock());
    return;
  }
  state_->exclusive = std::unique_lock<std::shared_mutex>(run_lock());
  state_->enabled = std::make_unique<Enabled>(s);
}

JitSwitchScope::~JitSwitchScope() {
  state_->enabled.reset();  // switches off before the lock is let go
}

}  // namespace torchfold::core
