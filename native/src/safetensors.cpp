#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "errors.h"
#include "json.h"

namespace streamsink {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) { h ^= p[i]; h *= 1099511628211ull; }
  return h;
}

size_t dtype_size(DType dt) { return dt == DType::F32 ? 4 : 2; }

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw EngineError(ErrorCode::Io, "cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw EngineError(ErrorCode::Io, "cannot open " + path + ": " + std::strerror(errno));
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      ::close(fd_);
      throw EngineError(ErrorCode::Io, "cannot stat " + path);
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED) {
        ::close(fd_);
        throw EngineError(ErrorCode::Io, "cannot map " + path);
      }
      data_ = static_cast<const uint8_t*>(p);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3FF) << 13;
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | (exp + 112) << 23 | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TensorStore::~TensorStore() = default;

std::unique_ptr<TensorStore> TensorStore::open_file(const std::string& path) {
  std::unique_ptr<TensorStore> store(new TensorStore());
  store->add_file(path);
  return store;
}

std::unique_ptr<TensorStore> TensorStore::open(const std::string& model_dir) {
  std::unique_ptr<TensorStore> store(new TensorStore());
  std::string single = model_dir + "/model.safetensors";
  std::string index = model_dir + "/model.safetensors.index.json";
  if (file_exists(index)) {
    JsonValue doc;
    try {
      doc = parse_json(read_text_file(index), index);
    } catch (const std::invalid_argument& e) {
      throw EngineError(ErrorCode::ModelFormat, e.what());
    }
    const JsonValue* map = doc.get("weight_map");
    if (!map || !map->is_object() || map->object.empty())
      throw EngineError(ErrorCode::ModelFormat, index + ": missing or empty \"weight_map\"");
    std::vector<std::string> shards;
    for (const auto& [name, file] : map->object) {
      if (!file.is_string() || file.string.empty() || file.string.find('/') != std::string::npos)
        throw EngineError(ErrorCode::ModelFormat, index + ": bad shard file name for tensor " + name);
      bool seen = false;
      for (const auto& s : shards) seen = seen || s == file.string;
      if (!seen) shards.push_back(file.string);
    }
    for (const auto& shard : shards) store->add_file(model_dir + "/" + shard);
    for (const auto& [name, file] : map->object) {
      auto it = store->tensors_.find(name);
      if (it == store->tensors_.end() || it->second.file != model_dir + "/" + file.string)
        throw EngineError(ErrorCode::MissingTensor,
                          index + " lists tensor " + name + " in " + file.string + ", which does not contain it");
    }
  } else if (file_exists(single)) {
    store->add_file(single);
  } else {
    throw EngineError(ErrorCode::Io, "no model.safetensors or model.safetensors.index.json in " + model_dir);
  }
  return store;
}

void TensorStore::add_file(const std::string& path) {
  auto file = std::make_unique<MappedFile>(path);
  const uint8_t* base = file->data();
  size_t size = file->size();
  if (size < 8) throw EngineError(ErrorCode::ModelFormat, path + ": truncated safetensors file (" + std::to_string(size) + " bytes)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian host assumed (x86_64, aarch64)
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    throw EngineError(ErrorCode::ModelFormat,
                      path + ": header length " + std::to_string(header_len) + " exceeds the file (" + std::to_string(size) + " bytes)");
  std::string header(reinterpret_cast<const char*>(base + 8), header_len);
  header_hash_ = fnv1a(header_hash_, header.data(), header.size());
  JsonValue doc;
  try {
    doc = parse_json(header, path + " header");
  } catch (const std::invalid_argument& e) {
    throw EngineError(ErrorCode::ModelFormat, e.what());
  }
  if (!doc.is_object()) throw EngineError(ErrorCode::ModelFormat, path + ": header is not a JSON object");
  const uint8_t* data_start = base + 8 + header_len;
  uint64_t data_size = size - 8 - header_len;
  for (const auto& [name, meta] : doc.object) {
    if (name == "__metadata__") continue;
    auto bad = [&](const std::string& why) {
      return EngineError(ErrorCode::ModelFormat, path + ": tensor " + name + ": " + why);
    };
    const JsonValue* dt = meta.get("dtype");
    const JsonValue* shape = meta.get("shape");
    const JsonValue* offs = meta.get("data_offsets");
    if (!dt || !dt->is_string()) throw bad("missing dtype");
    if (!shape || !shape->is_array()) throw bad("missing shape");
    if (!offs || !offs->is_array() || offs->array.size() != 2) throw bad("missing data_offsets");
    TensorView t;
    t.name = name;
    t.file = path;
    if (dt->string == "F32") t.dtype = DType::F32;
    else if (dt->string == "F16") t.dtype = DType::F16;
    else if (dt->string == "BF16") t.dtype = DType::BF16;
    else throw EngineError(ErrorCode::UnsupportedModel, path + ": tensor " + name + " has unsupported dtype " + dt->string + " (F32, F16, BF16 are supported)");
    uint64_t numel = 1;
    for (const auto& d : shape->array) {
      if (!d.is_number() || !d.is_integer || d.integer < 0 || d.integer > (int64_t(1) << 40)) throw bad("bad dimension in shape");
      t.shape.push_back(d.integer);
      // Checked before multiplying: numel and d are each <= 2^40, so the
      // product could wrap around 2^64 (e.g. to 0) and pass the size check.
      if (d.integer != 0 && numel > (uint64_t(1) << 40) / uint64_t(d.integer)) throw bad("too many elements");
      numel *= uint64_t(d.integer);
    }
    const JsonValue& b = offs->array[0];
    const JsonValue& e = offs->array[1];
    if (!b.is_integer || !e.is_integer || b.integer < 0 || e.integer < b.integer) throw bad("bad data_offsets");
    uint64_t begin = uint64_t(b.integer), end = uint64_t(e.integer);
    if (end > data_size) throw bad("data ends at byte " + std::to_string(end) + " but the file holds " + std::to_string(data_size) + " data bytes (truncated file?)");
    if (end - begin != numel * dtype_size(t.dtype)) throw bad("byte length does not match shape and dtype");
    t.data = data_start + begin;
    t.nbytes = end - begin;
    if (tensors_.count(name)) throw bad("defined twice");
    tensors_.emplace(name, std::move(t));
  }
  files_.push_back(std::move(file));
}

const TensorView& TensorStore::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw EngineError(ErrorCode::MissingTensor, "missing tensor " + name);
  return it->second;
}

static std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::vector<float> TensorStore::load_f32(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView& t = get(name);
  if (t.shape != shape)
    throw EngineError(ErrorCode::TensorShape, "tensor " + name + " has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
  size_t n = size_t(t.numel());
  std::vector<float> out(n);
  switch (t.dtype) {
    case DType::F32: std::memcpy(out.data(), t.data, n * 4); break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); out[i] = f16_to_f32(h); }
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); out[i] = bf16_to_f32(h); }
      break;
  }
  return out;
}

}  // namespace streamsink
