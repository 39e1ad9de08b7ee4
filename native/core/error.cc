#include "error.h"

#include <c10/util/Exception.h>

namespace torchfold::core {

const char* code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::FileNotFound: return "ERR_FILE_NOT_FOUND";
    case ErrorCode::NotAFile: return "ERR_NOT_A_FILE";
    case ErrorCode::FileUnreadable: return "ERR_FILE_UNREADABLE";
    case ErrorCode::NotTorchScript: return "ERR_NOT_TORCHSCRIPT";
    case ErrorCode::FileCorrupt: return "ERR_FILE_CORRUPT";
    case ErrorCode::InvalidArg: return "ERR_INVALID_ARG";
    case ErrorCode::DeviceUnavailable: return "ERR_DEVICE_UNAVAILABLE";
    case ErrorCode::MethodNotFound: return "ERR_METHOD_NOT_FOUND";
    case ErrorCode::Io: return "ERR_IO";
    case ErrorCode::Unsupported: return "ERR_UNSUPPORTED";
    case ErrorCode::FuseGroup: return "ERR_FUSE_GROUP";
    case ErrorCode::Torch: return "ERR_TORCH";
  }
  return "ERR_TORCH";
}

namespace {

std::string tidy(std::string msg) {
  const auto pos = msg.find("  (Could this error message be improved?");
  if (pos != std::string::npos) msg.erase(pos);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  // An error inside a TorchScript method comes as a TorchScript traceback whose
  // last line is the reason: put that line first, then the traceback.
  const std::string traceback = "The following operation failed in the TorchScript interpreter.";
  if (msg.compare(0, traceback.size(), traceback) == 0) {
    const auto nl = msg.find_last_of('\n');
    if (nl != std::string::npos && nl + 1 < msg.size()) {
      std::string reason = msg.substr(nl + 1);
      const std::string runtime = "RuntimeError: ";
      if (reason.compare(0, runtime.size(), runtime) == 0) reason.erase(0, runtime.size());
      msg = reason + "\n\n" + msg;
    }
  }
  return msg;
}

}  // namespace

std::string torch_message(const c10::Error& error) { return tidy(error.what_without_backtrace()); }

Error describe_current_exception() {
  try {
    throw;
  } catch (const Error& e) {
    return e;
  } catch (const c10::Error& e) {
    // what_without_backtrace() keeps libtorch's message but drops the C++ frames.
    return Error(ErrorCode::Torch, torch_message(e));
  } catch (const std::bad_alloc&) {
    return Error(ErrorCode::Torch, "out of memory");
  } catch (const std::exception& e) {  // torch::jit::JITException from a method, among others
    return Error(ErrorCode::Torch, tidy(e.what()));
  } catch (...) {
    return Error(ErrorCode::Torch, "unknown C++ exception");
  }
}

}  // namespace torchfold::core
