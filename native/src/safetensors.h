// Reading Hugging Face safetensors checkpoints: one `model.safetensors` or
// shards listed by `model.safetensors.index.json`. Files are memory-mapped
// read-only; every header is validated against the file size (offsets in
// range, byte length == numel * dtype size, no overlap past the end) before
// any tensor byte is touched, so a truncated or hostile file gives an error
// that names the file and tensor instead of a crash.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace streamsink {

enum class DType { F32, F16, BF16 };

const char* dtype_name(DType dt);

struct TensorView {
  std::string name;
  std::string file;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside a mapping owned by the store
  size_t nbytes = 0;

  int64_t numel() const;
};

class MappedFile;

class TensorStore {
 public:
  // Opens the checkpoint in `model_dir` (single file or sharded with index).
  static std::unique_ptr<TensorStore> open(const std::string& model_dir);
  // Opens one safetensors file (used by tests and fuzzing).
  static std::unique_ptr<TensorStore> open_file(const std::string& path);
  ~TensorStore();

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;
  // Converts to fp32, checking the shape; throws MissingTensor / TensorShape.
  std::vector<float> load_f32(const std::string& name, const std::vector<int64_t>& shape) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // FNV-1a over every header (names, dtypes, shapes, offsets): identifies the checkpoint.
  uint64_t header_hash() const { return header_hash_; }

 private:
  TensorStore() = default;
  void add_file(const std::string& path);

  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView> tensors_;
  uint64_t header_hash_ = 1469598103934665603ull;
};

// Half-precision conversions, exact (round trips of representable values).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);

}  // namespace streamsink
