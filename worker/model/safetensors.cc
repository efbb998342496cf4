#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_config.h"

namespace tern::worker {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // as the reference library
constexpr int64_t kMaxDim = int64_t{1} << 40;
constexpr uint64_t kMaxElements = uint64_t{1} << 48;

constexpr TensorDType kAllDTypes[] = {TensorDType::kBF16,   TensorDType::kF16, TensorDType::kF32,
                                      TensorDType::kF8E4M3, TensorDType::kI8,  TensorDType::kU8,
                                      TensorDType::kI32,    TensorDType::kI64};

bool ParseDType(const std::string& s, TensorDType* out) {
  for (TensorDType d : kAllDTypes) {
    if (s == TensorDTypeName(d)) {
      *out = d;
      return true;
    }
  }
  return false;
}

bool HasBf16View(TensorDType d) {
  return d == TensorDType::kBF16 || d == TensorDType::kF16 || d == TensorDType::kF32;
}

bool SafeFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

}  // namespace

const char* TensorDTypeName(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kBF16:
      return "BF16";
    case TensorDType::kF16:
      return "F16";
    case TensorDType::kF32:
      return "F32";
    case TensorDType::kF8E4M3:
      return "F8_E4M3";
    case TensorDType::kI8:
      return "I8";
    case TensorDType::kU8:
      return "U8";
    case TensorDType::kI32:
      return "I32";
    case TensorDType::kI64:
      return "I64";
  }
  return "?";
}

size_t TensorDTypeSize(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kF8E4M3:
    case TensorDType::kI8:
    case TensorDType::kU8:
      return 1;
    case TensorDType::kBF16:
    case TensorDType::kF16:
      return 2;
    case TensorDType::kF32:
    case TensorDType::kI32:
      return 4;
    case TensorDType::kI64:
      return 8;
  }
  return 1;
}

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A read-only private mapping of a whole file; unmapped on destruction.
class SafetensorsCheckpoint::MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
    }
    auto file = std::unique_ptr<MappedFile>(new MappedFile());
    file->size_ = static_cast<size_t>(st.st_size);
    if (file->size_ > 0) {
      void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        return absl::InternalError(absl::StrCat("cannot mmap ", path));
      }
      file->data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
    return file;
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

SafetensorsCheckpoint::SafetensorsCheckpoint() = default;
SafetensorsCheckpoint::~SafetensorsCheckpoint() = default;

absl::Status SafetensorsCheckpoint::AddFile(const std::string& path,
                                            const std::string& display_name) {
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(display_name, ": ", what));
  };
  if (file->size() < 8) return bad("truncated (no header length)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file->data(), 8);  // little-endian host
  if (header_len > kMaxHeaderBytes)
    return bad(absl::StrCat("header length ", header_len, " is too large"));
  if (header_len > file->size() - 8) {
    return bad(absl::StrCat("header length ", header_len, " exceeds the file size ", file->size()));
  }
  const char* header_begin = reinterpret_cast<const char*>(file->data() + 8);
  json header = json::parse(header_begin, header_begin + header_len, nullptr, false);
  if (header.is_discarded()) return bad("header is not valid JSON");
  if (!header.is_object()) return bad("header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file->size() - data_start;
  const uint8_t* data = file->data() + data_start;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& item : header.items()) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one.
    const std::string& name = item.key();
    const json& entry = item.value();
    if (name == "__metadata__") continue;
    auto bad_tensor = [&](const std::string& what) {
      return bad(absl::StrCat("tensor ", name, ": ", what));
    };
    if (!entry.is_object()) return bad_tensor("entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return bad_tensor("missing dtype");
    TensorInfo info;
    info.name = name;
    info.file = display_name;
    if (!ParseDType(dtype_it->get<std::string>(), &info.stored_dtype)) {
      return bad_tensor(absl::StrCat("unsupported dtype ", dtype_it->get<std::string>(),
                                     " (BF16, F16, F32, F8_E4M3, I8, U8, I32, I64 only)"));
    }
    if (shape_it == entry.end() || !shape_it->is_array()) return bad_tensor("missing shape");
    uint64_t numel = 1;
    for (const json& d : *shape_it) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > kMaxDim) {
        return bad_tensor("shape must hold non-negative integers");
      }
      info.shape.push_back(d.get<int64_t>());
      // Checked before multiplying: a product past 2^64 would wrap around.
      const uint64_t dim = static_cast<uint64_t>(info.shape.back());
      if (dim != 0 && numel > kMaxElements / dim) return bad_tensor("shape is too large");
      numel *= dim;
    }
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return bad_tensor("data_offsets must be two non-negative integers");
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return bad_tensor(absl::StrCat("data_offsets [", begin, ", ", end,
                                     "] fall outside the data section of ", data_size, " bytes"));
    }
    if (end - begin != numel * TensorDTypeSize(info.stored_dtype)) {
      return bad_tensor(absl::StrCat("data_offsets hold ", end - begin, " bytes but shape ",
                                     ShapeToString(info.shape), " of ",
                                     TensorDTypeName(info.stored_dtype), " needs ",
                                     numel * TensorDTypeSize(info.stored_dtype)));
    }
    if (tensors_.count(name) > 0) {
      return bad_tensor(absl::StrCat("also present in ", tensors_[name].file));
    }
    ranges.emplace_back(begin, end);
    const uint8_t* src = data + begin;
    const size_t n = static_cast<size_t>(numel);
    info.raw = absl::Span<const uint8_t>(src, static_cast<size_t>(end - begin));
    const bool aligned = (reinterpret_cast<uintptr_t>(src) % alignof(uint16_t)) == 0;
    if (!HasBf16View(info.stored_dtype)) {
      // Served as raw bytes only.
    } else if (info.stored_dtype == TensorDType::kBF16 && aligned) {
      info.bf16 = absl::Span<const uint16_t>(reinterpret_cast<const uint16_t*>(src), n);
    } else {
      auto owned = std::make_unique<uint16_t[]>(std::max<size_t>(n, 1));
      for (size_t i = 0; i < n; ++i) {
        if (info.stored_dtype == TensorDType::kF32) {
          float v;
          std::memcpy(&v, src + 4 * i, 4);
          owned[i] = kernels::FloatToBf16(v);
        } else {
          uint16_t v;
          std::memcpy(&v, src + 2 * i, 2);
          owned[i] = info.stored_dtype == TensorDType::kF16
                         ? kernels::FloatToBf16(kernels::F16ToFloat(v))
                         : v;
        }
      }
      info.bf16 = absl::Span<const uint16_t>(owned.get(), n);
      converted_.push_back(std::move(owned));
    }
    tensors_.emplace(name, std::move(info));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return bad("tensor data ranges overlap");
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::OpenFile(
    const std::string& path) {
  auto ckpt = std::unique_ptr<SafetensorsCheckpoint>(new SafetensorsCheckpoint());
  const size_t slash = path.find_last_of('/');
  TERN_RETURN_IF_ERROR(
      ckpt->AddFile(path, slash == std::string::npos ? path : path.substr(slash + 1)));
  return ckpt;
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::OpenDir(
    const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  auto index_text = ReadCheckpointFile(index_path, size_t{64} << 20);
  if (!index_text.ok()) {
    if (!absl::IsNotFound(index_text.status())) return index_text.status();
    return OpenFile(dir + "/model.safetensors");
  }
  json index = json::parse(*index_text, nullptr, false);
  if (index.is_discarded() || !index.is_object()) {
    return absl::InvalidArgumentError("model.safetensors.index.json: not a JSON object");
  }
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object() || map_it->empty()) {
    return absl::InvalidArgumentError("model.safetensors.index.json: missing \"weight_map\"");
  }
  std::set<std::string> shard_names;
  for (const auto& [name, file] : map_it->items()) {
    if (!file.is_string() || !SafeFileName(file.get<std::string>())) {
      return absl::InvalidArgumentError(absl::StrCat("model.safetensors.index.json: tensor ", name,
                                                     " maps to an invalid file name"));
    }
    shard_names.insert(file.get<std::string>());
  }
  auto ckpt = std::unique_ptr<SafetensorsCheckpoint>(new SafetensorsCheckpoint());
  for (const std::string& shard : shard_names) {
    TERN_RETURN_IF_ERROR(ckpt->AddFile(dir + "/" + shard, shard));
  }
  for (const auto& [name, file] : map_it->items()) {
    auto it = ckpt->tensors_.find(name);
    if (it == ckpt->tensors_.end() || it->second.file != file.get<std::string>()) {
      return absl::InvalidArgumentError(absl::StrCat("model.safetensors.index.json: tensor ", name,
                                                     " is not in ", file.get<std::string>()));
    }
  }
  return ckpt;
}

std::vector<std::string> SafetensorsCheckpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<const TensorInfo*> SafetensorsCheckpoint::Info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    return absl::NotFoundError(absl::StrCat("tensor ", name, " is missing"));
  return &it->second;
}

absl::StatusOr<absl::Span<const uint16_t>> SafetensorsCheckpoint::GetBf16(
    const std::string& name, absl::Span<const int64_t> shape) const {
  TERN_ASSIGN_OR_RETURN(const TensorInfo* info, Info(name));
  if (!std::equal(info->shape.begin(), info->shape.end(), shape.begin(), shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ",
                                                   ShapeToString(info->shape), ", expected ",
                                                   ShapeToString(shape)));
  }
  if (!HasBf16View(info->stored_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is ",
                                                   TensorDTypeName(info->stored_dtype),
                                                   ", expected BF16, F16 or F32"));
  }
  return info->bf16;
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsCheckpoint::GetRaw(
    const std::string& name, TensorDType dtype, absl::Span<const int64_t> shape) const {
  TERN_ASSIGN_OR_RETURN(const TensorInfo* info, Info(name));
  if (info->stored_dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is ",
                                                   TensorDTypeName(info->stored_dtype),
                                                   ", expected ", TensorDTypeName(dtype)));
  }
  if (!std::equal(info->shape.begin(), info->shape.end(), shape.begin(), shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ",
                                                   ShapeToString(info->shape), ", expected ",
                                                   ShapeToString(shape)));
  }
  return info->raw;
}

absl::StatusOr<std::vector<float>> SafetensorsCheckpoint::GetFloats(const std::string& name) const {
  TERN_ASSIGN_OR_RETURN(const TensorInfo* info, Info(name));
  const size_t size = TensorDTypeSize(info->stored_dtype);
  const size_t n = info->raw.size() / size;
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = info->raw.data() + i * size;
    uint16_t h = 0;
    switch (info->stored_dtype) {
      case TensorDType::kF32:
        std::memcpy(&out[i], p, 4);
        break;
      case TensorDType::kBF16:
        std::memcpy(&h, p, 2);
        out[i] = kernels::Bf16ToFloat(h);
        break;
      case TensorDType::kF16:
        std::memcpy(&h, p, 2);
        out[i] = kernels::F16ToFloat(h);
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is ",
                                                       TensorDTypeName(info->stored_dtype),
                                                       ", expected BF16, F16 or F32"));
    }
  }
  return out;
}

}  // namespace tern::worker
