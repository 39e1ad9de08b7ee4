#include "value.h"

#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <ATen/core/jit_type.h>

#include <cmath>
#include <sstream>

#include "error.h"

namespace torchfold::core {

Value Value::of_bool(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.boolean = b;
  return v;
}
Value Value::of_int(int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.integer = i;
  return v;
}
Value Value::of_double(double d) {
  Value v;
  v.kind = Kind::Double;
  v.number = d;
  v.integral = std::isfinite(d) && std::trunc(d) == d && std::fabs(d) <= 9007199254740991.0;
  return v;
}
Value Value::of_string(std::string s) {
  Value v;
  v.kind = Kind::String;
  v.text = std::move(s);
  return v;
}
Value Value::of_tensor(at::Tensor t) {
  Value v;
  v.kind = Kind::Tensor;
  v.tensor = std::move(t);
  return v;
}
Value Value::of_items(Kind kind, std::vector<Value> items) {
  Value v;
  v.kind = kind;
  v.items = std::move(items);
  return v;
}

namespace {

const char* kind_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::None: return "null";
    case Value::Kind::Bool: return "boolean";
    case Value::Kind::Int: return "bigint";
    case Value::Kind::Double: return v.integral ? "integer number" : "number";
    case Value::Kind::String: return "string";
    case Value::Kind::Tensor: return "Tensor";
    case Value::Kind::List: return "array";
    case Value::Kind::Tuple: return "array";
    case Value::Kind::Dict: return "object";
  }
  return "value";
}

[[noreturn]] void mismatch(const Value& v, const c10::TypePtr& type, const std::string& where) {
  std::ostringstream os;
  os << "Expected " << type->annotation_str() << " for " << where << " but received " << kind_name(v);
  throw Error(ErrorCode::InvalidArg, os.str());
}

// Types for values whose schema type is Any (or unknown): inferred from the value.
c10::TypePtr infer_type(const Value& v) {
  switch (v.kind) {
    case Value::Kind::None: return c10::NoneType::get();
    case Value::Kind::Bool: return c10::BoolType::get();
    case Value::Kind::Int: return c10::IntType::get();
    case Value::Kind::Double:
      return v.integral ? c10::TypePtr(c10::IntType::get()) : c10::TypePtr(c10::FloatType::get());
    case Value::Kind::String: return c10::StringType::get();
    case Value::Kind::Tensor: return c10::TensorType::get();
    case Value::Kind::List:
    case Value::Kind::Tuple: {
      if (v.items.empty()) return c10::ListType::create(c10::TensorType::get());
      c10::TypePtr elem = infer_type(v.items.front());
      for (const auto& item : v.items) {
        if (infer_type(item)->kind() != elem->kind()) {
          std::vector<c10::TypePtr> types;
          for (const auto& i : v.items) types.push_back(infer_type(i));
          return c10::TupleType::create(types);
        }
      }
      return c10::ListType::create(elem);
    }
    case Value::Kind::Dict: {
      c10::TypePtr value_type = v.entries.empty() ? c10::TypePtr(c10::TensorType::get())
                                                  : infer_type(v.entries.front().second);
      return c10::DictType::create(c10::StringType::get(), value_type);
    }
  }
  return c10::AnyType::get();
}

c10::IValue to_list(const Value& v, const c10::ListTypePtr& type, const std::string& where) {
  if (v.kind != Value::Kind::List && v.kind != Value::Kind::Tuple) mismatch(v, type, where);
  c10::impl::GenericList list(type->getElementType());
  list.reserve(v.items.size());
  for (size_t i = 0; i < v.items.size(); ++i) {
    list.push_back(to_ivalue(v.items[i], type->getElementType(), where + "[" + std::to_string(i) + "]"));
  }
  return c10::IValue(std::move(list));
}

c10::IValue to_tuple(const Value& v, const c10::TupleTypePtr& type, const std::string& where) {
  if (v.kind != Value::Kind::List && v.kind != Value::Kind::Tuple) mismatch(v, type, where);
  const auto& elems = type->elements();
  if (elems.size() != v.items.size()) {
    throw Error(ErrorCode::InvalidArg, "Expected " + type->annotation_str() + " (" + std::to_string(elems.size()) +
                                           " items) for " + where + " but received an array of " +
                                           std::to_string(v.items.size()));
  }
  std::vector<c10::IValue> out;
  for (size_t i = 0; i < elems.size(); ++i) {
    out.push_back(to_ivalue(v.items[i], elems[i], where + "[" + std::to_string(i) + "]"));
  }
  return c10::ivalue::Tuple::create(std::move(out));
}

c10::IValue to_dict(const Value& v, const c10::DictTypePtr& type, const std::string& where) {
  if (v.kind != Value::Kind::Dict) mismatch(v, type, where);
  if (type->getKeyType()->kind() != c10::TypeKind::StringType) {
    throw Error(ErrorCode::Unsupported,
                "Only Dict[str, ...] inputs are supported, but " + where + " is " + type->annotation_str());
  }
  c10::impl::GenericDict dict(type->getKeyType(), type->getValueType());
  for (const auto& [key, value] : v.entries) {
    dict.insert_or_assign(c10::IValue(key.text),
                          to_ivalue(value, type->getValueType(), where + "['" + key.text + "']"));
  }
  return c10::IValue(std::move(dict));
}

c10::IValue to_number(const Value& v, const c10::TypePtr& type, const std::string& where) {
  switch (type->kind()) {
    case c10::TypeKind::FloatType:
      if (v.kind == Value::Kind::Double) return c10::IValue(v.number);
      if (v.kind == Value::Kind::Int) return c10::IValue(static_cast<double>(v.integer));
      break;
    case c10::TypeKind::IntType:
      if (v.kind == Value::Kind::Int) return c10::IValue(v.integer);
      if (v.kind == Value::Kind::Double && v.integral) {
        return c10::IValue(static_cast<int64_t>(v.number));
      }
      break;
    default:  // NumberType (Scalar)
      if (v.kind == Value::Kind::Int) return c10::IValue(v.integer);
      if (v.kind == Value::Kind::Double) {
        return v.integral ? c10::IValue(static_cast<int64_t>(v.number)) : c10::IValue(v.number);
      }
      if (v.kind == Value::Kind::Bool) return c10::IValue(v.boolean);
  }
  mismatch(v, type, where);
}

}  // namespace

c10::IValue to_ivalue(const Value& v, const c10::TypePtr& type, const std::string& where) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
      if (v.kind != Value::Kind::Tensor) mismatch(v, type, where);
      return c10::IValue(v.tensor);
    case c10::TypeKind::FloatType:
    case c10::TypeKind::IntType:
    case c10::TypeKind::NumberType: return to_number(v, type, where);
    case c10::TypeKind::BoolType:
      if (v.kind != Value::Kind::Bool) mismatch(v, type, where);
      return c10::IValue(v.boolean);
    case c10::TypeKind::StringType:
      if (v.kind != Value::Kind::String) mismatch(v, type, where);
      return c10::IValue(v.text);
    case c10::TypeKind::NoneType:
      if (v.kind != Value::Kind::None) mismatch(v, type, where);
      return c10::IValue();
    case c10::TypeKind::OptionalType:
      if (v.kind == Value::Kind::None) return c10::IValue();
      return to_ivalue(v, type->expectRef<c10::OptionalType>().getElementType(), where);
    case c10::TypeKind::ListType: return to_list(v, type->expect<c10::ListType>(), where);
    case c10::TypeKind::TupleType: return to_tuple(v, type->expect<c10::TupleType>(), where);
    case c10::TypeKind::DictType: return to_dict(v, type->expect<c10::DictType>(), where);
    default: break;
  }
  // Any, Union and other types: convert by what the value is.
  c10::TypePtr inferred = infer_type(v);
  if (inferred->kind() == c10::TypeKind::NoneType) return c10::IValue();
  return to_ivalue(v, inferred, where);
}

std::vector<c10::IValue> to_stack(const std::vector<Value>& inputs, const c10::FunctionSchema& schema,
                                  const std::string& method) {
  const auto& args = schema.arguments();
  const size_t declared = args.empty() ? 0 : args.size() - 1;  // minus self
  if (inputs.size() > declared) {
    throw Error(ErrorCode::InvalidArg, "Expected at most " + std::to_string(declared) + " inputs for " + method +
                                           " but received " + std::to_string(inputs.size()));
  }
  std::vector<c10::IValue> stack;
  stack.reserve(declared);
  for (size_t i = 0; i < declared; ++i) {
    const auto& arg = args[i + 1];
    const std::string where = method + " argument '" + arg.name() + "'";
    if (i < inputs.size()) {
      stack.push_back(to_ivalue(inputs[i], arg.type(), where));
    } else if (arg.default_value()) {
      stack.push_back(*arg.default_value());
    } else {
      throw Error(ErrorCode::InvalidArg,
                  "Expected a value for " + where + " (" + arg.type()->annotation_str() + ") but received none");
    }
  }
  return stack;
}

Value from_ivalue(const c10::IValue& iv) {
  if (iv.isNone()) return Value::none();
  if (iv.isTensor()) return Value::of_tensor(iv.toTensor());
  if (iv.isBool()) return Value::of_bool(iv.toBool());
  if (iv.isInt()) return Value::of_int(iv.toInt());
  if (iv.isDouble()) return Value::of_double(iv.toDouble());
  if (iv.isString()) return Value::of_string(iv.toStringRef());
  if (iv.isDevice()) return Value::of_string(iv.toDevice().str());
  if (iv.isList()) {
    std::vector<Value> items;
    for (const c10::IValue& item : iv.toListRef()) items.push_back(from_ivalue(item));
    return Value::of_items(Value::Kind::List, std::move(items));
  }
  if (iv.isTuple()) {
    std::vector<Value> items;
    for (const auto& item : iv.toTupleRef().elements()) items.push_back(from_ivalue(item));
    return Value::of_items(Value::Kind::Tuple, std::move(items));
  }
  if (iv.isGenericDict()) {
    Value out;
    out.kind = Value::Kind::Dict;
    for (const auto& entry : iv.toGenericDict()) {
      out.entries.emplace_back(from_ivalue(entry.key()), from_ivalue(entry.value()));
    }
    return out;
  }
  throw Error(ErrorCode::Unsupported,
              "Cannot convert a TorchScript value of type " + iv.type()->annotation_str() + " to JavaScript");
}

}  // namespace torchfold::core
