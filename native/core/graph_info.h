// A method's TorchScript graph as plain data: its nodes in order, where each
// value comes from and goes to, the module instance that runs each node, and
// tensor shapes where they can be worked out from input shapes. Also renders
// that description as Graphviz DOT, with conv/norm pairs coloured.
//
// Nothing here changes a module: the graph described is the method's own
// (read only) or, with inlining or input shapes, a private copy of it.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torchfold::core {

// Where a value is made.
//  - node >= 0, output >= 0: output `output` of node `node`;
//  - node == -1: graph input number `input` (0 is self for a module method);
//  - node >= 0, output == -1: parameter `input` of block `block` of node
//    `node` (the iteration counter and carried values of a prim::Loop body).
struct GraphValueRef {
  int node = -1;
  int output = 0;
  int input = -1;
  int block = -1;
};

// Where a value is used.
//  - node >= 0, block == -1: input `input` of node `node`;
//  - node == -1: the graph's return, output number `input`;
//  - node >= 0, block >= 0: the return of block `block` of node `node` (an
//    If branch or a Loop body), position `input` among that block's returns.
struct GraphUse {
  int node;
  int input;
  int block = -1;
};

struct GraphValueInfo {
  std::string name;            // debug name: "x.1", or the unique number "23"
  std::string type;            // the IR type, as the IR prints it
  std::vector<int64_t> shape;  // filled only when shape_known
  bool shape_known = false;
  std::string dtype;           // "float32", ...; "" when unknown or not a tensor
  std::vector<GraphUse> uses;  // by node index; the graph's return last
};

struct GraphNodeInfo {
  int index = -1;
  std::string kind;  // "aten::conv2d", "prim::CallMethod", ...
  // The module instance that runs the node: "" for the root, "layer1.0.conv1".
  // Inlined graphs: from the node's inlined call stack; other graphs: "".
  std::string module;
  // prim::CallMethod: "<module path>.<method>" (just "<method>" on self) when
  // the receiver is read from self through attributes; prim::CallFunction: the
  // function's qualified name without "__torch__."; otherwise "".
  std::string callee;
  std::string scope;  // source location "file:line:col", "" when unknown
  int parent = -1;    // the If/Loop (or other node) whose block holds this one
  int block = -1;     // which of the parent's blocks
  std::vector<GraphValueRef> inputs;
  std::vector<GraphValueInfo> outputs;
  // prim::Constant: its value, briefly ("3", "1e-05", "True", "\"zeros\"",
  // "[1, 1]", "Tensor[8, 1, 1] float32", "None"); "" for other nodes.
  std::string constant;
};

struct GraphInfo {
  std::string method;
  bool inlined = false;
  std::vector<GraphValueInfo> inputs;  // self included
  std::vector<GraphValueRef> outputs;
  std::vector<GraphNodeInfo> nodes;  // depth-first pre-order
};

// The nodes of `method`, depth-first pre-order: a node's blocks follow it
// directly, block by block. With `inlined`, describes an inlined copy (as
// graph_text(module, method, true) prints it) and never touches the module's
// own graph. With `input_shapes` (one per Tensor input after self, in order;
// empty: no shapes), the copy's Tensor inputs become float32 tensors of those
// shapes on the module's device, its tensor attributes get their current
// shapes, and shape propagation runs; where it cannot work a shape out, or
// fails altogether, shapes stay unknown.
// Throws ERR_METHOD_NOT_FOUND for an unknown method and ERR_INVALID_ARG for
// more shapes than Tensor inputs or a negative size.
GraphInfo describe_graph(const torch::jit::Module& module, const std::string& method, bool inlined,
                         const std::vector<std::vector<int64_t>>& input_shapes);

// A conv/norm pair to colour in to_dot: module paths, and whether it folded.
struct DotHighlight {
  std::string conv;
  std::string norm;
  bool folded = false;
};

// Graphviz DOT for a GraphInfo. One node per operation that feeds the
// method's results; constants, attribute reads, list/tuple packing and checks
// whose results nothing uses are left out, and edges pass through them to the
// real producers. Labels give kind, module path and output shape; edges carry
// the value's shape when known. Graph inputs and outputs are their own nodes,
// If/Loop blocks are clusters, and a value a block returns has a dashed edge to
// the block's owner. The conv and norm of each highlighted pair are filled
// green (folded) or orange (not folded): conv ops (aten::conv1d/2d/3d,
// conv_transpose1d/2d/3d, _convolution, convolution, linear) whose module is
// the pair's conv, aten::batch_norm whose module is the pair's norm, and
// prim::CallMethod calls of either module. The same input gives the same text.
std::string to_dot(const GraphInfo& info, const std::vector<DotHighlight>& highlights);

}  // namespace torchfold::core
