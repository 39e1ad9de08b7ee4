// A virtual inlining of a module's methods: every method call on a submodule
// (prim::CallMethod) becomes a Frame bound to the concrete instance that runs
// it, without touching any graph. Analysis follows values across call
// boundaries through frames (a callee's parameter is its caller's argument, a
// call's output is the callee's return value), which is how a conv that ends
// one module and a BatchNorm that starts the next are found to be adjacent.
//
// Graphs belong to class types, and instances of one type share them, so a
// (graph, node) may run in several frames; decisions are made per frame and
// applied per node only where every frame agrees.
#pragma once

#include <torch/script.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace torchfold::core {

using torch::jit::Node;
using JValue = torch::jit::Value;

struct Frame {
  const Frame* caller = nullptr;
  Node* call_node = nullptr;    // the CallMethod/CallFunction in the caller's graph
  bool is_function = false;     // a free function: no self, inputs shift by one
  torch::jit::Module instance;  // the module running this graph
  std::string path;             // "" for the root, "layer1.0.conv1"
  std::string root_method;      // the root method this frame runs under
  std::string method;           // this graph's method name
  std::shared_ptr<torch::jit::Graph> graph;
  std::vector<std::unique_ptr<Frame>> children;
  std::map<const Node*, Frame*> child_for_call;
};

// One attribute of one module instance, e.g. ("layer1.0.conv1", "weight").
struct AttrRef {
  torch::jit::Module owner;
  std::string path;
  std::string name;
  std::string key() const { return path.empty() ? name : path + "." + name; }
};

// A value at a place in the virtual inlined program.
struct Site {
  JValue* value = nullptr;
  const Frame* frame = nullptr;
};

class ProgramView {
 public:
  explicit ProgramView(const torch::jit::Module& root);

  const std::vector<std::unique_ptr<Frame>>& roots() const { return roots_; }
  // Every frame in traversal order (deterministic: methods, then graph order).
  const std::vector<const Frame*>& frames() const { return frames_; }

  // The module instance a module-typed value refers to in `frame`.
  std::optional<std::pair<torch::jit::Module, std::string>> module_of(JValue* v, const Frame& frame) const;

  // Follows a value back to where it is made: through parameters to the
  // caller's argument, through calls to the callee's return, and through
  // prim::If outputs whose condition is known or whose other branch always
  // raises. `chain` receives every site passed, starting with the given one.
  // With `use_attributes`, conditions may read any of the instance's current
  // attributes (e.g. training); without, only constants and frozen attributes
  // (frozen_value) count.
  Site origin(Site start, bool use_attributes, std::vector<Site>* chain = nullptr) const;

  // The attribute a value is read from (after origin()), if it is one.
  std::optional<AttrRef> attribute_of(Site s, bool use_attributes) const;

  // A constant (after origin()), if the value is one: a prim::Constant, a
  // frozen attribute, or with `use_attributes` any attribute's current value.
  std::optional<c10::IValue> constant_of(Site s, bool use_attributes) const;

  // The value of an attribute read (a prim::GetAttr output) that the program
  // treats as a constant, as torch.jit.freeze does: a bool, number, string,
  // None, or a list/dict/tuple of those, that no code assigns (prim::SetAttr)
  // and that is only ever read, never passed on or changed in place. Never
  // 'training' (train()/eval() set it from outside), tensors or modules.
  std::optional<c10::IValue> frozen_value(Site getattr) const;

  // Uses of a value that can run in `frame`: uses inside a branch whose
  // condition selects the other branch (constants and frozen attributes) are
  // left out.
  std::vector<torch::jit::Use> live_uses(JValue* v, const Frame* frame) const;

  // Whether a node sits in a branch that cannot run in `frame` (constants and
  // frozen attributes); with a null frame, constants of its own graph only.
  bool is_dead(const Node* n, const Frame* frame) const;

  // A constant argument (constant_of without attributes), or an int list
  // built from constants (prim::ListConstruct), as convs pass stride and padding.
  std::optional<c10::IValue> constant_arg(Site s) const;

  // Evaluates a boolean, if it is decidable.
  std::optional<bool> eval_bool(Site s, bool use_attributes) const;

  // Frames in which a graph node runs.
  const std::vector<const Frame*>& frames_running(const Node* n) const;

 private:
  void visit(Frame& frame, int depth);
  void add_child(Frame& frame, Node* n, std::unique_ptr<Frame> child, int depth);
  std::optional<Site> step_back(Site s, bool use_attributes) const;

  std::vector<std::unique_ptr<Frame>> roots_;
  std::vector<const Frame*> frames_;
  std::map<const Node*, std::vector<const Frame*>> node_frames_;
  // Attribute keys ("layer1.0.flag") some code assigns, passes on or may change in place.
  std::set<std::string> unfrozen_;
};

std::string join_path(const std::string& parent, const std::string& child);

// Calls fn on every node of a block and of the blocks nested in it, in order.
template <typename F>
void for_each_node(torch::jit::Block* block, F&& fn) {
  for (Node* n : block->nodes()) {
    fn(n);
    for (torch::jit::Block* b : n->blocks()) for_each_node(b, fn);
  }
}

}  // namespace torchfold::core
