// Strict JSON through nlohmann's SAX interface, building the DOM ourselves so
// that duplicate keys and depth are checked as the document is read.

#include "policy/strict_json.hpp"

#include <vector>

namespace runwarden::policy {
namespace {

using json = nlohmann::json;

class StrictSax {
public:
  explicit StrictSax(std::size_t max_depth) : max_depth_(max_depth) {}

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(json::number_integer_t v) { return put(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t& /*text*/) { return put(json(v)); }
  bool string(json::string_t& v) { return put(json(std::move(v))); }
  bool binary(json::binary_t& /*v*/) { return fail(JsonError::not_json, "binary value"); }

  bool start_object(std::size_t /*n*/) { return open(json::value_t::object); }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*n*/) { return open(json::value_t::array); }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    json* obj = stack_.back();
    if (obj->contains(k)) {
      return fail(JsonError::duplicate_key, "duplicate key \"" + k + "\"");
    }
    key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t /*pos*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& ex) {
    if (error_ != JsonError::ok) {
      return false; // already classified by one of our own checks
    }
    std::string_view msg = ex.what();
    if (ex.id == 406) {
      return fail(JsonError::number_out_of_range, std::string(msg));
    }
    if (msg.find("UTF-8") != std::string_view::npos ||
        msg.find("surrogate") != std::string_view::npos) {
      return fail(JsonError::invalid_utf8, std::string(msg));
    }
    return fail(JsonError::not_json, std::string(msg));
  }

  StrictJsonResult take() {
    StrictJsonResult r;
    r.error = error_;
    r.detail = std::move(detail_);
    if (error_ == JsonError::ok) {
      r.value = std::move(root_);
    }
    return r;
  }

private:
  bool fail(JsonError e, std::string detail) {
    if (error_ == JsonError::ok) {
      error_ = e;
      detail_ = std::move(detail);
    }
    return false;
  }

  json* put(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json* parent = stack_.back();
    if (parent->is_array()) {
      parent->get_ref<json::array_t&>().push_back(std::move(v));
      return &parent->get_ref<json::array_t&>().back();
    }
    auto [it, inserted] = parent->get_ref<json::object_t&>().emplace(std::move(key_), std::move(v));
    return &it->second;
  }

  bool open(json::value_t type) {
    if (stack_.size() + 1 > max_depth_) {
      return fail(JsonError::too_deep,
                  "nesting deeper than " + std::to_string(max_depth_) + " levels");
    }
    stack_.push_back(put(json(type)));
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  std::size_t max_depth_;
  json root_;
  std::vector<json*> stack_;
  std::string key_;
  JsonError error_ = JsonError::ok;
  std::string detail_;
};

} // namespace

std::string_view to_code(JsonError e) {
  switch (e) {
  case JsonError::ok:
    return "ok";
  case JsonError::not_json:
    return "body_not_json";
  case JsonError::duplicate_key:
    return "body_duplicate_key";
  case JsonError::invalid_utf8:
    return "body_invalid_utf8";
  case JsonError::too_deep:
    return "body_too_deep";
  case JsonError::number_out_of_range:
    return "body_number_out_of_range";
  }
  return "body_not_json";
}

StrictJsonResult parse_strict_json(std::string_view text, std::size_t max_depth) {
  StrictSax sax(max_depth);
  bool ok = json::sax_parse(text.begin(), text.end(), &sax, nlohmann::detail::input_format_t::json,
                            true, false);
  StrictJsonResult r = sax.take();
  if (!ok && r.error == JsonError::ok) {
    r.error = JsonError::not_json;
    r.detail = "not a JSON document";
  }
  return r;
}

} // namespace runwarden::policy
