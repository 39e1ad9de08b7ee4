#include "archive.h"

#include <caffe2/serialize/file_adapter.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "error.h"

namespace torchfold::core {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kProblemLimit = 20;

uint16_t u16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t u64(const unsigned char* p) { return u32(p) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

class File {
 public:
  explicit File(const std::string& path) : f_(std::fopen(path.c_str(), "rb")) {
    if (!f_) throw Error(ErrorCode::FileUnreadable, "Cannot open " + path + ": " + std::strerror(errno));
    std::fseek(f_, 0, SEEK_END);
    size_ = static_cast<uint64_t>(std::ftell(f_));
  }
  ~File() { std::fclose(f_); }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  uint64_t size() const { return size_; }
  // Exactly n bytes at pos, or false.
  bool read(uint64_t pos, void* buf, size_t n) {
    if (pos > size_ || n > size_ - pos) return false;
    if (fseeko(f_, static_cast<off_t>(pos), SEEK_SET) != 0) return false;
    return std::fread(buf, 1, n, f_) == n;
  }

 private:
  FILE* f_;
  uint64_t size_ = 0;
};

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

Error not_a_zip(const std::string& path, const std::string& why) {
  return Error(ErrorCode::NotTorchScript, path + " is not a readable TorchScript archive (" + why + ")");
}

// The zip64 extended information of a central entry, for the fields the
// 32-bit header marks as 0xFFFFFFFF.
void apply_zip64_extra(ZipEntry& e, const unsigned char* extra, size_t len, bool need_size, bool need_compressed,
                       bool need_offset) {
  size_t pos = 0;
  while (pos + 4 <= len) {
    const uint16_t id = u16(extra + pos);
    const uint16_t n = u16(extra + pos + 2);
    if (pos + 4 + n > len) return;
    if (id == 0x0001) {
      const unsigned char* p = extra + pos + 4;
      size_t left = n;
      auto take = [&](uint64_t& out) {
        if (left < 8) return;
        out = u64(p);
        p += 8;
        left -= 8;
      };
      if (need_size) take(e.size);
      if (need_compressed) take(e.compressed_size);
      if (need_offset) take(e.header_offset);
      return;
    }
    pos += 4 + n;
  }
}

std::vector<ZipEntry> read_directory(File& file, const std::string& path) {
  const uint64_t size = file.size();
  if (size < 22) throw not_a_zip(path, "too short for a zip directory");
  const uint64_t tail_len = std::min<uint64_t>(size, 22 + 0xFFFF);
  std::vector<unsigned char> tail(tail_len);
  if (!file.read(size - tail_len, tail.data(), tail_len)) throw not_a_zip(path, "cannot read its end");
  int64_t end = -1;
  for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i) {
    if (u32(&tail[i]) == kEndSig) {
      end = i;
      break;
    }
  }
  if (end < 0) throw not_a_zip(path, "no end of central directory");
  const unsigned char* eocd = &tail[end];
  uint64_t count = u16(eocd + 10);
  uint64_t cd_size = u32(eocd + 12);
  uint64_t cd_offset = u32(eocd + 16);
  const uint64_t eocd_pos = size - tail_len + static_cast<uint64_t>(end);
  if (eocd_pos >= 20) {
    unsigned char loc[20];
    if (file.read(eocd_pos - 20, loc, 20) && u32(loc) == kZip64LocatorSig) {
      unsigned char z[56];
      if (!file.read(u64(loc + 8), z, 56) || u32(z) != kZip64EndSig) throw not_a_zip(path, "bad zip64 directory");
      count = u64(z + 32);
      cd_size = u64(z + 40);
      cd_offset = u64(z + 48);
    }
  }
  if (cd_offset > size || cd_size > size - cd_offset) throw not_a_zip(path, "the directory lies outside the file");
  if (count > cd_size / 46 + 1) throw not_a_zip(path, "the directory's entry count does not fit its size");
  std::vector<unsigned char> cd(cd_size);
  if (!file.read(cd_offset, cd.data(), cd_size)) throw not_a_zip(path, "cannot read the directory");
  std::vector<ZipEntry> out;
  out.reserve(count);
  size_t pos = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (pos + 46 > cd.size() || u32(&cd[pos]) != kCentralSig)
      throw not_a_zip(path, "directory entry " + std::to_string(i) + " is damaged");
    const unsigned char* h = &cd[pos];
    const size_t name_len = u16(h + 28), extra_len = u16(h + 30), comment_len = u16(h + 32);
    if (pos + 46 + name_len + extra_len + comment_len > cd.size())
      throw not_a_zip(path, "directory entry " + std::to_string(i) + " is damaged");
    ZipEntry e;
    e.name.assign(reinterpret_cast<const char*>(h + 46), name_len);
    e.method = u16(h + 10);
    e.crc32 = u32(h + 16);
    e.compressed_size = u32(h + 20);
    e.size = u32(h + 24);
    e.header_offset = u32(h + 42);
    apply_zip64_extra(e, h + 46 + name_len, extra_len, e.size == 0xFFFFFFFFu, e.compressed_size == 0xFFFFFFFFu,
                      e.header_offset == 0xFFFFFFFFu);
    unsigned char local[30];
    if (file.read(e.header_offset, local, 30) && u32(local) == kLocalSig) {
      e.data_offset = e.header_offset + 30 + u16(local + 26) + u16(local + 28);
    }
    out.push_back(std::move(e));
    pos += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

// CRC-32 and length of a record's uncompressed bytes; false when its data cannot be read or inflated.
bool record_crc(File& file, const ZipEntry& e, uint32_t& crc, uint64_t& produced) {
  constexpr size_t kChunk = 1 << 20;
  std::vector<unsigned char> in(kChunk);
  crc = static_cast<uint32_t>(::crc32(0L, Z_NULL, 0));
  produced = 0;
  uint64_t pos = e.data_offset, left = e.compressed_size;
  if (e.method == 0) {
    while (left > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kChunk));
      if (!file.read(pos, in.data(), n)) return false;
      crc = static_cast<uint32_t>(::crc32(crc, in.data(), static_cast<uInt>(n)));
      pos += n;
      left -= n;
      produced += n;
    }
    return true;
  }
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return false;
  std::vector<unsigned char> out(kChunk);
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    if (z.avail_in == 0) {
      if (left == 0) break;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kChunk));
      if (!file.read(pos, in.data(), n)) break;
      pos += n;
      left -= n;
      z.next_in = in.data();
      z.avail_in = static_cast<uInt>(n);
    }
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    status = inflate(&z, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) break;
    const size_t got = out.size() - z.avail_out;
    crc = static_cast<uint32_t>(::crc32(crc, out.data(), static_cast<uInt>(got)));
    produced += got;
    if (produced > e.size) break;  // more than the directory says: stop early
  }
  inflateEnd(&z);
  return status == Z_STREAM_END;
}

}  // namespace

std::vector<ZipEntry> read_zip_directory(const std::string& path) {
  File file(path);
  return read_directory(file, path);
}

namespace {

bool is_tensor_record(const std::string& name) {
  // <archive>/data/<n> or <archive>/constants/<n>: a tensor's bytes.
  const auto slash = name.find_last_of('/');
  if (slash == std::string::npos || slash + 1 == name.size() ||
      name.find_first_not_of("0123456789", slash + 1) != std::string::npos)
    return false;
  const auto dir_start = name.find_last_of('/', slash - 1);
  const std::string dir = name.substr(dir_start == std::string::npos ? 0 : dir_start + 1,
                                      slash - (dir_start == std::string::npos ? 0 : dir_start + 1));
  return dir == "data" || dir == "constants";
}

}  // namespace

std::vector<std::string> verify_archive(const std::string& path, const std::vector<ZipEntry>& entries, bool tensors) {
  File file(path);
  std::vector<std::string> problems;
  size_t extra = 0;
  auto note = [&](const std::string& line) {
    if (problems.size() < kProblemLimit) problems.push_back(line);
    else ++extra;
  };
  std::unordered_set<std::string> names;
  for (const auto& e : entries) {
    if (!tensors && is_tensor_record(e.name)) continue;
    const std::string r = "record " + e.name + ": ";
    if (!names.insert(e.name).second) note(r + "appears twice in the directory");
    if (e.data_offset == 0) {
      note(r + "its local header is missing or damaged");
      continue;
    }
    unsigned char local[30];
    std::vector<char> local_name;
    if (file.read(e.header_offset, local, 30)) {
      local_name.resize(u16(local + 26));
      if (!file.read(e.header_offset + 30, local_name.data(), local_name.size()) ||
          std::string(local_name.begin(), local_name.end()) != e.name) {
        note(r + "its local header names another record");
      }
    }
    if (e.method != 0 && e.method != 8) {
      note(r + "unknown compression method " + std::to_string(e.method));
      continue;
    }
    if (e.data_offset > file.size() || e.compressed_size > file.size() - e.data_offset) {
      note(r + "its data runs past the end of the file");
      continue;
    }
    if (e.method == 0 && e.compressed_size != e.size) {
      note(r + "stored, but its two sizes differ");
      continue;
    }
    uint32_t crc = 0;
    uint64_t produced = 0;
    if (!record_crc(file, e, crc, produced)) {
      note(r + "its compressed data cannot be inflated");
      continue;
    }
    if (produced != e.size) {
      note(r + "holds " + std::to_string(produced) + " bytes, the directory says " + std::to_string(e.size));
    } else if (crc != e.crc32) {
      note(r + "CRC-32 is " + hex32(crc) + ", the directory says " + hex32(e.crc32));
    }
  }
  if (extra > 0) problems.push_back("and " + std::to_string(extra) + " more");
  return problems;
}

class RecordingReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  RecordingReader(const std::string& path, const std::vector<ZipEntry>& entries) : file_(path) {
    for (const auto& e : entries) {
      if (e.method == 0 && e.data_offset != 0) stored_.emplace(e.data_offset, std::make_pair(e.name, e.size));
    }
  }
  size_t size() const override { return file_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* what) const override {
    auto it = stored_.find(pos);
    if (it != stored_.end() && it->second.second == n) {
      std::lock_guard<std::mutex> lock(mutex_);
      buffers_[buf] = {it->second.first, n};
    }
    return file_.read(pos, buf, n, what);
  }
  // The record read into `data` and its length, when one was.
  const std::pair<std::string, size_t>* source_of(const void* data) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = buffers_.find(data);
    return it == buffers_.end() ? nullptr : &it->second;
  }

 private:
  caffe2::serialize::FileAdapter file_;
  std::unordered_map<uint64_t, std::pair<std::string, size_t>> stored_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<const void*, std::pair<std::string, size_t>> buffers_;
};

std::shared_ptr<RecordingReader> make_recording_reader(const std::string& path, const std::vector<ZipEntry>& entries) {
  return std::make_shared<RecordingReader>(path, entries);
}

std::shared_ptr<caffe2::serialize::ReadAdapterInterface> as_read_adapter(
    const std::shared_ptr<RecordingReader>& reader) {
  return reader;
}

namespace {

struct StorageWalk {
  const RecordingReader& reader;
  const std::string& path;
  std::unordered_set<const void*> seen_objects;

  void tensor(const at::Tensor& t, const std::string& where) {
    if (!t.defined() || t.is_sparse() || t.is_mkldnn() || !t.has_storage()) return;
    const auto& storage = t.storage();
    const size_t nbytes = storage.nbytes();
    const void* data = storage.data();
    if (nbytes > 0 && data == nullptr) {
      throw Error(ErrorCode::FileCorrupt, path + " is damaged: the tensor " + where + " needs " +
                                              std::to_string(nbytes) +
                                              " bytes but its record in the archive is empty.");
    }
    if (const auto* src = reader.source_of(data)) {
      if (nbytes > src->second) {
        throw Error(ErrorCode::FileCorrupt, path + " is damaged: the tensor " + where + " needs " +
                                                std::to_string(nbytes) + " bytes but its record " + src->first +
                                                " holds " + std::to_string(src->second) + ".");
      }
    }
  }

  void value(const c10::IValue& v, const std::string& where) {
    if (v.isTensor()) {
      tensor(v.toTensor(), where);
    } else if (v.isObject()) {
      auto obj = v.toObject();
      if (!seen_objects.insert(obj.get()).second) return;
      const auto type = obj->type();
      for (size_t i = 0; i < obj->slots().size() && i < type->numAttributes(); ++i) {
        value(obj->getSlot(i), where.empty() ? type->getAttributeName(i) : where + "." + type->getAttributeName(i));
      }
    } else if (v.isList()) {
      const auto list = v.toListRef();
      for (size_t i = 0; i < list.size(); ++i) value(list[i], where + "[" + std::to_string(i) + "]");
    } else if (v.isTuple()) {
      const auto& items = v.toTupleRef().elements();
      for (size_t i = 0; i < items.size(); ++i) value(items[i], where + "[" + std::to_string(i) + "]");
    } else if (v.isGenericDict()) {
      for (const auto& item : v.toGenericDict()) value(item.value(), where + "[...]");
    }
  }

  void block(torch::jit::Block* b, const std::string& fn) {
    for (auto* node : b->nodes()) {
      if (node->kind() == c10::prim::Constant && node->outputs().size() == 1 &&
          node->output()->type()->kind() == c10::TypeKind::TensorType) {
        if (auto v = torch::jit::toIValue(node->output())) tensor(v->toTensor(), "constant in " + fn);
      }
      for (auto* sub : node->blocks()) block(sub, fn);
    }
  }
};

}  // namespace

void check_storages(const torch::jit::Module& module, const RecordingReader& reader, const std::string& path) {
  StorageWalk walk{reader, path, {}};
  walk.value(module._ivalue(), "");
  // Tensors from constants.pkl live in the code's graphs as constants.
  for (auto* fn : module.type()->compilation_unit()->get_functions()) {
    auto* graph_fn = dynamic_cast<torch::jit::GraphFunction*>(fn);
    if (!graph_fn) continue;
    std::shared_ptr<torch::jit::Graph> graph;
    try {
      graph_fn->ensure_defined();
      graph = graph_fn->graph();
    } catch (...) {
      continue;  // fails again, with libtorch's message, when it is called
    }
    walk.block(graph->block(), fn->qualname().qualifiedName());
  }
}

}  // namespace torchfold::core
