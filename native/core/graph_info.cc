#include "graph_info.h"

#include <c10/util/StringUtil.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/scope.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/shape_analysis.h>
#include <torch/csrc/jit/passes/symbolic_shape_analysis.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "error.h"
#include "tensor.h"

namespace torchfold::core {

namespace {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using JValue = torch::jit::Value;

constexpr int kMaxDepth = 256;

std::string dotted(const std::string& parent, const std::string& child) {
  if (parent.empty()) return child;
  if (child.empty()) return parent;
  return parent + "." + child;
}

bool is_module_type(const c10::TypePtr& type) {
  auto cls = type ? type->cast<c10::ClassType>() : nullptr;
  return cls && cls->is_module();
}

const JValue* graph_self(const Graph& graph) {
  if (graph.inputs().empty() || !is_module_type(graph.inputs()[0]->type())) return nullptr;
  return graph.inputs()[0];
}

// The attribute path from `self` to a value read through prim::GetAttr
// ("" for self itself), if it is one.
std::optional<std::string> attr_path(const JValue* v, const JValue* self) {
  if (!self) return std::nullopt;
  std::vector<std::string> names;
  for (int depth = 0; v != self; ++depth) {
    const Node* n = v->node();
    if (depth > kMaxDepth || n->kind() != c10::prim::GetAttr) return std::nullopt;
    names.push_back(n->s(c10::attr::name));
    v = n->input(0);
  }
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) path = dotted(path, *it);
  return path;
}

std::optional<torch::jit::Module> submodule(const torch::jit::Module& root, const std::string& path) {
  torch::jit::Module cur = root;
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('.', start);
    if (end == std::string::npos) end = path.size();
    const std::string name = path.substr(start, end - start);
    if (!cur.hasattr(name)) return std::nullopt;
    c10::IValue v = cur.attr(name);
    if (!v.isModule()) return std::nullopt;
    cur = v.toModule();
    start = end + 1;
  }
  return cur;
}

std::string last_component(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// A function's qualified name without "__torch__.".
std::string function_name(const torch::jit::Function& fn) {
  std::string name = fn.qualname().qualifiedName();
  const std::string prefix = "__torch__.";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return name;
}

std::string callee_of(const Node* n, const JValue* self) {
  if (n->kind() == c10::prim::CallMethod) {
    auto p = attr_path(n->input(0), self);
    return p ? dotted(*p, n->s(c10::attr::name)) : "";
  }
  if (n->kind() == c10::prim::CallFunction && n->inputs().size() > 0) {
    auto type = n->input(0)->type()->cast<c10::FunctionType>();
    if (!type || !type->function()) return "";
    return function_name(*type->function());
  }
  return "";
}

std::string scope_of(const Node* n) {
  torch::jit::SourceRange r = n->sourceRange();
  if (!r.source()) return "";
  if (auto original = r.findSourceRangeThatGenerated()) r = *original;
  auto flc = r.file_line_col();
  if (!flc) return "";
  const std::string& file = std::get<0>(*flc);
  if (file.empty()) return "";
  return file + ":" + std::to_string(std::get<1>(*flc)) + ":" + std::to_string(std::get<2>(*flc));
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string brief(const c10::IValue& v, int depth) {
  constexpr size_t kMaxItems = 8;
  constexpr size_t kMaxString = 60;
  std::ostringstream os;
  if (v.isNone()) return "None";
  if (v.isBool()) return v.toBool() ? "True" : "False";
  if (v.isInt()) return std::to_string(v.toInt());
  if (v.isDouble()) {
    const double d = v.toDouble();
    os << d;
    std::string s = os.str();
    if (std::isfinite(d) && s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
  }
  if (v.isString()) {
    std::string s = v.toStringRef();
    if (s.size() > kMaxString) s = s.substr(0, kMaxString) + "...";
    c10::printQuotedString(os, s);
    return os.str();
  }
  if (v.isDevice()) return v.toDevice().str();
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!t.defined()) return "Tensor(undefined)";
    std::string text = "Tensor" + shape_text(t.sizes().vec()) + " " + dtype_name(t.scalar_type());
    if (t.dim() == 0 && t.device().is_cpu()) text += " = " + brief(c10::IValue(t.item()), depth + 1);
    return text;
  }
  if (depth > 4) return "...";
  if (v.isList() || v.isTuple()) {
    const bool tuple = v.isTuple();
    c10::ArrayRef<c10::IValue> items = tuple ? v.toTupleRef().elements() : v.toListRef();
    os << (tuple ? "(" : "[");
    for (size_t i = 0; i < items.size() && i < kMaxItems; ++i) {
      if (i) os << ", ";
      os << brief(items[i], depth + 1);
    }
    if (items.size() > kMaxItems) os << ", ...";
    if (tuple && items.size() == 1) os << ",";
    os << (tuple ? ")" : "]");
    return os.str();
  }
  return "<" + v.type()->annotation_str() + ">";
}

std::string constant_text(const Node* n) {
  if (n->outputs().size() != 1) return "";
  const JValue* out = n->output();
  if (out->type()->kind() == c10::TypeKind::NoneType) return "None";
  if (auto fn = out->type()->cast<c10::FunctionType>()) {
    return fn->function() ? function_name(*fn->function()) : "<function>";
  }
  if (!n->hasAttribute(c10::attr::value)) return "";
  auto iv = torch::jit::toIValue(out);
  if (!iv) return "";
  return brief(*iv, 0);
}

GraphValueInfo value_info(const JValue* v) {
  GraphValueInfo info;
  info.name = v->debugName();
  info.type = v->type()->str();
  if (auto tt = v->type()->cast<c10::TensorType>()) {
    if (auto sizes = tt->sizes().concrete_sizes()) {
      info.shape = *sizes;
      info.shape_known = true;
    }
    if (auto st = tt->scalarType()) info.dtype = dtype_name(*st);
  }
  return info;
}

int block_number(const Node* owner, const Block* b) {
  const auto blocks = owner->blocks();
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i] == b) return static_cast<int>(i);
  }
  return -1;
}

class Numbering {
 public:
  explicit Numbering(Block* top) { visit(top, -1, -1); }

  const std::vector<Node*>& nodes() const { return order_; }
  int parent(size_t i) const { return parent_[i]; }
  int block(size_t i) const { return block_[i]; }
  int index(const Node* n) const {
    auto it = index_.find(n);
    return it == index_.end() ? -1 : it->second;
  }

  GraphValueRef ref(const JValue* v) const {
    GraphValueRef r;
    const Node* p = v->node();
    if (p->kind() == c10::prim::Param) {
      const Block* b = p->owningBlock();
      const Node* owner = b ? b->owningNode() : nullptr;
      if (!owner) {
        r.node = -1;
        r.input = static_cast<int>(v->offset());
      } else {
        r.node = index(owner);
        r.output = -1;
        r.input = static_cast<int>(v->offset());
        r.block = block_number(owner, b);
      }
      return r;
    }
    r.node = index(p);
    r.output = static_cast<int>(v->offset());
    return r;
  }

  std::vector<GraphUse> uses(const JValue* v) const {
    std::vector<GraphUse> out;
    for (const auto& u : v->uses()) {
      const Node* user = u.user;
      const int input = static_cast<int>(u.offset);
      if (user->kind() == c10::prim::Return) {
        const Block* b = user->owningBlock();
        const Node* owner = b ? b->owningNode() : nullptr;
        if (!owner) {
          out.push_back({-1, input, -1});
        } else {
          out.push_back({index(owner), input, block_number(owner, b)});
        }
      } else {
        out.push_back({index(user), input, -1});
      }
    }
    auto key = [](const GraphUse& u) { return std::make_tuple(u.node < 0 ? INT_MAX : u.node, u.block, u.input); };
    std::sort(out.begin(), out.end(), [&](const GraphUse& a, const GraphUse& b) { return key(a) < key(b); });
    return out;
  }

 private:
  void visit(Block* b, int parent, int block) {
    for (Node* n : b->nodes()) {
      const int i = static_cast<int>(order_.size());
      order_.push_back(n);
      parent_.push_back(parent);
      block_.push_back(block);
      index_[n] = i;
      const auto blocks = n->blocks();
      for (size_t k = 0; k < blocks.size(); ++k) visit(blocks[k], i, static_cast<int>(k));
    }
  }

  std::vector<Node*> order_;
  std::vector<int> parent_;
  std::vector<int> block_;
  std::unordered_map<const Node*, int> index_;
};

void collect_calls(const Block* block, std::vector<const Node*>& out) {
  for (const Node* n : block->nodes()) {
    if (n->kind() == c10::prim::CallMethod || n->kind() == c10::prim::CallFunction) out.push_back(n);
    for (const Block* b : n->blocks()) collect_calls(b, out);
  }
}

// Module paths of the nodes of an inlined graph.
//
// The inliner records, for each call it inlined, the callee, the call's
// source range and the receiver's last attribute name ("SELF" for a method of
// the same object). The last name alone is ambiguous (`self.a[0]` and
// `self.b[0]` are both "0"), so each level is resolved by finding that call in
// the caller's own (not inlined) graph and reading its receiver's whole
// attribute chain from the caller's self.
//
// libtorch 1.13 does not update the call stacks of nodes inside If/Loop blocks
// (nor of nodes without outputs) when it inlines a function that was itself
// inlined already: such a node keeps a stack relative to the function it was
// written in, or none. A stack counts only if its first call is in the root
// graph. A node without outputs goes where its first input is made; other
// nodes are placed relative to the node that owns their block. A top-level
// node with outputs and no stack is the root method's own.
class ModulePaths {
 public:
  ModulePaths(const torch::jit::Module& root, const Graph* root_graph, const Numbering& numbering)
      : root_(root), root_graph_(root_graph) {
    const auto& order = numbering.nodes();
    frames_.resize(order.size());
    for (size_t i = 0; i < order.size(); ++i) frames_[i] = place(order[i], numbering.parent(i), numbering);
  }

  std::string path(size_t i) const { return frames_[i].path; }

 private:
  struct Frame {
    std::string path;
    const Graph* graph = nullptr;  // the graph of the function the node was written in
  };

  Frame place(const Node* n, int parent, const Numbering& numbering) {
    Frame root_frame{"", root_graph_};
    auto cs = n->callstack();
    if (cs && *cs) {
      if (auto f = walk(**cs, root_frame, true)) return *f;
      if (parent >= 0) return *walk(**cs, frames_[parent], false);
      return *walk(**cs, root_frame, false);
    }
    // Nodes without outputs get no stack: they run where the value they test
    // or consume is made.
    if (n->outputs().empty() && !n->inputs().empty()) {
      const int producer = numbering.index(n->input(0)->node());
      if (producer >= 0) return frames_[producer];
    }
    if (parent >= 0) return frames_[parent];
    // A top-level node with outputs and no stack is the root method's own.
    return root_frame;
  }

  // Follows a call stack from `start`. With `strict`, every call must be found
  // in its caller's graph.
  std::optional<Frame> walk(torch::jit::InlinedCallStack& cs, const Frame& start, bool strict) {
    std::optional<torch::jit::Module> cur = submodule(root_, start.path);
    Frame f = start;
    for (const auto& entry : cs.vec()) {
      torch::jit::Function* fn = std::get<0>(entry);
      const torch::jit::SourceRange& range = std::get<1>(entry);
      const auto& info = std::get<2>(entry);
      const std::vector<const Node*>* calls = f.graph ? &calls_in(f.graph) : nullptr;
      bool found = false;
      if (calls) {
        for (const Node* c : *calls) found = found || c->sourceRange() == range;
      }
      if (strict && !found) return std::nullopt;
      if (info) {
        const std::string instance = info->instance_name();
        std::optional<std::string> rel;
        if (found && fn) rel = receiver(*calls, f.graph, fn->name(), range, instance);
        if (!rel && cur) rel = guess(*cur, *info);
        if (!rel) rel = instance == "SELF" ? "" : instance;
        f.path = dotted(f.path, *rel);
        if (cur) cur = submodule(*cur, *rel);
      }
      f.graph = nullptr;
      if (fn) {
        if (auto* gf = torch::jit::tryToGraphFunction(*fn)) f.graph = gf->graph().get();
      }
    }
    return f;
  }

  const std::vector<const Node*>& calls_in(const Graph* graph) {
    auto it = calls_.find(graph);
    if (it == calls_.end()) {
      std::vector<const Node*> calls;
      collect_calls(graph->block(), calls);
      it = calls_.emplace(graph, std::move(calls)).first;
    }
    return it->second;
  }

  // The receiver's path relative to the caller's self, when exactly one call
  // in the caller matches.
  static std::optional<std::string> receiver(const std::vector<const Node*>& calls, const Graph* caller,
                                             const std::string& method, const torch::jit::SourceRange& range,
                                             const std::string& instance) {
    const JValue* self = graph_self(*caller);
    std::set<std::string> hits;
    for (const Node* n : calls) {
      if (n->kind() != c10::prim::CallMethod || n->s(c10::attr::name) != method || !(n->sourceRange() == range)) {
        continue;
      }
      auto p = attr_path(n->input(0), self);
      if (!p) continue;
      const bool same = instance == "SELF" ? p->empty() : last_component(*p) == instance;
      if (same) hits.insert(*p);
    }
    if (hits.size() != 1) return std::nullopt;
    return *hits.begin();
  }

  // Without a matching call: a child of that name, else the first descendant
  // of that name and type.
  static std::optional<std::string> guess(const torch::jit::Module& cur, const torch::jit::ModuleInstanceInfo& info) {
    const std::string name = info.instance_name();
    if (name == "SELF") return std::string();
    if (cur.hasattr(name) && cur.attr(name).isModule()) return name;
    for (const auto& item : cur.named_modules()) {
      if (!item.name.empty() && last_component(item.name) == name && item.value.type() == info.class_type()) {
        return item.name;
      }
    }
    return std::nullopt;
  }

  torch::jit::Module root_;
  const Graph* root_graph_;
  std::vector<Frame> frames_;
  std::unordered_map<const Graph*, std::vector<const Node*>> calls_;
};

c10::Device module_device_of(const torch::jit::Module& module) {
  for (const auto& p : module.parameters()) return p.device();
  for (const auto& b : module.buffers()) return b.device();
  return c10::Device(c10::kCPU);
}

void all_nodes(Block* b, std::vector<Node*>& out) {
  for (Node* n : b->nodes()) {
    out.push_back(n);
    for (Block* sub : n->blocks()) all_nodes(sub, out);
  }
}

// An in-place ATen op: aten::relu_, aten::add_, not aten::__and__.
bool in_place(const std::string& kind) {
  return kind.rfind("aten::", 0) == 0 && kind.size() > 7 && kind.back() == '_' && kind[kind.size() - 2] != '_';
}

// In-place ops that may change their operand's shape.
const std::set<std::string>& reshaping_in_place() {
  static const std::set<std::string> kinds = {
      "aten::resize_", "aten::resize_as_",  "aten::squeeze_",  "aten::unsqueeze_", "aten::transpose_", "aten::t_",
      "aten::set_",    "aten::as_strided_", "aten::swapdims_", "aten::swapaxes_",  "aten::copy_"};
  return kinds;
}

// Shape propagation on a private copy. Two passes: libtorch's legacy
// PropagateInputShapes (dtypes, and shapes of the ops it can run) and the
// symbolic shape analysis (shapes of ops with shape functions: conv, pooling,
// linear, ...). Both need help to see what is known:
//  - the legacy pass forgets what prim::GetAttr yields, so each tensor (or
//    None) attribute read stands in as a constant (a detached alias of the
//    attribute's tensor, not a copy);
//  - it runs an op only when its list arguments are constants, so lists of
//    constants built by prim::ListConstruct stand in as list constants;
//  - it gives in-place ops no types at all, so relu_, add_, ... stand in as
//    their out-of-place forms, which give their result the same shape;
//  - aten::_convolution (traced models) has no shape function, so it stands
//    in as the conv op it amounts to.
// Afterwards every stand-in hands its type back and goes, as do the
// aten::expand nodes the legacy pass adds for broadcasting, so the node list
// stays the method's own. A pass that fails leaves only the input shapes.
class ShapePass {
 public:
  ShapePass(std::shared_ptr<Graph> graph, const torch::jit::Module& module,
            const std::vector<std::vector<int64_t>>& shapes)
      : graph_(std::move(graph)), module_(module), shapes_(shapes) {}

  void run() {
    all_nodes(graph_->block(), before_);
    stand_in_attributes();
    stand_in_lists();
    stand_in_convolutions();
    stand_in_in_place();
    apply_known_types();
    try {
      c10::NoGradGuard no_grad;
      torch::jit::PropagateInputShapes(graph_);
    } catch (...) {
      reset();
    }
    try {
      std::shared_ptr<Graph> g = graph_;
      torch::jit::PropagateShapesOnGraph(g);
    } catch (...) {
      reset();
    }
    restore();
  }

 private:
  void apply_known_types() {
    const c10::Device device = module_device_of(module_);
    const JValue* self = graph_self(*graph_);
    size_t next = 0;
    for (size_t i = self ? 1 : 0; i < graph_->inputs().size() && next < shapes_.size(); ++i) {
      JValue* in = graph_->inputs()[i];
      if (in->type()->kind() != c10::TypeKind::TensorType) continue;
      in->setType(c10::TensorType::createContiguous(at::kFloat, device, shapes_[next++]));
    }
    for (const auto& [value, stand_in] : stand_ins_) {
      if (stand_in->kind() == c10::prim::Constant && stand_in->hasAttribute(c10::attr::value) &&
          stand_in->kindOf(c10::attr::value) == torch::jit::AttributeKind::t) {
        stand_in->output()->setType(c10::TensorType::create(stand_in->t(c10::attr::value)));
      }
    }
  }

  void reset() {
    try {
      torch::jit::EraseShapeInformation(graph_);
      apply_known_types();
    } catch (...) {
    }
  }

  void stand_in(Node* original, Node* replacement) {
    replacement->insertAfter(original);
    original->output()->replaceAllUsesWith(replacement->output());
    stand_ins_.emplace_back(original->output(), replacement);
  }

  void stand_in_attributes() {
    const JValue* self = graph_self(*graph_);
    for (Node* n : before_) {
      if (n->kind() != c10::prim::GetAttr || !n->output()->hasUses()) continue;
      auto owner_path = attr_path(n->input(0), self);
      if (!owner_path) continue;
      auto owner = submodule(module_, *owner_path);
      const std::string name = n->s(c10::attr::name);
      if (!owner || !owner->hasattr(name)) continue;
      c10::IValue v = owner->attr(name);
      if (v.isNone()) {
        // An Optional[Tensor] attribute that is None (a conv without bias).
        if (n->output()->type()->kind() == c10::TypeKind::OptionalType) stand_in(n, graph_->createNone());
      } else if (v.isTensor() && v.toTensor().defined()) {
        Node* c = graph_->create(c10::prim::Constant);
        c->t_(c10::attr::value, v.toTensor().detach());
        stand_in(n, c);
      }
    }
  }

  void stand_in_lists() {
    for (Node* n : before_) {
      if (n->kind() != c10::prim::ListConstruct || !n->output()->hasUses()) continue;
      auto list_type = n->output()->type()->cast<c10::ListType>();
      if (!list_type) continue;
      const auto elem = list_type->getElementType()->kind();
      std::vector<c10::IValue> items;
      for (const JValue* in : n->inputs()) {
        auto iv = in->node()->kind() == c10::prim::Constant ? torch::jit::toIValue(in) : c10::nullopt;
        if (!iv) break;
        items.push_back(*iv);
      }
      if (items.size() != n->inputs().size()) continue;
      c10::IValue list;
      if (elem == c10::TypeKind::IntType) {
        c10::List<int64_t> l;
        for (const auto& v : items) l.push_back(v.toInt());
        list = l;
      } else if (elem == c10::TypeKind::FloatType) {
        c10::List<double> l;
        for (const auto& v : items) l.push_back(v.toDouble());
        list = l;
      } else if (elem == c10::TypeKind::BoolType) {
        c10::List<bool> l;
        for (const auto& v : items) l.push_back(v.toBool());
        list = l;
      } else {
        continue;
      }
      JValue* c = graph_->insertConstant(list);
      c->node()->moveAfter(n);
      n->output()->replaceAllUsesWith(c);
      stand_ins_.emplace_back(n->output(), c->node());
    }
  }

  // Traced models call aten::_convolution, which has no shape function: it
  // stands in as the conv{1,2,3}d or conv_transpose{1,2,3}d it amounts to.
  void stand_in_convolutions() {
    for (Node* n : before_) {
      if (n->kind() != c10::aten::_convolution || n->inputs().size() < 12 || !n->output()->hasUses()) continue;
      auto transposed = n->input(6)->node()->kind() == c10::prim::Constant ? torch::jit::toIValue(n->input(6))
                                                                           : c10::nullopt;
      if (!transposed || !transposed->isBool()) continue;
      const Node* w = n->input(1)->node();
      if (w->kind() != c10::prim::Constant || !w->hasAttribute(c10::attr::value) ||
          w->kindOf(c10::attr::value) != torch::jit::AttributeKind::t) {
        continue;
      }
      const int64_t dims = w->t(c10::attr::value).dim() - 2;
      if (dims < 1 || dims > 3) continue;
      std::vector<JValue*> in;
      std::string kind;
      if (transposed->toBool()) {
        kind = "aten::conv_transpose" + std::to_string(dims) + "d";
        for (int k : {0, 1, 2, 3, 4, 7, 8, 5}) in.push_back(n->input(k));
      } else {
        kind = "aten::conv" + std::to_string(dims) + "d";
        for (int k : {0, 1, 2, 3, 4, 5, 8}) in.push_back(n->input(k));
      }
      add_stand_in(n, c10::Symbol::fromQualString(kind), in);
    }
  }

  void stand_in_in_place() {
    for (Node* n : before_) {
      const std::string kind = n->kind().toQualString();
      if (!in_place(kind) || reshaping_in_place().count(kind) || n->outputs().size() != 1) continue;
      const auto pure = c10::Symbol::fromQualString(kind.substr(0, kind.size() - 1));
      add_stand_in(n, pure, n->inputs());
    }
  }

  // Puts a node of `kind` with `inputs` in place of n's output (restore() undoes it);
  // nothing happens when no schema of `kind` matches.
  void add_stand_in(Node* n, c10::Symbol kind, at::ArrayRef<JValue*> inputs) {
    Node* c = graph_->create(kind, inputs, 1);
    c->insertAfter(n);
    if (!c->maybeSchema()) {
      c->destroy();
      return;
    }
    c->output()->setType(n->output()->type());
    n->output()->replaceAllUsesWith(c->output());
    stand_ins_.emplace_back(n->output(), c);
  }

  void restore() {
    for (auto it = stand_ins_.rbegin(); it != stand_ins_.rend(); ++it) {
      auto [value, c] = *it;
      c->output()->replaceAllUsesWith(value);
      if (c->output()->type()->kind() == c10::TypeKind::TensorType) value->setType(c->output()->type());
      c->destroy();
    }
    std::unordered_set<Node*> old(before_.begin(), before_.end());
    std::vector<Node*> after, added;
    all_nodes(graph_->block(), after);
    for (Node* n : after) {
      if (!old.count(n)) added.push_back(n);
    }
    for (Node* n : added) {
      if (n->kind() == c10::aten::expand && n->outputs().size() == 1) {
        n->output()->replaceAllUsesWith(n->input(0));
      }
    }
    for (auto it = added.rbegin(); it != added.rend(); ++it) {
      bool used = false;
      for (const JValue* o : (*it)->outputs()) used = used || o->hasUses();
      if (!used) (*it)->destroy();
    }
  }

  std::shared_ptr<Graph> graph_;
  const torch::jit::Module& module_;
  const std::vector<std::vector<int64_t>>& shapes_;
  std::vector<Node*> before_;
  std::vector<std::pair<JValue*, Node*>> stand_ins_;
};

void check_shapes(const Graph& graph, const std::string& method, const std::vector<std::vector<int64_t>>& shapes) {
  const JValue* self = graph_self(graph);
  size_t tensors = 0;
  for (size_t i = self ? 1 : 0; i < graph.inputs().size(); ++i) {
    if (graph.inputs()[i]->type()->kind() == c10::TypeKind::TensorType) ++tensors;
  }
  if (shapes.size() > tensors) {
    throw Error(ErrorCode::InvalidArg, method + "() takes " + std::to_string(tensors) + " Tensor input" +
                                           (tensors == 1 ? "" : "s") + " but " + std::to_string(shapes.size()) +
                                           " input shapes were given");
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    for (int64_t d : shapes[i]) {
      if (d < 0) {
        throw Error(ErrorCode::InvalidArg,
                    "Input shape " + std::to_string(i) + " " + shape_text(shapes[i]) + " has a negative size");
      }
    }
  }
}

}  // namespace

GraphInfo describe_graph(const torch::jit::Module& module, const std::string& method, bool inlined,
                         const std::vector<std::vector<int64_t>>& input_shapes) {
  auto m = module.find_method(method);
  if (!m) {
    throw Error(ErrorCode::MethodNotFound, "The module has no method '" + method + "'");
  }
  std::shared_ptr<Graph> own = m->graph();
  check_shapes(*own, method, input_shapes);
  std::shared_ptr<Graph> graph = own;
  if (inlined || !input_shapes.empty()) {
    graph = own->copy();
    if (inlined) torch::jit::Inline(*graph);
    if (!input_shapes.empty()) ShapePass(graph, module, input_shapes).run();
  }

  GraphInfo info;
  info.method = method;
  info.inlined = inlined;
  Numbering numbering(graph->block());
  std::optional<ModulePaths> paths;
  if (inlined) paths.emplace(module, own.get(), numbering);
  const JValue* self = graph_self(*graph);

  for (const JValue* in : graph->inputs()) {
    GraphValueInfo v = value_info(in);
    v.uses = numbering.uses(in);
    info.inputs.push_back(std::move(v));
  }
  for (const JValue* out : graph->outputs()) info.outputs.push_back(numbering.ref(out));

  const auto& order = numbering.nodes();
  info.nodes.reserve(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const Node* n = order[i];
    GraphNodeInfo node;
    node.index = static_cast<int>(i);
    node.kind = n->kind().toQualString();
    // Constants are pooled and shared between modules: they belong to none.
    node.module = paths && n->kind() != c10::prim::Constant ? paths->path(i) : "";
    node.callee = callee_of(n, self);
    node.scope = scope_of(n);
    node.parent = numbering.parent(i);
    node.block = numbering.block(i);
    for (const JValue* in : n->inputs()) node.inputs.push_back(numbering.ref(in));
    for (const JValue* out : n->outputs()) {
      GraphValueInfo v = value_info(out);
      v.uses = numbering.uses(out);
      node.outputs.push_back(std::move(v));
    }
    if (n->kind() == c10::prim::Constant) node.constant = constant_text(n);
    info.nodes.push_back(std::move(node));
  }
  return info;
}

// ---------------------------------------------------------------------------
// DOT

namespace {

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': break;
      default: out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
    }
  }
  return out;
}

std::string dot_string(const std::string& s) { return "\"" + escape(s) + "\""; }

bool carries_tensor(const GraphValueInfo& v) {
  if (!v.dtype.empty() || v.shape_known) return true;
  if (v.type.find("Tensor") != std::string::npos) return true;
  // Shaped tensor types print as Float(...), Long(...), ...
  return !v.type.empty() && std::isupper(static_cast<unsigned char>(v.type[0])) &&
         v.type.find('(') != std::string::npos;
}

bool is_object_input(const GraphValueInfo& v) { return v.type.rfind("__torch__.", 0) == 0; }

const std::set<std::string>& conv_kinds() {
  static const std::set<std::string> kinds = {
      "aten::conv1d",           "aten::conv2d",           "aten::conv3d",
      "aten::conv_transpose1d", "aten::conv_transpose2d", "aten::conv_transpose3d",
      "aten::_convolution",     "aten::convolution",      "aten::linear"};
  return kinds;
}

const std::set<std::string>& pass_through_kinds() {
  static const std::set<std::string> kinds = {"prim::ListConstruct", "prim::TupleConstruct", "prim::ListUnpack",
                                              "prim::TupleUnpack",   "prim::TupleIndex",     "prim::unchecked_cast"};
  return kinds;
}

const std::set<std::string>& effect_kinds() {
  static const std::set<std::string> kinds = {"prim::Print", "prim::SetAttr", "prim::CallMethod", "prim::CallFunction"};
  return kinds;
}

std::string callee_path(const std::string& callee) {
  const auto dot = callee.rfind('.');
  return dot == std::string::npos ? "" : callee.substr(0, dot);
}

class DotWriter {
 public:
  DotWriter(const GraphInfo& info, const std::vector<DotHighlight>& highlights)
      : info_(info), highlights_(highlights), n_(info.nodes.size()) {}

  std::string write() {
    classify();
    std::ostringstream os;
    os << "digraph " << dot_string(info_.method) << " {\n";
    os << "  graph [label=" << dot_string(info_.method + (info_.inlined ? " (inlined)" : ""))
       << ", labelloc=t, fontname=\"Helvetica\", compound=true];\n";
    os << "  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n";
    os << "  edge [fontname=\"Helvetica\", fontsize=9];\n";
    for (size_t i = 0; i < info_.inputs.size(); ++i) {
      const auto& v = info_.inputs[i];
      if (is_object_input(v)) continue;
      std::string label = "input " + v.name;
      if (v.shape_known) label += "\n" + shape_text(v.shape);
      os << "  in" << i << " [shape=ellipse, style=filled, fillcolor=lightblue, label=" << dot_string(label) << "];\n";
    }
    emit_block(os, -1, -1, 1);
    for (size_t k = 0; k < info_.outputs.size(); ++k) {
      std::string label = "output " + std::to_string(k);
      if (const GraphValueInfo* v = value_at(info_.outputs[k])) {
        if (v->shape_known) label += "\n" + shape_text(v->shape);
      }
      os << "  out" << k << " [shape=ellipse, style=filled, fillcolor=lightgrey, label=" << dot_string(label) << "];\n";
    }
    emit_edges(os);
    os << "}\n";
    return os.str();
  }

 private:
  const GraphValueInfo* value_at(const GraphValueRef& r) const {
    if (r.node < 0) {
      return r.input >= 0 && static_cast<size_t>(r.input) < info_.inputs.size() ? &info_.inputs[r.input] : nullptr;
    }
    if (static_cast<size_t>(r.node) >= n_ || r.output < 0) return nullptr;
    const auto& outs = info_.nodes[r.node].outputs;
    return static_cast<size_t>(r.output) < outs.size() ? &outs[r.output] : nullptr;
  }

  bool valid(int node) const { return node >= 0 && static_cast<size_t>(node) < n_; }

  // Where a value really comes from: drawn nodes and graph inputs, found
  // through pass-through nodes; nothing for constants and attributes.
  void sources(const GraphValueRef& r, std::vector<std::pair<std::string, const GraphValueInfo*>>& out,
               int depth) const {
    if (depth > kMaxDepth) return;
    if (r.node < 0) {
      const GraphValueInfo* v = value_at(r);
      if (v && !is_object_input(*v)) out.emplace_back("in" + std::to_string(r.input), v);
      return;
    }
    if (!valid(r.node)) return;
    if (r.output < 0) {  // a block parameter: the loop itself
      if (drawn_[r.node]) out.emplace_back("n" + std::to_string(r.node), nullptr);
      return;
    }
    if (drawn_[r.node]) {
      out.emplace_back("n" + std::to_string(r.node), value_at(r));
      return;
    }
    if (pass_[r.node]) {
      for (const auto& in : info_.nodes[r.node].inputs) sources(in, out, depth + 1);
    }
  }

  // Whether a value comes from a graph input or a computation (not only from
  // constants and attributes). Producers are classified before their users.
  bool real(const GraphValueRef& r, int depth) const {
    if (depth > kMaxDepth) return false;
    if (r.node < 0) {
      const GraphValueInfo* v = value_at(r);
      return v && !is_object_input(*v);
    }
    if (!valid(r.node)) return false;
    if (r.output < 0) return true;  // a block parameter
    if (noise_[r.node]) return false;
    if (!pass_[r.node]) return true;
    for (const auto& in : info_.nodes[r.node].inputs) {
      if (real(in, depth + 1)) return true;
    }
    return false;
  }

  void classify() {
    noise_.assign(n_, false);
    pass_.assign(n_, false);
    drawn_.assign(n_, false);
    useful_.assign(n_, false);
    children_.assign(n_, {});
    top_.clear();
    for (size_t i = 0; i < n_; ++i) {
      const int p = info_.nodes[i].parent;
      if (valid(p)) {
        children_[p].push_back(static_cast<int>(i));
      } else {
        top_.push_back(static_cast<int>(i));
      }
    }
    // Noise, in order (producers come first): constants, attribute reads, and
    // block-free nodes computing non-tensors from noise alone.
    for (size_t i = 0; i < n_; ++i) {
      const auto& node = info_.nodes[i];
      if (node.kind == "prim::Constant" || node.kind == "prim::GetAttr") {
        noise_[i] = true;
        continue;
      }
      if (pass_through_kinds().count(node.kind)) {
        pass_[i] = true;
        continue;
      }
      if (!children_[i].empty() || effect_kinds().count(node.kind)) continue;
      bool tensor_out = false;
      for (const auto& o : node.outputs) tensor_out = tensor_out || carries_tensor(o);
      if (tensor_out) continue;
      bool from_noise = true;
      for (const auto& in : node.inputs) from_noise = from_noise && !real(in, 0);
      noise_[i] = from_noise;
    }
    for (size_t i = 0; i < n_; ++i) drawn_[i] = !noise_[i] && !pass_[i];

    // Useful: what the results depend on, plus calls, prints and in-place
    // updates of real values. Validation that can only raise, and updates of
    // attributes (BatchNorm's num_batches_tracked), are left out.
    std::vector<int> work;
    auto mark = [&](int i) {
      if (valid(i) && !useful_[i]) {
        useful_[i] = true;
        work.push_back(i);
      }
    };
    for (const auto& r : info_.outputs) mark(r.node);
    for (size_t i = 0; i < n_; ++i) {
      const auto& node = info_.nodes[i];
      if (noise_[i]) continue;
      if (effect_kinds().count(node.kind)) mark(static_cast<int>(i));
      if (in_place(node.kind) && !node.inputs.empty() && real(node.inputs[0], 0)) {
        mark(static_cast<int>(i));
      }
    }
    while (!work.empty()) {
      const int i = work.back();
      work.pop_back();
      const auto& node = info_.nodes[i];
      for (const auto& in : node.inputs) mark(in.node);
      mark(node.parent);
      // Block returns that feed this node's outputs or loop.
      for (int c : children_[i]) {
        for (const auto& o : info_.nodes[c].outputs) {
          for (const auto& u : o.uses) {
            if (u.node == i && u.block >= 0) mark(c);
          }
        }
      }
    }
    for (size_t i = 0; i < n_; ++i) drawn_[i] = drawn_[i] && useful_[i];
  }

  bool block_has_drawn(int parent, int block) const {
    for (int c : children_[parent]) {
      if (info_.nodes[c].block != block) continue;
      if (drawn_[c]) return true;
      for (int b : blocks_of(c)) {
        if (block_has_drawn(c, b)) return true;
      }
    }
    return false;
  }

  std::vector<int> blocks_of(int i) const {
    std::set<int> blocks;
    for (int c : children_[i]) blocks.insert(info_.nodes[c].block);
    return {blocks.begin(), blocks.end()};
  }

  const char* fill_for(const GraphNodeInfo& node) const {
    const bool call = node.kind == "prim::CallMethod";
    const std::string target = call ? callee_path(node.callee) : "";
    for (const auto& h : highlights_) {
      bool hit = false;
      if (call) {
        hit = !node.callee.empty() && ((!h.conv.empty() && target == h.conv) || (!h.norm.empty() && target == h.norm));
      } else if (conv_kinds().count(node.kind)) {
        hit = node.module == h.conv;
      } else if (node.kind == "aten::batch_norm") {
        hit = node.module == h.norm;
      }
      if (hit) return h.folded ? "palegreen" : "orange";
    }
    return nullptr;
  }

  void emit_node(std::ostringstream& os, int i, int indent) const {
    const auto& node = info_.nodes[i];
    std::string label = node.kind;
    if (!node.module.empty()) label += "\n" + node.module;
    if (!node.callee.empty()) label += "\ncalls " + node.callee;
    for (const auto& o : node.outputs) {
      if (o.shape_known) label += "\n" + shape_text(o.shape);
    }
    os << std::string(indent * 2, ' ') << "n" << i << " [label=" << dot_string(label);
    if (const char* fill = fill_for(node)) os << ", style=filled, fillcolor=" << fill;
    os << "];\n";
  }

  void emit_block(std::ostringstream& os, int parent, int block, int indent) const {
    const std::vector<int>& members = parent < 0 ? top_ : children_[parent];
    for (int idx : members) {
      const auto& node = info_.nodes[idx];
      if (parent >= 0 && node.block != block) continue;
      if (drawn_[idx]) emit_node(os, idx, indent);
      for (int b : blocks_of(idx)) {
        if (!block_has_drawn(idx, b)) continue;
        const std::string pad(indent * 2, ' ');
        os << pad << "subgraph cluster_n" << idx << "_b" << b << " {\n";
        os << pad << "  label=" << dot_string(node.kind + " n" + std::to_string(idx) + " block " + std::to_string(b))
           << ";\n";
        os << pad << "  style=dashed;\n";
        emit_block(os, idx, b, indent + 1);
        os << pad << "}\n";
      }
    }
  }

  void emit_edges(std::ostringstream& os) const {
    std::set<std::tuple<std::string, std::string, bool>> seen;
    auto edges_from = [&](const GraphValueRef& ref, const GraphValueInfo& value) {
      for (const auto& u : value.uses) {
        std::string target;
        bool dashed = false;
        if (u.node < 0) {
          target = "out" + std::to_string(u.input);
        } else if (!valid(u.node) || !drawn_[u.node]) {
          continue;
        } else {
          target = "n" + std::to_string(u.node);
          dashed = u.block >= 0;
        }
        std::vector<std::pair<std::string, const GraphValueInfo*>> src;
        sources(ref, src, 0);
        for (const auto& s : src) {
          if (!seen.insert({s.first, target, dashed}).second) continue;
          os << "  " << s.first << " -> " << target;
          std::vector<std::string> attrs;
          if (s.second && s.second->shape_known) attrs.push_back("label=" + dot_string(shape_text(s.second->shape)));
          if (dashed) attrs.push_back("style=dashed");
          if (!attrs.empty()) {
            os << " [";
            for (size_t k = 0; k < attrs.size(); ++k) os << (k ? ", " : "") << attrs[k];
            os << "]";
          }
          os << ";\n";
        }
      }
    };
    for (size_t i = 0; i < info_.inputs.size(); ++i) {
      GraphValueRef r;
      r.node = -1;
      r.input = static_cast<int>(i);
      edges_from(r, info_.inputs[i]);
    }
    // Values a loop body receives: from the loop.
    for (size_t i = 0; i < n_; ++i) {
      if (!drawn_[i]) continue;
      for (const auto& in : info_.nodes[i].inputs) {
        if (!valid(in.node) || in.output >= 0 || !drawn_[in.node]) continue;
        const std::string src = "n" + std::to_string(in.node), target = "n" + std::to_string(i);
        if (seen.insert({src, target, false}).second) os << "  " << src << " -> " << target << ";\n";
      }
    }
    for (size_t i = 0; i < n_; ++i) {
      const auto& outs = info_.nodes[i].outputs;
      for (size_t k = 0; k < outs.size(); ++k) {
        GraphValueRef r;
        r.node = static_cast<int>(i);
        r.output = static_cast<int>(k);
        edges_from(r, outs[k]);
      }
    }
  }

  const GraphInfo& info_;
  const std::vector<DotHighlight>& highlights_;
  size_t n_;
  std::vector<bool> noise_, pass_, drawn_, useful_;
  std::vector<std::vector<int>> children_;
  std::vector<int> top_;
};

}  // namespace

std::string to_dot(const GraphInfo& info, const std::vector<DotHighlight>& highlights) {
  return DotWriter(info, highlights).write();
}

}  // namespace torchfold::core
