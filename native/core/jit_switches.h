// libtorch's JIT fusers that are switched on for the whole process, scoped to
// the modules that asked for them.
//
// The oneDNN Graph (LLGA) fuser is a pass libtorch registers in one global
// list, and the NNC (TensorExpr) fuser's CPU permission is one global flag.
// Both are read when a TorchScript executor optimizes a graph, which happens
// inside a forward call (after its profiling runs, and again when new input
// shapes arrive). So every forward of a module holds a process-wide lock:
// modules without switches share it (an uncontended shared lock); a module
// with switches holds it alone, turns its switches on for its call and back
// off before it lets go. No other module's graph is ever optimized with a
// switch it did not ask for, and no two threads flip a switch at once. The
// cost: a module with switches runs alone (with one compute thread, the
// default on small machines, nothing changes).
//
// Switches belong to one module object (a clone starts without them) and are
// not saved with it; recipes (recipe.h) carry them across a save.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>

namespace torchfold::core {

struct JitSwitches {
  bool llga = false;  // oneDNN Graph fusion (libtorch 2.x built with oneDNN)
  bool nnc = false;   // NNC TensorExpr fusion on the CPU
  bool any() const { return llga || nnc; }
  std::string describe() const;  // "llga+nnc", "llga", "" ...
};

// Whether this libtorch has the fuser; why not otherwise ("" when it has).
std::string llga_unavailable_reason();
std::string nnc_unavailable_reason();

// ERR_UNSUPPORTED when a switch is not available in this libtorch.
void set_jit_switches(const torch::jit::Module& module, JitSwitches switches);
JitSwitches jit_switches_of(const torch::jit::Module& module);

// Held around every call into a module's methods (run_method).
class JitSwitchScope {
 public:
  explicit JitSwitchScope(const torch::jit::Module& module);
  ~JitSwitchScope();
  JitSwitchScope(const JitSwitchScope&) = delete;
  JitSwitchScope& operator=(const JitSwitchScope&) = delete;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace torchfold::core
