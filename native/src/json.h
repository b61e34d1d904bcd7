// A small strict JSON reader for config.json, safetensors headers and index
// files. It parses the whole document into a tree, rejects trailing garbage,
// bounds nesting depth (hostile headers), and reports the byte offset of the
// first error. Numbers keep both their double value and whether they were
// written as integers, so 64-bit tensor offsets survive exactly.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace streamsink {

class JsonValue {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0;
  bool is_integer = false;
  int64_t integer = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::map<std::string, JsonValue> object;

  bool is_null() const { return kind == Kind::Null; }
  bool is_number() const { return kind == Kind::Number; }
  bool is_string() const { return kind == Kind::String; }
  bool is_object() const { return kind == Kind::Object; }
  bool is_array() const { return kind == Kind::Array; }
  bool is_bool() const { return kind == Kind::Bool; }

  // Member lookup on an object; nullptr when absent or when this is not an object.
  const JsonValue* get(const std::string& key) const;
};

// Throws std::invalid_argument with "<what>: <reason> at byte N" on bad input.
JsonValue parse_json(const std::string& text, const std::string& what);

}  // namespace streamsink
