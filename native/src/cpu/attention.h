// Sink+window attention on the CPU, the reference the CUDA kernel is tested
// against. For one session, one layer and one KV head, rows (tokens) are
// processed in order; for token t:
//   1. its pre-RoPE key and value are written to slot_of(t), evicting the
//      token W positions back (never a sink);
//   2. every entry i of C_t is read from entry_slot(t, i) and its key rotated
//      to in-cache position i (no stored key is ever re-rotated in place);
//   3. each query head of the group is rotated to position |C_t| - 1 and
//      attends with softmax(q.k * scale + alibi), ALiBi using the in-cache
//      distance (|C_t| - 1 - i).
// Writing and attending token by token is what makes a chunk equal to the
// same tokens appended one at a time (a later token of the chunk may evict an
// entry an earlier one must still see).
#pragma once
#include <cstdint>
#include <vector>

namespace streamsink {

class KvCache;
class RopeTable;
struct ModelConfig;

struct AttentionScratch {
  std::vector<float> rotated_keys;  // (entries, head_dim)
  std::vector<float> scores;        // (entries)
  std::vector<float> query;         // (head_dim)
};

// qkv: (rows, qkv_dim) canonical [q heads | k heads | v heads]
// out: (rows, heads * head_dim)
// alibi_slopes: (heads) or nullptr for rotary models; rope: nullptr for ALiBi models.
void attend_rows(const ModelConfig& cfg, const RopeTable* rope, const float* alibi_slopes, KvCache& cache,
                 int layer, int kv_head, int64_t first_token, int64_t rows, const float* qkv, float* out,
                 AttentionScratch& scratch);

}  // namespace streamsink
