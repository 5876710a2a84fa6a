#pragma once
// Error types shared by the whole library (torch-free).
//
// `Error` is the base of everything diffuse throws on purpose. `InputError` marks a problem with
// what a user handed in (a malformed file, an unknown key, a bad shape): programs map it to exit
// code 2. Messages always say *which* thing and *where* (file, tensor, key), so a user can act.
#include <stdexcept>
#include <string>

namespace diffuse {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad user input: a malformed or truncated file, a wrong shape, an unknown config key.
class InputError : public Error {
 public:
  using Error::Error;
};

}  // namespace diffuse
