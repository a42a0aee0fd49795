#include "runtime/text/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "runtime/text/utf8.h"

namespace janus::text::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& kv : items)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

void Dict::set(const std::string& key, Value v) {
  for (auto& kv : items)
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

Value Value::make_list(std::vector<Value> items, bool tuple) {
  Value v;
  v.type = Type::kList;
  v.list = std::make_shared<std::vector<Value>>(std::move(items));
  v.is_tuple = tuple;
  return v;
}

Value Value::make_dict(Dict d) {
  Value v;
  v.type = Type::kDict;
  v.dict = std::make_shared<Dict>(std::move(d));
  return v;
}

Value Value::make_namespace(Dict d) {
  Value v = make_dict(std::move(d));
  v.type = Type::kNamespace;
  return v;
}

Value Value::callable(NativeFunction f) {
  Value v;
  v.type = Type::kCallable;
  v.fn = std::make_shared<NativeFunction>(std::move(f));
  return v;
}

bool Value::truthy() const {
  switch (type) {
    case Type::kUndefined:
    case Type::kNone: return false;
    case Type::kBool: return b;
    case Type::kInt: return i != 0;
    case Type::kFloat: return f != 0;
    case Type::kString: return !s.empty();
    case Type::kList: return !list->empty();
    case Type::kDict: return !dict->items.empty();
    case Type::kNamespace:
    case Type::kCallable: return true;
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // The shortest %.*e that reads back exactly gives Python's digits and exponent.
  char buf[64];
  int prec = 0;
  for (prec = 0; prec < 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::snprintf(buf, sizeof buf, "%.*e", prec, d);
  std::string text(buf);
  const size_t e = text.find('e');
  std::string mantissa = text.substr(0, e);
  const int exp = std::atoi(text.c_str() + e + 1);
  bool negative = false;
  if (!mantissa.empty() && mantissa[0] == '-') {
    negative = true;
    mantissa.erase(0, 1);
  }
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  std::string out;
  if (exp < -4 || exp >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  } else if (exp < 0) {
    out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  } else {
    const size_t int_len = static_cast<size_t>(exp) + 1;
    if (digits.size() <= int_len) {
      out = digits + std::string(int_len - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, int_len) + "." + digits.substr(int_len);
    }
  }
  return negative ? "-" + out : out;
}

namespace {

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == static_cast<unsigned char>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

}  // namespace

std::string to_repr(const Value& v) {
  switch (v.type) {
    case Value::Type::kUndefined: return "Undefined";
    case Value::Type::kString: return string_repr(v.s);
    case Value::Type::kList: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        out += to_repr((*v.list)[k]);
      }
      if (v.is_tuple && v.list->size() == 1) out += ",";
      out += v.is_tuple ? ")" : "]";
      return out;
    }
    case Value::Type::kDict: {
      std::string out = "{";
      bool first = true;
      for (const auto& kv : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += string_repr(kv.first) + ": " + to_repr(kv.second);
      }
      return out + "}";
    }
    case Value::Type::kNamespace: {
      std::string out = "<Namespace {";
      bool first = true;
      for (const auto& kv : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += string_repr(kv.first) + ": " + to_repr(kv.second);
      }
      return out + "}>";
    }
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.type) {
    case Value::Type::kUndefined: return "";
    case Value::Type::kNone: return "None";
    case Value::Type::kBool: return v.b ? "True" : "False";
    case Value::Type::kInt: return std::to_string(v.i);
    case Value::Type::kFloat: return float_repr(v.f);
    case Value::Type::kString: return v.s;
    case Value::Type::kCallable: return "<function>";
    default: return to_repr(v);
  }
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.type == Value::Type::kFloat || b.type == Value::Type::kFloat) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.type != b.type) return false;
  switch (a.type) {
    case Value::Type::kUndefined:
    case Value::Type::kNone: return true;
    case Value::Type::kString: return a.s == b.s;
    case Value::Type::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Value::Type::kDict:
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& kv : a.dict->items) {
        const Value* other = b.dict->find(kv.first);
        if (!other || !equals(kv.second, *other)) return false;
      }
      return true;
    case Value::Type::kNamespace: return a.dict == b.dict;
    case Value::Type::kCallable: return a.fn == b.fn;
    default: return false;
  }
}

const char* type_name(const Value& v) {
  switch (v.type) {
    case Value::Type::kUndefined: return "Undefined";
    case Value::Type::kNone: return "NoneType";
    case Value::Type::kBool: return "bool";
    case Value::Type::kInt: return "int";
    case Value::Type::kFloat: return "float";
    case Value::Type::kString: return "str";
    case Value::Type::kList: return v.is_tuple ? "tuple" : "list";
    case Value::Type::kDict: return "dict";
    case Value::Type::kNamespace: return "Namespace";
    case Value::Type::kCallable: return "function";
  }
  return "object";
}

namespace {

void json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  size_t k = 0;
  while (k < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[k]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || (ensure_ascii && c == 0x7f)) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            out += b;
          } else {
            out += static_cast<char>(c);
          }
      }
      ++k;
      continue;
    }
    const CodePoint cp = decode_utf8(s.substr(k));
    if (ensure_ascii) {
      char b[16];
      char32_t v = cp.value;
      if (v >= 0x10000) {
        v -= 0x10000;
        std::snprintf(b, sizeof b, "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(v));
      }
      out += b;
    } else {
      out.append(s.substr(k, cp.bytes));
    }
    k += cp.bytes;
  }
  out += '"';
}

Status dump(std::string& out, const Value& v, const JsonStyle& st, int depth) {
  if (depth > 512) return invalid_argument("tojson: value nested too deeply");
  const std::string item_sep = st.explicit_separators ? st.item_separator : (st.indent >= 0 ? "," : ", ");
  const std::string key_sep = st.explicit_separators ? st.key_separator : ": ";
  auto newline = [&](int level) {
    if (st.indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(st.indent) * static_cast<size_t>(level), ' ');
  };
  switch (v.type) {
    case Value::Type::kNone: out += "null"; return Status::Ok();
    case Value::Type::kBool: out += v.b ? "true" : "false"; return Status::Ok();
    case Value::Type::kInt: out += std::to_string(v.i); return Status::Ok();
    case Value::Type::kFloat:
      if (std::isnan(v.f)) out += "NaN";
      else if (std::isinf(v.f)) out += v.f > 0 ? "Infinity" : "-Infinity";
      else out += float_repr(v.f);
      return Status::Ok();
    case Value::Type::kString: json_string(out, v.s, st.ensure_ascii); return Status::Ok();
    case Value::Type::kList: {
      if (v.list->empty()) {
        out += "[]";
        return Status::Ok();
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += item_sep;
        newline(depth + 1);
        JANUS_TRY(dump(out, (*v.list)[k], st, depth + 1));
      }
      newline(depth);
      out += ']';
      return Status::Ok();
    }
    case Value::Type::kDict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return Status::Ok();
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += item_sep;
        first = false;
        newline(depth + 1);
        json_string(out, kv->first, st.ensure_ascii);
        out += key_sep;
        JANUS_TRY(dump(out, kv->second, st, depth + 1));
      }
      newline(depth);
      out += '}';
      return Status::Ok();
    }
    default:
      return invalid_argument(std::string("tojson: Object of type ") + type_name(v) + " is not JSON serializable");
  }
}

}  // namespace

Result<std::string> to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  JANUS_TRY(dump(out, v, style, 0));
  return out;
}

std::vector<std::string_view> split_code_points(std::string_view s) {
  std::vector<std::string_view> out;
  size_t k = 0;
  while (k < s.size()) {
    const CodePoint cp = decode_utf8(s.substr(k));
    out.push_back(s.substr(k, cp.bytes));
    k += cp.bytes;
  }
  return out;
}

size_t code_point_count(std::string_view s) {
  size_t n = 0;
  size_t k = 0;
  while (k < s.size()) {
    k += decode_utf8(s.substr(k)).bytes;
    ++n;
  }
  return n;
}

}  // namespace janus::text::jinja
