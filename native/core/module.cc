#include "module.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <cstdlib>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

#include "archive.h"
#include "error.h"
#include "jit_switches.h"
#include "patterns.h"
#include "runtime.h"
#include "tensor.h"

namespace torchfold::core {

namespace {

const char* kExportHint = "Export it as TorchScript first: in Python, m = torch.jit.script(model) (or "
                          "torch.jit.trace(model, example)) and then m.save('model.pt').";

void check_readable_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      throw Error(ErrorCode::FileNotFound, "No such file: " + path);
    }
    throw Error(ErrorCode::FileUnreadable, "Cannot read " + path + ": " + std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::NotAFile, path + " is a directory, not a TorchScript file");
  }
  if (!S_ISREG(st.st_mode)) {
    throw Error(ErrorCode::NotAFile, path + " is not a regular file");
  }
  if (::access(path.c_str(), R_OK) != 0) {
    throw Error(ErrorCode::FileUnreadable, "Cannot read " + path + ": " + std::strerror(errno));
  }
  if (st.st_size == 0) {
    throw Error(ErrorCode::NotTorchScript, path + " is empty, not a TorchScript file");
  }
}

std::string read_magic(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(ErrorCode::FileUnreadable, "Cannot open " + path + ": " + std::strerror(errno));
  char buf[4] = {0, 0, 0, 0};
  const size_t n = std::fread(buf, 1, sizeof buf, f);
  std::fclose(f);
  return std::string(buf, n);
}

// libtorch 1.13's PyTorchStreamReader leaks its zip reader state (224 bytes
// in 4 blocks) when its constructor throws after the zip was opened: init()
// has no cleanup, and a half-built object's destructor never runs. A zip with
// no version record does that, so every failed load of one leaked. True for
// such a zip, found from the directory alone; false when there is no readable
// directory (the reader then fails before it holds anything, and its message
// is the one passed on).
bool lacks_version_record(const std::vector<ZipEntry>& entries) {
  if (entries.empty()) return true;
  const size_t slash = entries.front().name.find('/');
  if (slash == std::string::npos) return true;
  const std::string prefix = entries.front().name.substr(0, slash + 1);
  return std::none_of(entries.begin(), entries.end(), [&](const ZipEntry& e) {
    return e.name == prefix + "version" || e.name == prefix + ".data/version";
  });
}

// TorchScript archives are zip files holding <name>/code/ and <name>/constants.pkl;
// torch.save archives hold data.pkl alone. Returns the zip directory, read once
// here for the checks that follow.
std::vector<ZipEntry> check_torchscript_archive(const std::string& path) {
  const std::string magic = read_magic(path);
  if (magic.size() < 4 || magic.compare(0, 4, "PK\x03\x04") != 0) {
    const bool pickle = !magic.empty() && static_cast<unsigned char>(magic[0]) == 0x80;
    throw Error(ErrorCode::NotTorchScript,
                path +
                    (pickle ? " is a Python pickle (a legacy torch.save file), not TorchScript. "
                            : " is not a TorchScript file (not a zip archive). ") +
                    kExportHint);
  }
  std::vector<ZipEntry> entries;
  bool readable = true;
  try {
    entries = read_zip_directory(path);
  } catch (const Error&) {
    readable = false;  // the reader below fails too, and its message is passed on
  }
  if (readable && lacks_version_record(entries)) {
    throw Error(ErrorCode::NotTorchScript, path + " is a zip archive without TorchScript code. " + kExportHint);
  }
  std::vector<std::string> records;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    records = reader.getAllRecords();
  } catch (const c10::Error& e) {
    const std::string message = torch_message(e);
    if (message.find("Attempted to read a PyTorch file with version") != std::string::npos) {
      throw Error(ErrorCode::Unsupported, path + " was written in a file format this libtorch (" + libtorch_version() +
                                              ") cannot read: " + message);
    }
    // PyTorch's reader needs a complete zip with a 'version' record: a damaged
    // or truncated copy, or a zip some other program wrote, ends here.
    throw Error(ErrorCode::NotTorchScript, path + " is not a readable TorchScript archive (" + message +
                                               "). If it is a damaged or truncated copy, copy it again. " +
                                               kExportHint);
  } catch (const std::exception& e) {
    // std::stoull on a version record that is not a number.
    throw Error(ErrorCode::NotTorchScript, path +
                                               " is not a readable TorchScript archive (its version "
                                               "record cannot be parsed: " +
                                               e.what() + "). If it is a damaged copy, copy it again.");
  }
  bool has_code = false, has_constants = false, has_data = false;
  for (const auto& r : records) {
    if (r.rfind("code/", 0) == 0) has_code = true;
    if (r == "constants.pkl") has_constants = true;
    if (r == "data.pkl") has_data = true;
  }
  if (has_code && has_constants) return entries;
  if (has_data) {
    throw Error(ErrorCode::NotTorchScript, path +
                                               " was saved with torch.save (a state_dict or pickled object), not as "
                                               "TorchScript: it holds weights but no code. " +
                                               kExportHint);
  }
  throw Error(ErrorCode::NotTorchScript, path + " is a zip archive without TorchScript code. " + kExportHint);
}

template <typename List>
std::vector<TensorInfo> describe(List&& list) {
  std::vector<TensorInfo> out;
  for (const auto& item : list) {
    const at::Tensor& t = item.value;
    out.push_back({item.name, t.sizes().vec(), dtype_name(t.scalar_type()), device_name(t.device())});
  }
  return out;
}

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Writes the archive to `file` through a descriptor owned here, and returns
// 0 or the errno of the first failed write, fsync or close. libtorch's own
// file writer cannot survive a failed write (ENOSPC, EFBIG, EIO): the short
// write throws, then the PyTorchStreamWriter's destructor writes the end of
// the archive, throws again, and std::terminate() aborts the process. So this
// writer never reports a short write to libtorch: it keeps the first error,
// drops the remaining bytes, and the caller fails the save afterwards.
int write_archive(const torch::jit::Module& module, const std::string& file, const ExtraFiles& extra_files) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  int err = 0;
  const auto writer = [&](const void* data, size_t size) -> size_t {
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0 && err == 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno != EINTR) err = errno;
      } else if (n == 0) {
        err = EIO;
      } else {
        p += n;
        left -= static_cast<size_t>(n);
      }
    }
    return size;
  };
  try {
    torch::jit::ExportModule(module, writer, extra_files, /*bytecode_format=*/false,
                             /*save_mobile_debug_info=*/false, /*use_flatbuffer=*/false);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

std::string temp_path_for(const std::string& path) {
  std::random_device rd;
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
}

// A save killed mid-write (SIGKILL, power loss) leaves its private folder
// ".NAME.tmp-PID-RAND/" behind. Remove those of `base` in `dir` whose process
// is gone; a live process's folder (another save in progress) is left alone.
void remove_stale_temporaries(const std::string& dir, const std::string& base) {
  const std::string prefix = "." + base + ".tmp-";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const auto dash = rest.find('-');
    if (dash == 0 || dash == std::string::npos || rest.find_first_not_of("0123456789") != dash) continue;
    const long pid = std::strtol(rest.substr(0, dash).c_str(), nullptr, 10);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    stale.push_back(dir + "/" + name);
  }
  ::closedir(d);
  for (const auto& folder : stale) {
    std::remove((folder + "/" + base).c_str());
    ::rmdir(folder.c_str());
  }
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \n");
  const auto e = s.find_last_not_of(" \n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// A model that calls operators from an extension (torchvision::nms, ...) fails
// to compile unless the extension's library is loaded; say so on the first line.
Error unknown_operator_error(const std::string& path, const std::string& message) {
  const std::string marker = "Unknown builtin op: ";
  const auto pos = message.find(marker);
  if (pos == std::string::npos) {
    // The archive's structure was fine (checked before), so its contents are
    // damaged, or were written by a PyTorch whose code this one cannot read.
    return Error(ErrorCode::FileCorrupt,
                 path +
                     " could not be loaded: its contents are damaged, or were written by a PyTorch "
                     "that this libtorch (" +
                     libtorch_version() + ") cannot read. libtorch said: " + trim(message));
  }
  const auto start = pos + marker.size();
  const auto end = message.find_first_of(".\n", start);
  const std::string op = message.substr(start, end == std::string::npos ? std::string::npos : end - start);
  const std::string ns = op.substr(0, op.find("::"));
  if (ns == "aten" || ns == "prim") {
    // libtorch's own namespaces: no library can add them; the model needs a newer libtorch.
    return Error(ErrorCode::Unsupported,
                 path + " calls the operator " + op + ", which this libtorch (" + libtorch_version() +
                     ") does not have: the model was saved by a newer PyTorch. Use a newer libtorch, ideally the "
                     "version that saved it (torchfold's default is libtorch 2.x; with another, set LIBTORCH to it "
                     "and rebuild: npm rebuild torchfold --build-from-source). libtorch said: " +
                     trim(message));
  }
  return Error(ErrorCode::Unsupported,
               path + " calls the operator " + op +
                   ", which no loaded library registers. Load the "
                   "library that defines the '" +
                   ns +
                   "' operators first with loadLibrary(path) "
                   "(for torchvision: one of its _C.so or libtorchvision.so, never both). libtorch said: " +
                   trim(message));
}

}  // namespace

namespace {

// torch::jit::load through a reader that notes where each tensor record went,
// then the check that no tensor claims more bytes than its record holds.
torch::jit::Module load_checked(const std::string& path, const c10::Device& device,
                                const std::vector<ZipEntry>& entries) {
  auto reader = make_recording_reader(path, entries);
  torch::jit::Module module;
  try {
    module = torch::jit::load(as_read_adapter(reader), device);
  } catch (const c10::Error& e) {
    throw unknown_operator_error(path, torch_message(e));
  } catch (const std::exception& e) {  // torch::jit::ErrorReport, from compiling the code
    throw unknown_operator_error(path, e.what());
  }
  check_storages(module, *reader, path);
  return module;
}

}  // namespace

std::vector<std::string> verify_file(const std::string& path) {
  check_readable_file(path);
  return verify_archive(path, check_torchscript_archive(path), true);
}

ModulePtr load_module(const std::string& path, const std::string& device_name_in, bool verify) {
  const c10::Device device = parse_device(device_name_in);
  apply_thread_settings();
  check_readable_file(path);
  const auto entries = check_torchscript_archive(path);
  // Code and pickles are always checked (they are small): libtorch compiles
  // whatever a damaged deflate stream inflates to, and its error report can
  // then abort the process while pointing into garbage. Tensor bytes only
  // with `verify`.
  const auto problems = verify_archive(path, entries, verify);
  if (!problems.empty()) {
    std::string lines;
    for (const auto& p : problems) lines += "\n  " + p;
    throw Error(ErrorCode::FileCorrupt, path +
                                            " is damaged: its contents do not match the archive's "
                                            "checksums, so it was not loaded. Copy it again from a good source." +
                                            lines);
  }
  // On another device, libtorch copies each tensor there while reading the
  // file, before the sizes could be checked: check a CPU load first.
  if (device.is_cpu()) return std::make_shared<torch::jit::Module>(load_checked(path, device, entries));
  load_checked(path, c10::Device(c10::kCPU), entries);
  try {
    return std::make_shared<torch::jit::Module>(torch::jit::load(path, device));
  } catch (const c10::Error& e) {
    throw unknown_operator_error(path, torch_message(e));
  } catch (const std::exception& e) {
    throw unknown_operator_error(path, e.what());
  }
}

void save_module(const torch::jit::Module& module, const std::string& path, const ExtraFiles& extra_files) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::FileNotFound, "Cannot save to " + path + ": no such directory " + dir);
  }
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::NotAFile, "Cannot save to " + path + ": it is a directory");
  }
  // The archive is written into a private temporary folder beside the target
  // (so a save killed midway leaves nothing that looks like a model), flushed,
  // then renamed over the target: the rename is atomic. Its records sit under
  // archive/, as in torch.jit.save to a buffer (write_archive says why).
  remove_stale_temporaries(dir, base);
  const std::string tmp_dir = temp_path_for(dir + "/." + base);
  if (::mkdir(tmp_dir.c_str(), 0700) != 0) {
    throw Error(ErrorCode::Io, "Cannot save to " + path + ": " + std::strerror(errno));
  }
  const std::string tmp = tmp_dir + "/" + base;
  auto cleanup = [&] {
    std::remove(tmp.c_str());
    ::rmdir(tmp_dir.c_str());
  };
  int err = 0;
  try {
    err = write_archive(module, tmp, extra_files);
  } catch (...) {
    cleanup();
    Error e = describe_current_exception();
    throw Error(ErrorCode::Io, "Cannot save to " + path + ": " + e.what());
  }
  if (err != 0) {
    cleanup();
    throw Error(ErrorCode::Io, "Cannot save to " + path + ": " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    cleanup();
    throw Error(ErrorCode::Io, "Cannot save to " + path + ": " + std::strerror(rename_err));
  }
  ::rmdir(tmp_dir.c_str());
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

ExtraFiles read_extra_files(const std::string& path, const std::vector<std::string>& names) {
  check_readable_file(path);
  check_torchscript_archive(path);
  ExtraFiles out;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    for (const auto& name : names) {
      const std::string record = "extra/" + name;
      if (!reader.hasRecord(record)) continue;
      auto data = reader.getRecord(record);
      out.emplace(name, std::string(static_cast<const char*>(std::get<0>(data).get()), std::get<1>(data)));
    }
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::NotTorchScript, path + " is not a readable TorchScript archive (" + torch_message(e) + ")");
  }
  return out;
}

ModulePtr clone_module(const torch::jit::Module& module) {
  return std::make_shared<torch::jit::Module>(module.deepcopy());
}

ModulePtr module_to_device(const torch::jit::Module& module, const std::string& device_name_in) {
  const c10::Device device = parse_device(device_name_in);
  auto copy = std::make_shared<torch::jit::Module>(module.deepcopy());
  copy->to(device);
  return copy;
}

std::vector<std::string> method_names(const torch::jit::Module& module) {
  std::vector<std::string> names;
  for (const auto& m : module.get_methods()) names.push_back(m.name());
  return names;
}

std::string graph_text(const torch::jit::Module& module, const std::string& method, bool inlined) {
  auto m = module.find_method(method);
  if (!m) {
    throw Error(ErrorCode::MethodNotFound, "The module has no method '" + method + "'");
  }
  if (!inlined) return m->graph()->toString();
  auto copy = m->graph()->copy();
  torch::jit::Inline(*copy);
  return copy->toString();
}

std::vector<std::pair<std::string, at::Tensor>> named_tensors(const torch::jit::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : module.named_parameters(true)) out.emplace_back(p.name, p.value);
  for (const auto& b : module.named_buffers(true)) out.emplace_back(b.name, b.value);
  return out;
}

std::vector<NamedModule> named_modules(const torch::jit::Module& module) {
  std::vector<NamedModule> out;
  for (const auto& item : module.named_modules()) {
    out.push_back({item.name, class_name(item.value)});
  }
  return out;
}

std::vector<TensorInfo> parameters(const torch::jit::Module& module) {
  return describe(module.named_parameters(/*recurse=*/true));
}

std::vector<TensorInfo> buffers(const torch::jit::Module& module) {
  return describe(module.named_buffers(/*recurse=*/true));
}

std::string module_device(const torch::jit::Module& module) {
  for (const auto& p : module.parameters()) return device_name(p.device());
  for (const auto& b : module.buffers()) return device_name(b.device());
  return "cpu";
}

size_t module_bytes(const torch::jit::Module& module) {
  size_t total = 0;
  for (const auto& p : module.parameters()) total += tensor_nbytes(p);
  for (const auto& b : module.buffers()) total += tensor_nbytes(b);
  return total;
}

Value run_method(const torch::jit::Module& module, const std::string& method, const std::vector<Value>& inputs) {
  auto m = module.find_method(method);
  if (!m) {
    throw Error(ErrorCode::MethodNotFound, "The module has no method '" + method + "'");
  }
  apply_thread_settings();
  c10::NoGradGuard no_grad;
  std::vector<c10::IValue> stack = to_stack(inputs, m->function().getSchema(), method + "()");
  JitSwitchScope switches(module);  // the module's JIT fusers, if any, for this call only
  return from_ivalue((*m)(std::move(stack)));
}

}  // namespace torchfold::core

namespace torchfold::core {

void set_training(torch::jit::Module& module, bool on) { module.train(on); }

bool is_training(const torch::jit::Module& module) { return module.is_training(); }

}  // namespace torchfold::core
