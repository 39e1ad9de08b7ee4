// A plain value tree that carries method inputs and outputs between the addon
// and libtorch without either side knowing the other's types. Tensors are held
// by reference (at::Tensor is ref-counted), everything else by value.
//
// Going in, values are converted against the method's schema, so a JS number
// becomes an int or a float as the TorchScript signature asks. Coming out,
// every IValue kind a TorchScript method commonly returns is mapped; other
// kinds (script objects, futures, ...) fail with ERR_UNSUPPORTED.
#pragma once

#include <ATen/core/ivalue.h>
#include <ATen/core/function_schema.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace torchfold::core {

struct Value {
  enum class Kind { None, Bool, Int, Double, String, Tensor, List, Tuple, Dict };

  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  bool integral = false;  // a Double that holds a whole number (JS numbers)
  std::string text;
  at::Tensor tensor;
  std::vector<Value> items;                      // List, Tuple
  std::vector<std::pair<Value, Value>> entries;  // Dict, in insertion order

  static Value none() { return Value{}; }
  static Value of_bool(bool b);
  static Value of_int(int64_t i);
  static Value of_double(double d);
  static Value of_string(std::string s);
  static Value of_tensor(at::Tensor t);
  static Value of_items(Kind kind, std::vector<Value> items);
};

// Converts one input for argument `arg` of `method` ("forward") to an IValue.
c10::IValue to_ivalue(const Value& value, const c10::TypePtr& type, const std::string& where);

// Converts inputs against a method schema (whose first argument is `self`),
// filling defaults for inputs not given.
std::vector<c10::IValue> to_stack(const std::vector<Value>& inputs, const c10::FunctionSchema& schema,
                                  const std::string& method);

Value from_ivalue(const c10::IValue& value);

}  // namespace torchfold::core
