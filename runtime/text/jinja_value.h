// The values a Jinja2 chat template computes with, modelled on the Python objects jinja2
// hands around (str, int, float, bool, None, list, tuple, dict, Undefined, namespace), so
// that printing, truthiness, equality and JSON dumps come out byte for byte as
// transformers' renderer writes them. Strings are UTF-8; every length, index and slice
// counts code points, as Python's str does.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/base/status.h"

namespace janus::text::jinja {

struct Value;
class Interpreter;

/// Arguments of a call as the template wrote them: positional, then keyword.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

/// A builtin (range, namespace, raise_exception, a bound str method) or a macro.
using NativeFunction = std::function<Result<Value>(Interpreter&, CallArgs&)>;

/// An insertion-ordered str -> value map: JSON objects keep their key order, as Python
/// dicts do, and `tojson` writes them back in that order.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

struct Value {
  enum class Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable };

  Type type = Type::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                  // kString; for kUndefined: the missing name
  std::shared_ptr<std::vector<Value>> list;       // kList (shared: values are never mutated)
  bool is_tuple = false;                          // a kList that prints as (a, b)
  std::shared_ptr<Dict> dict;                     // kDict, and kNamespace (mutable, shared)
  std::shared_ptr<NativeFunction> fn;             // kCallable

  static Value undefined(std::string name = {}) { Value v; v.s = std::move(name); return v; }
  static Value none() { Value v; v.type = Type::kNone; return v; }
  static Value boolean(bool x) { Value v; v.type = Type::kBool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.type = Type::kInt; v.i = x; return v; }
  static Value real(double x) { Value v; v.type = Type::kFloat; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.type = Type::kString; v.s = std::move(x); return v; }
  static Value make_list(std::vector<Value> items, bool tuple = false);
  static Value make_dict(Dict d = {});
  static Value make_namespace(Dict d = {});
  static Value callable(NativeFunction f);

  bool is_undefined() const { return type == Type::kUndefined; }
  bool is_none() const { return type == Type::kNone; }
  bool is_string() const { return type == Type::kString; }
  bool is_list() const { return type == Type::kList; }
  bool is_dict() const { return type == Type::kDict; }
  /// int or bool: Python's bool is an int (True + 1 == 2).
  bool is_integral() const { return type == Type::kInt || type == Type::kBool; }
  bool is_number() const { return is_integral() || type == Type::kFloat; }
  int64_t as_int() const { return type == Type::kBool ? (b ? 1 : 0) : i; }
  double as_double() const { return type == Type::kFloat ? f : static_cast<double>(as_int()); }

  /// Python's bool(): empty strings and containers, zero, None and Undefined are false.
  bool truthy() const;
};

/// Python's str(): what `{{ value }}` prints (None -> "None", True -> "True", lists as
/// their repr, Undefined -> "").
std::string to_str(const Value& v);
/// Python's repr(), used inside printed lists and dicts.
std::string to_repr(const Value& v);
/// Python's float repr: the shortest text that reads back to the same double.
std::string float_repr(double d);
/// Python's == across types (1 == 1.0 == True, lists and dicts deeply).
bool equals(const Value& a, const Value& b);
/// The name jinja2 would give the type in an error ("str", "int", "list", ...).
const char* type_name(const Value& v);

/// json.dumps(v, ensure_ascii, indent, separators, sort_keys) as transformers' `tojson`
/// filter calls it. `indent < 0` means none. Undefined, namespaces and callables are errors,
/// as they are for json.dumps.
struct JsonStyle {
  bool ensure_ascii = false;
  int indent = -1;
  std::string item_separator;  // empty: Python's default for the indent
  std::string key_separator;
  bool explicit_separators = false;
  bool sort_keys = false;
};
Result<std::string> to_json(const Value& v, const JsonStyle& style);

// UTF-8 code point views of a str, so lengths, indexes and slices count characters.
std::vector<std::string_view> split_code_points(std::string_view s);
size_t code_point_count(std::string_view s);

}  // namespace janus::text::jinja
