#pragma once
// JSON I/O for plain config structs, by Boost.Hana reflection (torch-free).
//
// A config is an aggregate declared with BOOST_HANA_DEFINE_STRUCT (or adapted with
// BOOST_HANA_ADAPT_STRUCT); its defaults are its member initialisers. Reading is strict: an
// unknown key or a value of the wrong type is an InputError naming the full key path
// ("mmdit.depth: expected an integer, got \"24\""); a missing key keeps the default.
//
// Supported member types: bool, integers, floating point, std::string, std::vector<T>,
// std::array<T, N>, std::optional<T> (null = empty), std::map<std::string, T>, enums declared
// with DIFFUSE_ENUM_NAMES, and nested reflected structs.
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/hana/accessors.hpp>
#include <boost/hana/concept/struct.hpp>
#include <boost/hana/define_struct.hpp>
#include <boost/hana/first.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/second.hpp>
#include <boost/hana/string.hpp>
#include <nlohmann/json.hpp>

#include "diffuse/core/error.hpp"

namespace diffuse {

// Names for an enum's values, for JSON: specialise through DIFFUSE_ENUM_NAMES.
template <class E>
struct EnumNames;

// DIFFUSE_ENUM_NAMES(Layout, {Layout::Original, "original"}, {Layout::Diffusers, "diffusers"})
#define DIFFUSE_ENUM_NAMES(E, ...)                                                           \
  template <>                                                                               \
  struct diffuse::EnumNames<E> {                                                            \
    static constexpr std::pair<E, std::string_view> values[] = {__VA_ARGS__};               \
  }

namespace config_detail {

template <class T> struct is_vector : std::false_type {};
template <class T, class A> struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T> struct is_array : std::false_type {};
template <class T, std::size_t N> struct is_array<std::array<T, N>> : std::true_type {};
template <class T> struct is_optional : std::false_type {};
template <class T> struct is_optional<std::optional<T>> : std::true_type {};
template <class T> struct is_string_map : std::false_type {};
template <class T> struct is_string_map<std::map<std::string, T>> : std::true_type {};
template <class E> concept NamedEnum = std::is_enum_v<E> && requires { EnumNames<E>::values; };

template <class T>
constexpr bool is_reflected = boost::hana::Struct<T>::value;

inline std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

[[noreturn]] inline void type_error(const std::string& path, std::string_view expected, const nlohmann::json& got) {
  std::string shown = got.dump();
  if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
  throw InputError((path.empty() ? std::string("config") : path) + ": expected " + std::string(expected) + ", got " +
                   shown);
}

template <class T> void read(const nlohmann::json& j, T& out, const std::string& path);
template <class T> nlohmann::ordered_json write(const T& v);

template <class T>
void read(const nlohmann::json& j, T& out, const std::string& path) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) type_error(path, "true or false", j);
    out = j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!j.is_number_integer()) type_error(path, "an integer", j);
    if (j.is_number_unsigned()) {
      const auto v = j.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) type_error(path, "an integer in range", j);
      out = static_cast<T>(v);
    } else {
      const auto v = j.get<std::int64_t>();
      if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
          (v > 0 && static_cast<std::uint64_t>(v) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())))
        type_error(path, std::is_signed_v<T> ? "an integer in range" : "a non-negative integer", j);
      out = static_cast<T>(v);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!j.is_number()) type_error(path, "a number", j);
    out = j.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!j.is_string()) type_error(path, "a string", j);
    out = j.get<std::string>();
  } else if constexpr (NamedEnum<T>) {
    if (!j.is_string()) type_error(path, "a string", j);
    const auto s = j.get<std::string>();
    std::string allowed;
    for (const auto& [v, name] : EnumNames<T>::values) {
      if (name == s) { out = v; return; }
      allowed += (allowed.empty() ? "" : ", ") + std::string(name);
    }
    type_error(path, "one of " + allowed, j);
  } else if constexpr (is_optional<T>::value) {
    if (j.is_null()) { out.reset(); return; }
    typename T::value_type v{};
    if (out) v = *out;
    read(j, v, path);
    out = std::move(v);
  } else if constexpr (is_vector<T>::value) {
    if (!j.is_array()) type_error(path, "an array", j);
    T v;
    v.resize(j.size());
    for (std::size_t i = 0; i < j.size(); ++i) read(j[i], v[i], path + "[" + std::to_string(i) + "]");
    out = std::move(v);
  } else if constexpr (is_array<T>::value) {
    if (!j.is_array() || j.size() != out.size()) type_error(path, "an array of " + std::to_string(out.size()), j);
    for (std::size_t i = 0; i < out.size(); ++i) read(j[i], out[i], path + "[" + std::to_string(i) + "]");
  } else if constexpr (is_string_map<T>::value) {
    if (!j.is_object()) type_error(path, "an object", j);
    T m;
    for (const auto& [k, v] : j.items()) read(v, m[k], join(path, k));
    out = std::move(m);
  } else if constexpr (is_reflected<T>) {
    if (!j.is_object()) type_error(path, "an object", j);
    std::set<std::string> known;
    boost::hana::for_each(boost::hana::accessors<T>(), [&](auto pair) {
      const std::string key = boost::hana::to<const char*>(boost::hana::first(pair));
      known.insert(key);
      auto it = j.find(key);
      if (it != j.end()) read(*it, boost::hana::second(pair)(out), join(path, key));
    });
    for (const auto& [k, v] : j.items()) {
      (void)v;
      if (!known.count(k)) {
        std::string names;
        for (const auto& n : known) names += (names.empty() ? "" : ", ") + n;
        throw InputError(join(path, k) + ": unknown key (known keys" + (path.empty() ? "" : " of " + path) + ": " +
                         names + ")");
      }
    }
  } else {
    static_assert(sizeof(T) == 0,
                  "diffuse::config: unsupported member type; use bool, numbers, std::string, vector, array, "
                  "optional, map<string, T>, an enum with DIFFUSE_ENUM_NAMES, or a BOOST_HANA_DEFINE_STRUCT struct");
  }
}

template <class T>
nlohmann::ordered_json write(const T& v) {
  using ojson = nlohmann::ordered_json;  // keeps declaration order: users read configs top to bottom
  if constexpr (std::is_arithmetic_v<T> || std::is_same_v<T, std::string>) {
    return v;
  } else if constexpr (NamedEnum<T>) {
    for (const auto& [e, name] : EnumNames<T>::values)
      if (e == v) return std::string(name);
    throw Error("config: enum value without a name");
  } else if constexpr (is_optional<T>::value) {
    return v ? write(*v) : ojson(nullptr);
  } else if constexpr (is_vector<T>::value || is_array<T>::value) {
    ojson a = ojson::array();
    for (const auto& x : v) a.push_back(write(x));
    return a;
  } else if constexpr (is_string_map<T>::value) {
    ojson o = ojson::object();
    for (const auto& [k, x] : v) o[k] = write(x);
    return o;
  } else if constexpr (is_reflected<T>) {
    ojson o = ojson::object();
    boost::hana::for_each(boost::hana::accessors<T>(), [&](auto pair) {
      o[boost::hana::to<const char*>(boost::hana::first(pair))] = write(boost::hana::second(pair)(v));
    });
    return o;
  } else {
    static_assert(sizeof(T) == 0, "diffuse::config: unsupported member type");
  }
}

}  // namespace config_detail

template <class Config>
concept ReflectedConfig = config_detail::is_reflected<Config>;

// Reads `j` over `base` (keys that `j` lacks keep base's values; by default the value-initialised
// Config). Throws InputError naming the key path.
template <ReflectedConfig Config>
Config config_from_json(const nlohmann::json& j, Config base = Config{}) {
  config_detail::read(j, base, "");
  return base;
}

template <ReflectedConfig Config>
nlohmann::ordered_json config_to_json(const Config& c) {
  return config_detail::write(c);
}

template <ReflectedConfig Config>
Config load_config(const std::filesystem::path& path, const Config& base = Config{}) {
  std::ifstream in(path);
  if (!in) throw InputError(path.string() + ": cannot open config file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path.string() + ": not valid JSON: " + e.what());
  }
  try {
    return config_from_json<Config>(j, base);
  } catch (const InputError& e) {
    throw InputError(path.string() + ": " + e.what());
  }
}

template <ReflectedConfig Config>
std::string config_to_string(const Config& c, int indent = 2) {
  return config_to_json(c).dump(indent);
}

}  // namespace diffuse
