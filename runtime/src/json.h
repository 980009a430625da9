// A small JSON reader for config.json, safetensors headers and shard indexes.
// Numbers are held as double (exact for integers below 2^53, enough for byte offsets).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace hci {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  bool is_null() const { return type == Type::Null; }
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
  bool is_object() const { return type == Type::Object; }
  bool is_array() const { return type == Type::Array; }
  // Member lookup; nullptr when absent or when this is not an object.
  const Json* find(const std::string& key) const;
};

// Parses `text`; on malformed input throws hci::Error(HCI_ERR_FORMAT) with `source` and the
// byte offset in the message.
Json parse_json(const std::string& text, const std::string& source);

}  // namespace hci
