#include "half.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "error.h"
#include "graph_walk.h"
#include "patterns.h"

namespace torchfold::core {

namespace {

using torch::jit::Graph;
using Object = c10::ivalue::Object;

const std::set<std::string> kCandidates = {
    "torch.nn.modules.linear.Linear",        "torch.nn.modules.conv.Conv1d",
    "torch.nn.modules.conv.Conv2d",          "torch.nn.modules.conv.Conv3d",
    "torch.nn.modules.conv.ConvTranspose1d", "torch.nn.modules.conv.ConvTranspose2d",
    "torch.nn.modules.conv.ConvTranspose3d",
};

std::string short_name(const std::string& qualified) {
  const auto dot = qualified.rfind('.');
  return dot == std::string::npos ? qualified : qualified.substr(dot + 1);
}

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

bool is_module_value(const c10::IValue& v) { return v.isObject() && v.toObjectRef().type()->is_module(); }

const Object* object_of(const torch::jit::Module& m) { return m._ivalue().get(); }

// A parameter or buffer of a layer, by slot.
struct TensorSlot {
  size_t slot = 0;
  std::string name;
  at::Tensor value;
  bool parameter = false;
};

struct Layer {
  HalfLayer report;
  torch::jit::Module module;
  std::vector<TensorSlot> tensors;  // floating-point parameters and buffers
  bool selected = false;
  bool ok = false;                // still on its way to being converted
  std::vector<Node*> call_sites;  // boundary calls of forward that can run
};

struct CallSite {
  const Frame* caller = nullptr;  // first frame seen running it
  std::vector<size_t> layers;     // layer instances reached through it, in order seen
};

// Where a call sits, for messages: "Block.forward" or "function 'helper'".
std::string where(const Frame& f) {
  if (f.is_function) return "function " + in_quotes(f.method);
  const std::string cls = short_name(class_name(f.instance));
  return (cls.empty() ? std::string("<module>") : cls) + "." + f.method;
}

// The submodule at a dotted path, or an explanation of why there is none.
std::optional<torch::jit::Module> submodule_at(const torch::jit::Module& root, const std::string& path,
                                               std::string* why) {
  if (path.empty()) {
    *why = "an empty path names the model itself, not one of its layers";
    return std::nullopt;
  }
  torch::jit::Module m = root;
  std::string walked;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const std::string owner = walked.empty() ? "the model" : in_quotes(walked);
    if (part.empty()) {
      *why = "the path has an empty component";
      return std::nullopt;
    }
    if (!m.hasattr(part)) {
      *why = owner + " has no attribute " + in_quotes(part);
      return std::nullopt;
    }
    c10::IValue v = m.attr(part);
    if (!is_module_value(v)) {
      *why = in_quotes(join_path(walked, part)) + " is an attribute, not a module";
      return std::nullopt;
    }
    m = torch::jit::Module(v.toObject());
    walked = join_path(walked, part);
    if (dot == std::string::npos) return m;
    start = dot + 1;
  }
}

std::vector<TensorSlot> floating_tensors(const torch::jit::Module& m) {
  std::vector<TensorSlot> out;
  auto type = m.type();
  auto obj = m._ivalue();
  for (size_t i = 0; i < type->numAttributes() && i < obj->slots().size(); ++i) {
    if (!type->is_parameter(i) && !type->is_buffer(i)) continue;
    const c10::IValue& v = obj->getSlot(i);
    if (!v.isTensor() || !v.toTensor().defined() || !v.toTensor().is_floating_point()) continue;
    out.push_back(TensorSlot{i, type->getAttributeName(i), v.toTensor(), type->is_parameter(i)});
  }
  return out;
}

int64_t parameter_count(const torch::jit::Module& m) {
  int64_t n = 0;
  auto type = m.type();
  auto obj = m._ivalue();
  for (size_t i = 0; i < type->numAttributes() && i < obj->slots().size(); ++i) {
    if (!type->is_parameter(i)) continue;
    const c10::IValue& v = obj->getSlot(i);
    if (v.isTensor() && v.toTensor().defined()) n += v.toTensor().numel();
  }
  return n;
}

// Why a selected layer cannot hold the dtype, from its tensors alone.
std::string dtype_problem(const torch::jit::Module& m, const std::vector<TensorSlot>& tensors, c10::ScalarType dtype) {
  if (!m.hasattr("weight") || !m.attr("weight").isTensor() || !m.attr("weight").toTensor().defined()) {
    return "it has no weight tensor";
  }
  const at::Tensor w = m.attr("weight").toTensor();
  if (!w.is_floating_point()) {
    return std::string("its weight is ") + c10::toString(w.scalar_type()) + ", not floating point";
  }
  bool all_there = true;
  for (const auto& t : tensors) all_there = all_there && t.value.scalar_type() == dtype;
  if (all_there) return "it is already " + half_dtype_name(dtype);
  return "";
}

// Tensors of every module, by storage, to find parameters shared between modules.
std::map<const void*, std::vector<std::pair<const Object*, std::string>>> storages(const torch::jit::Module& root) {
  std::map<const void*, std::vector<std::pair<const Object*, std::string>>> out;
  std::set<const Object*> seen;
  for (const auto& nm : root.named_modules()) {
    const Object* obj = object_of(nm.value);
    if (!seen.insert(obj).second) continue;
    auto type = nm.value.type();
    for (size_t i = 0; i < type->numAttributes() && i < obj->slots().size(); ++i) {
      const c10::IValue& v = obj->getSlot(i);
      if (!v.isTensor() || !v.toTensor().defined() || !v.toTensor().has_storage()) continue;
      out[v.toTensor().storage().unsafeGetStorageImpl()].emplace_back(obj,
                                                                      join_path(nm.name, type->getAttributeName(i)));
    }
  }
  return out;
}

void strip_tensor_type(JValue* v) {
  if (v->type()->kind() == c10::TypeKind::TensorType) v->setType(c10::TensorType::get());
}

// Forgets dtypes and shapes recorded on tensor values (traced graphs carry
// them), so no pass trusts a float32 annotation on what is now half.
void strip_tensor_types(torch::jit::Block* block) {
  for (JValue* v : block->inputs()) strip_tensor_type(v);
  for (Node* n : block->nodes()) {
    for (JValue* v : n->outputs()) strip_tensor_type(v);
    for (torch::jit::Block* b : n->blocks()) strip_tensor_types(b);
  }
}

JValue* insert_to(Graph& graph, JValue* x, const torch::jit::NamedValue& dtype) {
  JValue* out = graph.insert(c10::aten::to, {x, dtype, false, false, c10::IValue()});
  TORCH_INTERNAL_ASSERT(out->node()->kind() == c10::aten::to && out->node()->schema().overload_name() == "dtype",
                        "toHalf: aten::to resolved to an unexpected overload");
  return out;
}

// %d = prim::dtype(%x); %xh = aten::to(%x, half); %yh = call(%xh); %y = aten::to(%yh, %d)
void wrap_call(Node* call, size_t input, c10::ScalarType dtype) {
  Graph& graph = *call->owningGraph();
  JValue* x = call->input(input);
  {
    torch::jit::WithInsertPoint guard(call);
    JValue* d = graph.insert(c10::prim::dtype, {x});
    JValue* xh = insert_to(graph, x, torch::jit::NamedValue(static_cast<int64_t>(dtype)));
    call->replaceInput(input, xh);
    JValue* yh = call->output();
    yh->setType(c10::TensorType::get());
    torch::jit::WithInsertPoint after(call->next());
    JValue* y = insert_to(graph, yh, torch::jit::NamedValue(d));
    yh->replaceAllUsesWith(y);
    y->node()->replaceInput(0, yh);
  }
}

bool holds_tensor(const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::TensorType) return true;
  for (const auto& t : type->containedTypes()) {
    if (holds_tensor(t)) return true;
  }
  return false;
}

// The input (after self) that carries the call's one tensor, when the call
// takes exactly one tensor, nothing else that can hold one, and returns one
// tensor.
std::optional<size_t> single_tensor_input(const Node* call) {
  if (call->outputs().size() != 1 || !call->output()->type()->cast<c10::TensorType>()) return std::nullopt;
  std::optional<size_t> found;
  for (size_t i = 1; i < call->inputs().size(); ++i) {
    const c10::TypePtr& type = call->input(i)->type();
    if (type->cast<c10::TensorType>() && !found) {
      found = i;
    } else if (holds_tensor(type)) {
      return std::nullopt;
    }
  }
  return found;
}

}  // namespace

std::string half_dtype_name(c10::ScalarType dtype) {
  if (dtype == at::kHalf) return "float16";
  if (dtype == at::kBFloat16) return "bfloat16";
  return c10::toString(dtype);
}

HalfReport convert_to_half(torch::jit::Module& module, const HalfOptions& options) {
  if (options.dtype != at::kHalf && options.dtype != at::kBFloat16) {
    throw Error(ErrorCode::InvalidArg,
                std::string("toHalf: dtype must be float16 or bfloat16, not ") + c10::toString(options.dtype));
  }
  if (options.min_params < 0) {
    throw Error(ErrorCode::InvalidArg,
                "toHalf: minParams must be 0 or more, not " + std::to_string(options.min_params));
  }
  const c10::ScalarType dtype = options.dtype;

  // Every candidate layer instance, once, under its first path.
  std::vector<Layer> layers;
  std::map<const Object*, size_t> index;
  for (const auto& nm : module.named_modules()) {
    if (nm.name.empty()) continue;
    const std::string cls = class_name(nm.value);
    if (!kCandidates.count(cls) || index.count(object_of(nm.value))) continue;
    Layer l;
    l.module = nm.value;
    l.report.path = nm.name;
    l.report.kind = short_name(cls);
    l.report.params = parameter_count(nm.value);
    l.tensors = floating_tensors(nm.value);
    index[object_of(nm.value)] = layers.size();
    layers.push_back(std::move(l));
  }

  // Selection.
  if (!options.layers.empty()) {
    for (const std::string& path : options.layers) {
      std::string why;
      auto m = submodule_at(module, path, &why);
      if (!m) throw Error(ErrorCode::InvalidArg, "toHalf: layer " + in_quotes(path) + " does not exist: " + why);
      auto it = index.find(object_of(*m));
      if (it == index.end()) {
        const std::string cls = class_name(*m);
        throw Error(ErrorCode::InvalidArg, "toHalf: layer " + in_quotes(path) + " is a " +
                                               (cls.empty() ? std::string("module") : short_name(cls)) +
                                               ", not a Linear, Conv1d/2d/3d or ConvTranspose1d/2d/3d layer");
      }
      layers[it->second].selected = true;
    }
    for (Layer& l : layers) {
      if (!l.selected) l.report.reason = "not listed in layers";
    }
  } else {
    for (Layer& l : layers) {
      l.selected = l.report.params >= options.min_params;
      if (!l.selected) {
        l.report.reason = "it has " + std::to_string(l.report.params) + " parameters, fewer than minParams (" +
                          std::to_string(options.min_params) + ")";
      }
    }
  }
  for (Layer& l : layers) {
    if (!l.selected) continue;
    l.report.reason = dtype_problem(l.module, l.tensors, dtype);
    l.ok = l.report.reason.empty();
  }
  auto fail = [&](size_t i, const std::string& reason) {
    if (!layers[i].ok) return;
    layers[i].ok = false;
    layers[i].report.reason = reason;
  };

  // Tensors another module holds too would stop being shared.
  {
    auto by_storage = storages(module);
    for (size_t i = 0; i < layers.size(); ++i) {
      for (const auto& t : layers[i].tensors) {
        if (!t.value.has_storage()) continue;
        for (const auto& [obj, key] : by_storage[t.value.storage().unsafeGetStorageImpl()]) {
          if (obj != object_of(layers[i].module)) {
            fail(i, "its " + in_quotes(t.name) + " shares memory with " + in_quotes(key));
          }
        }
      }
    }
  }

  // Calls and attribute reads, per frame that can run.
  ProgramView view(module);
  std::map<const Frame*, bool> alive;
  std::map<Node*, CallSite> sites;
  std::vector<Node*> site_order;
  std::map<Node*, std::string> foreign;  // call sites that also run a module that is not a candidate layer
  std::vector<std::pair<c10::TypePtr, std::string>> unresolved;  // module types used where the instance is unknown
  for (const Frame* f : view.frames()) {
    const bool live = !f->caller || (alive[f->caller] && !view.is_dead(f->call_node, f->caller));
    alive[f] = live;
    if (!live) continue;
    const Object* self = object_of(f->instance);

    if (f->caller && !f->is_function) {
      auto it = index.find(self);
      // Through a module interface one call site can run other classes too.
      if (it == index.end()) foreign.try_emplace(f->call_node, f->path);
      if (it != index.end() && object_of(f->caller->instance) != self) {
        const size_t i = it->second;
        if (f->method != "forward") {
          fail(i, "its method " + in_quotes(f->method) + " is called directly from " + where(*f->caller));
        } else {
          Node* n = f->call_node;
          if (!single_tensor_input(n)) {
            fail(i, "its call in " + where(*f->caller) + " does not take one tensor and return one tensor");
          }
          auto [pos, fresh] = sites.try_emplace(n);
          if (fresh) {
            pos->second.caller = f->caller;
            site_order.push_back(n);
          }
          auto& ls = pos->second.layers;
          if (std::find(ls.begin(), ls.end(), i) == ls.end()) ls.push_back(i);
          auto& cs = layers[i].call_sites;
          if (std::find(cs.begin(), cs.end(), n) == cs.end()) cs.push_back(n);
        }
      }
    }

    for_each_node(f->graph->block(), [&](Node* n) {
      if (n->kind() != c10::prim::GetAttr && n->kind() != c10::prim::CallMethod) return;
      if (view.is_dead(n, f)) return;
      auto owner = view.module_of(n->input(0), *f);
      if (!owner) {
        const c10::TypePtr& type = n->input(0)->type();
        auto cls = type->cast<c10::ClassType>();
        auto iface = type->cast<c10::InterfaceType>();
        if ((cls && cls->is_module()) || (iface && iface->is_module())) unresolved.emplace_back(type, where(*f));
        return;
      }
      if (n->kind() != c10::prim::GetAttr) return;  // resolved calls are frames of their own
      auto it = index.find(object_of(owner->first));
      if (it == index.end() || object_of(owner->first) == self) return;
      const std::string name = n->s(c10::attr::name);
      for (const auto& t : layers[it->second].tensors) {
        if (t.name == name) fail(it->second, "its " + in_quotes(name) + " is read in " + where(*f));
      }
    });
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    for (const auto& [type, place] : unresolved) {
      if (layers[i].module.type()->isSubtypeOf(*type)) {
        fail(i, "a module of its class is used in " + place + " where which instance it is cannot be told");
      }
    }
    if (layers[i].call_sites.empty()) fail(i, "not called");
  }

  // A call site is cast for all the instances it reaches or for none.
  for (bool changed = true; changed;) {
    changed = false;
    for (Node* n : site_order) {
      const CallSite& s = sites[n];
      std::string blocker;
      if (auto f = foreign.find(n); f != foreign.end())
        blocker = in_quotes(f->second) + ", which is not a Linear or Conv";
      for (size_t i : s.layers) {
        if (blocker.empty() && !layers[i].ok) blocker = in_quotes(layers[i].report.path) + ", which is not converted";
      }
      if (blocker.empty()) continue;
      for (size_t i : s.layers) {
        if (!layers[i].ok) continue;
        fail(i, "its call site in " + where(*s.caller) + " is shared with " + blocker);
        changed = true;
      }
    }
  }

  // Rewrite.
  HalfReport report;
  std::set<Graph*> touched;
  std::set<Node*> wrapped;
  for (Node* n : site_order) {
    const CallSite& s = sites[n];
    if (s.layers.empty() || !layers[s.layers.front()].ok) continue;
    if (!wrapped.insert(n).second) continue;
    touched.insert(n->owningGraph());
    wrap_call(n, *single_tensor_input(n), dtype);
  }
  std::set<Graph*> layer_graphs;
  for (Layer& l : layers) {
    l.report.converted = l.ok;
    if (!l.ok) continue;
    auto obj = l.module._ivalue();
    for (const auto& t : l.tensors) {
      at::Tensor h = t.value.detach().to(dtype);
      if (t.value.requires_grad()) h.set_requires_grad(true);
      report.bytes_saved += t.value.numel() *
                            (static_cast<int64_t>(t.value.element_size()) - static_cast<int64_t>(h.element_size()));
      obj->setSlot(t.slot, h);
    }
    for (const auto& method : l.module.get_methods()) {
      if (layer_graphs.insert(method.graph().get()).second) strip_tensor_types(method.graph()->block());
    }
    ++report.converted;
    report.params_converted += l.report.params;
  }
  for (Graph* g : touched) {
    torch::jit::EliminateDeadCode(g->block(), true,
                                  torch::jit::DCESideEffectPolicy::DONT_DELETE_NODES_WITH_SIDE_EFFECTS);
  }
  report.call_sites = static_cast<int>(wrapped.size());
  report.graphs_changed = static_cast<int>(touched.size());
  for (Layer& l : layers) report.layers.push_back(std::move(l.report));
  return report;
}

}  // namespace torchfold::core
