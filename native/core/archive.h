// The zip directory of a TorchScript archive, read by torchfold itself, for two
// checks PyTorch's reader does not make:
//   - verify_archive(): every record's CRC-32 against the directory, and every
//     record's place inside the file (PyTorch's reader is built without CRC
//     checks, so a bit flipped in a tensor's bytes loads as another weight);
//   - check_storages(): after a load, no tensor claims more bytes than the
//     record it was read from (libtorch 1.13 builds a storage of the size the
//     pickle names over a buffer of the record's size, and reads past it).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caffe2/serialize/read_adapter_interface.h>

namespace torchfold::core {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;  // from the local header; 0 when that header is unreadable
};

// The central directory (zip64 included). Throws Error(NotTorchScript) when
// there is no readable directory.
std::vector<ZipEntry> read_zip_directory(const std::string& path);

// Problems found, one line each ("record data/3: CRC-32 is 1a2b3c4d, the
// directory says 5e6f7081"); empty when the archive is intact. Without
// `tensors`, the tensor records (data/N, constants/N: nearly all the bytes) are
// skipped and only code, pickles and metadata are checked, which is cheap.
// `entries` is the directory read_zip_directory() gave.
std::vector<std::string> verify_archive(const std::string& path, const std::vector<ZipEntry>& entries, bool tensors);

// A file reader for torch::jit::load that notes which buffer each stored
// record was read into, and how many bytes that was.
class RecordingReader;
std::shared_ptr<RecordingReader> make_recording_reader(const std::string& path, const std::vector<ZipEntry>& entries);
std::shared_ptr<caffe2::serialize::ReadAdapterInterface> as_read_adapter(
    const std::shared_ptr<RecordingReader>& reader);

// Throws Error(FileCorrupt) when a tensor of `module` (parameters, buffers,
// attributes, constants in its code) has a storage larger than the record it
// was read from, or no data at all for a non-empty storage.
void check_storages(const torch::jit::Module& module, const RecordingReader& reader, const std::string& path);

}  // namespace torchfold::core
