// Errors raised by the core. Every failure a caller can cause or meet leaves the
// core as a torchfold::core::Error with a stable code; the addon turns it into a
// JS TorchfoldError with the same code. No Node headers here.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

namespace c10 {
class Error;
}

namespace torchfold::core {

enum class ErrorCode {
  FileNotFound,
  NotAFile,
  FileUnreadable,
  NotTorchScript,
  FileCorrupt,
  InvalidArg,
  DeviceUnavailable,
  MethodNotFound,
  Io,
  Unsupported,
  FuseGroup,
  Torch,
};

// The stable string form, e.g. "ERR_FILE_NOT_FOUND".
const char* code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Turns whatever was thrown (core::Error, c10::Error, std::exception, anything)
// into a core::Error. Call it from a catch (...) block only.
Error describe_current_exception();

// libtorch's message without the C++ backtrace and the "(Could this error
// message be improved? ...)" boilerplate.
std::string torch_message(const c10::Error& error);

}  // namespace torchfold::core
