#include "graph_walk.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>

namespace torchfold::core {

namespace {

constexpr int kMaxDepth = 128;

bool is_module_value(const c10::IValue& v) { return v.isObject() && v.toObjectRef().type()->is_module(); }

std::optional<c10::IValue> local_constant(JValue* v) {
  if (v->node()->kind() != c10::prim::Constant) return std::nullopt;
  return torch::jit::toIValue(v);
}

// A boolean decidable from constants inside one graph (no frames, no
// attributes): e.g. `self.padding_mode != "zeros"` on a constant padding_mode.
std::optional<bool> local_constant_bool(JValue* v) {
  Node* n = v->node();
  switch (n->kind()) {
    case c10::prim::Constant: {
      auto iv = local_constant(v);
      if (iv && iv->isBool()) return iv->toBool();
      return std::nullopt;
    }
    case c10::aten::__not__: {
      auto x = local_constant_bool(n->input(0));
      if (x) return !*x;
      return std::nullopt;
    }
    case c10::aten::eq:
    case c10::aten::ne:
    case c10::aten::__is__:
    case c10::aten::__isnot__: {
      if (n->inputs().size() != 2) return std::nullopt;
      auto a = local_constant(n->input(0)), b = local_constant(n->input(1));
      const bool scalar = a && b && (a->isString() || a->isInt() || a->isBool() || a->isNone()) &&
                          (b->isString() || b->isInt() || b->isBool() || b->isNone());
      if (!scalar) return std::nullopt;
      const bool equal = *a == *b;
      return (n->kind() == c10::aten::eq || n->kind() == c10::aten::__is__) ? equal : !equal;
    }
    default: return std::nullopt;
  }
}

// Values no code can change in place.
bool immutable_value(const c10::IValue& v) {
  if (v.isBool() || v.isInt() || v.isDouble() || v.isString() || v.isNone()) return true;
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements())
      if (!immutable_value(e)) return false;
    return true;
  }
  return false;
}

// Attribute values that can be treated as constants: immutable ones, and
// lists and dicts of immutable values (their reads are checked separately).
bool freezable_value(const c10::IValue& v) {
  if (immutable_value(v)) return true;
  if (v.isList()) {
    for (const c10::IValue& e : v.toListRef())
      if (!immutable_value(e)) return false;
    return true;
  }
  if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict())
      if (!immutable_value(kv.key()) || !immutable_value(kv.value())) return false;
    return true;
  }
  return false;
}

// Ops that only read a list or dict (never keep it, pass it on or change it).
bool read_only_use(const torch::jit::Use& u) {
  static const std::set<c10::Symbol> kinds = {
      c10::aten::__contains__,
      c10::aten::__getitem__,
      c10::aten::len,
      c10::aten::eq,
      c10::aten::ne,
      c10::aten::lt,
      c10::aten::gt,
      c10::aten::le,
      c10::aten::ge,
      c10::aten::__is__,
      c10::aten::__isnot__,
      c10::aten::format,
      c10::aten::str,
      c10::aten::Bool,
      c10::aten::keys,
      c10::aten::values,
      c10::prim::RaiseException,
  };
  return kinds.count(u.user->kind()) > 0;
}

// A block that raises whenever it runs (a prim::RaiseException at its top level).
bool always_raises(const torch::jit::Block* b) {
  for (const Node* n : b->nodes())
    if (n->kind() == c10::prim::RaiseException) return true;
  return false;
}

std::optional<double> number(const c10::IValue& v) {
  if (v.isInt()) return static_cast<double>(v.toInt());
  if (v.isDouble()) return v.toDouble();
  if (v.isBool()) return v.toBool() ? 1.0 : 0.0;
  return std::nullopt;
}

}  // namespace

std::string join_path(const std::string& parent, const std::string& child) {
  return parent.empty() ? child : parent + "." + child;
}

ProgramView::ProgramView(const torch::jit::Module& root) {
  for (const auto& method : root.get_methods()) {
    auto frame = std::make_unique<Frame>();
    frame->instance = root;
    frame->root_method = method.name();
    frame->method = method.name();
    frame->graph = method.graph();
    visit(*frame, 0);
    roots_.push_back(std::move(frame));
  }
  // Attributes that are not frozen: assigned somewhere, or read by an op that
  // may keep or change a list/dict. An assignment whose module is unknown
  // unfreezes that name everywhere.
  std::set<std::string> assigned_names;
  for (const Frame* f : frames_) {
    for_each_node(f->graph->block(), [&](Node* n) {
      const bool set = n->kind() == c10::prim::SetAttr;
      if (!set && n->kind() != c10::prim::GetAttr) return;
      const std::string name = n->s(c10::attr::name);
      auto owner = module_of(n->input(0), *f);
      if (set) {
        if (owner) unfrozen_.insert(join_path(owner->second, name));
        else assigned_names.insert(name);
        return;
      }
      if (!owner || !owner->first.hasattr(name) || immutable_value(owner->first.attr(name))) return;
      for (const auto& u : n->output()->uses()) {
        if (!read_only_use(u)) unfrozen_.insert(join_path(owner->second, name));
      }
    });
  }
  for (const std::string& name : assigned_names) unfrozen_.insert("*" + name);
}

namespace {

// The graph a call runs, and whether it is a free function, if known.
std::optional<std::pair<std::shared_ptr<torch::jit::Graph>, std::string>> function_graph(Node* n) {
  auto type = n->input(0)->type()->cast<c10::FunctionType>();
  if (!type) return std::nullopt;
  auto* fn = dynamic_cast<torch::jit::GraphFunction*>(type->function());
  if (!fn) return std::nullopt;
  return std::make_pair(fn->graph(), fn->name());
}

}  // namespace

void ProgramView::add_child(Frame& frame, Node* n, std::unique_ptr<Frame> child, int depth) {
  child->caller = &frame;
  child->call_node = n;
  child->root_method = frame.root_method;
  Frame* raw = child.get();
  frame.child_for_call[n] = raw;
  frame.children.push_back(std::move(child));
  visit(*raw, depth + 1);
}

void ProgramView::visit(Frame& frame, int depth) {
  frames_.push_back(&frame);
  node_frames_[frame.graph->return_node()].push_back(&frame);
  if (depth > kMaxDepth) return;
  for_each_node(frame.graph->block(), [&](Node* n) {
    auto child = std::make_unique<Frame>();
    if (n->kind() == c10::prim::CallFunction) {
      auto fn = function_graph(n);
      if (!fn) return;
      child->is_function = true;
      child->instance = frame.instance;
      child->path = frame.path;
      child->graph = fn->first;
      child->method = fn->second;
      add_child(frame, n, std::move(child), depth);
      return;
    }
    if (n->kind() != c10::prim::CallMethod) return;
    auto target = module_of(n->input(0), frame);
    if (!target) return;
    const std::string name = n->s(c10::attr::name);
    auto method = target->first.find_method(name);
    if (!method) return;
    child->instance = target->first;
    child->path = target->second;
    child->method = name;
    child->graph = method->graph();
    add_child(frame, n, std::move(child), depth);
  });
}

const std::vector<const Frame*>& ProgramView::frames_running(const Node* n) const {
  static const std::vector<const Frame*> none;
  auto it = node_frames_.find(n->owningGraph()->return_node());
  return it == node_frames_.end() ? none : it->second;
}

std::optional<std::pair<torch::jit::Module, std::string>> ProgramView::module_of(JValue* v, const Frame& frame) const {
  Node* n = v->node();
  if (n->kind() == c10::prim::Param && n == frame.graph->param_node()) {
    if (v->offset() == 0 && !frame.is_function) return std::make_pair(frame.instance, frame.path);
    if (frame.caller)
      return module_of(frame.call_node->input(v->offset() + (frame.is_function ? 1 : 0)), *frame.caller);
    return std::nullopt;
  }
  if (n->kind() != c10::prim::GetAttr) return std::nullopt;
  auto parent = module_of(n->input(0), frame);
  if (!parent) return std::nullopt;
  const std::string name = n->s(c10::attr::name);
  if (!parent->first.hasattr(name)) return std::nullopt;
  c10::IValue a = parent->first.attr(name);
  if (!is_module_value(a)) return std::nullopt;
  return std::make_pair(torch::jit::Module(a.toObject()), join_path(parent->second, name));
}

std::optional<Site> ProgramView::step_back(Site s, bool use_attributes) const {
  Node* n = s.value->node();
  const Frame& frame = *s.frame;
  if (n->kind() == c10::prim::Param) {
    if (n != frame.graph->param_node() || !frame.caller) return std::nullopt;
    if (!frame.is_function && s.value->offset() == 0) return std::nullopt;
    return Site{frame.call_node->input(s.value->offset() + (frame.is_function ? 1 : 0)), frame.caller};
  }
  if (n->kind() == c10::prim::CallMethod || n->kind() == c10::prim::CallFunction) {
    auto it = frame.child_for_call.find(n);
    if (it == frame.child_for_call.end()) return std::nullopt;
    return Site{it->second->graph->outputs()[s.value->offset()], it->second};
  }
  if (n->kind() == c10::prim::If) {
    auto cond = eval_bool(Site{n->input(0), s.frame}, use_attributes);
    if (!cond) {
      // A branch that always raises returns nothing anyone reads: the value comes from the other one.
      const bool r0 = always_raises(n->blocks()[0]), r1 = always_raises(n->blocks()[1]);
      if (r0 == r1) return std::nullopt;
      cond = r1;
    }
    torch::jit::Block* taken = n->blocks()[*cond ? 0 : 1];
    return Site{taken->outputs()[s.value->offset()], s.frame};
  }
  return std::nullopt;
}

Site ProgramView::origin(Site start, bool use_attributes, std::vector<Site>* chain) const {
  Site s = start;
  if (chain) chain->push_back(s);
  for (int guard = 0; guard < 4096; ++guard) {
    auto next = step_back(s, use_attributes);
    if (!next) break;
    s = *next;
    if (chain) chain->push_back(s);
  }
  return s;
}

std::optional<AttrRef> ProgramView::attribute_of(Site s, bool use_attributes) const {
  Site o = origin(s, use_attributes);
  Node* n = o.value->node();
  if (n->kind() != c10::prim::GetAttr) return std::nullopt;
  auto parent = module_of(n->input(0), *o.frame);
  if (!parent) return std::nullopt;
  const std::string name = n->s(c10::attr::name);
  if (!parent->first.hasattr(name) || is_module_value(parent->first.attr(name))) return std::nullopt;
  return AttrRef{parent->first, parent->second, name};
}

std::optional<c10::IValue> ProgramView::constant_of(Site s, bool use_attributes) const {
  Site o = origin(s, use_attributes);
  Node* n = o.value->node();
  if (n->kind() == c10::prim::Constant) return torch::jit::toIValue(o.value);
  if (use_attributes) {
    if (auto a = attribute_of(o, use_attributes)) return a->owner.attr(a->name);
    return std::nullopt;
  }
  return frozen_value(o);
}

std::optional<c10::IValue> ProgramView::frozen_value(Site o) const {
  Node* n = o.value->node();
  if (n->kind() != c10::prim::GetAttr) return std::nullopt;
  const std::string name = n->s(c10::attr::name);
  if (name == "training" || unfrozen_.count("*" + name)) return std::nullopt;
  auto owner = module_of(n->input(0), *o.frame);
  if (!owner || !owner->first.hasattr(name) || unfrozen_.count(join_path(owner->second, name))) return std::nullopt;
  c10::IValue v = owner->first.attr(name);
  if (!freezable_value(v)) return std::nullopt;
  return v;
}

std::optional<bool> ProgramView::eval_bool(Site s, bool use_attributes) const {
  Site o = origin(s, use_attributes);
  Node* n = o.value->node();
  auto sub = [&](size_t i) { return eval_bool(Site{n->input(i), o.frame}, use_attributes); };
  switch (n->kind()) {
    case c10::aten::__not__: {
      auto x = sub(0);
      if (x) return !*x;
      return std::nullopt;
    }
    case c10::aten::__and__:
    case c10::aten::__or__: {
      auto a = sub(0), b = sub(1);
      const bool is_and = n->kind() == c10::aten::__and__;
      if (a && b) return is_and ? (*a && *b) : (*a || *b);
      if ((a && *a != is_and) || (b && *b != is_and)) return !is_and;  // short circuit
      return std::nullopt;
    }
    case c10::aten::__is__:
    case c10::aten::__isnot__: {
      auto a = constant_of(Site{n->input(0), o.frame}, use_attributes);
      auto b = constant_of(Site{n->input(1), o.frame}, use_attributes);
      if (!a || !b || !(a->isNone() || b->isNone())) return std::nullopt;
      const bool same = a->isNone() && b->isNone();
      return n->kind() == c10::aten::__is__ ? same : !same;
    }
    case c10::aten::eq:
    case c10::aten::ne:
    case c10::aten::lt:
    case c10::aten::gt:
    case c10::aten::le:
    case c10::aten::ge: {
      if (n->inputs().size() != 2) return std::nullopt;
      auto a = constant_of(Site{n->input(0), o.frame}, use_attributes);
      auto b = constant_of(Site{n->input(1), o.frame}, use_attributes);
      if (!a || !b || !immutable_value(*a) || !immutable_value(*b)) return std::nullopt;
      const c10::Symbol k = n->kind();
      if (k == c10::aten::eq || k == c10::aten::ne) {
        auto x = number(*a), y = number(*b);
        const bool equal = x && y ? *x == *y : *a == *b;
        return k == c10::aten::eq ? equal : !equal;
      }
      auto x = number(*a), y = number(*b);
      if (!x || !y) return std::nullopt;
      if (k == c10::aten::lt) return *x < *y;
      if (k == c10::aten::gt) return *x > *y;
      if (k == c10::aten::le) return *x <= *y;
      return *x >= *y;
    }
    case c10::aten::__contains__: {
      auto box = constant_of(Site{n->input(0), o.frame}, use_attributes);
      auto key = constant_of(Site{n->input(1), o.frame}, use_attributes);
      if (!box || !key || !immutable_value(*key)) return std::nullopt;
      if (box->isGenericDict()) return box->toGenericDict().contains(*key);
      if (box->isList()) {
        for (const c10::IValue& e : box->toListRef())
          if (e == *key) return true;
        return false;
      }
      return std::nullopt;
    }
    default: {
      auto c = constant_of(o, use_attributes);
      if (c && c->isBool()) return c->toBool();
      return std::nullopt;
    }
  }
}

bool ProgramView::is_dead(const Node* n, const Frame* frame) const {
  if (frame && frame->graph.get() != n->owningGraph()) frame = nullptr;
  for (const Node* cur = n; cur != nullptr;) {
    const torch::jit::Block* block = cur->owningBlock();
    const Node* owner = block ? block->owningNode() : nullptr;
    if (!owner) return false;
    if (owner->kind() == c10::prim::If) {
      JValue* c = const_cast<Node*>(owner)->input(0);
      auto cond = frame ? eval_bool(Site{c, frame}, false) : local_constant_bool(c);
      if (cond && block != owner->blocks()[*cond ? 0 : 1]) return true;
    }
    cur = owner;
  }
  return false;
}

std::optional<c10::IValue> ProgramView::constant_arg(Site s) const {
  if (auto c = constant_of(s, false)) return c;
  Site o = origin(s, false);
  Node* n = o.value->node();
  if (n->kind() != c10::prim::ListConstruct) return std::nullopt;
  std::vector<int64_t> ints;
  for (JValue* v : n->inputs()) {
    auto c = constant_of(Site{v, o.frame}, false);
    if (!c || !c->isInt()) return std::nullopt;
    ints.push_back(c->toInt());
  }
  return c10::IValue(ints);
}

std::vector<torch::jit::Use> ProgramView::live_uses(JValue* v, const Frame* frame) const {
  std::vector<torch::jit::Use> out;
  for (const auto& u : v->uses()) {
    if (!is_dead(u.user, frame)) out.push_back(u);
  }
  return out;
}

}  // namespace torchfold::core
