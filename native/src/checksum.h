// CRC-32 (IEEE 802.3, reflected, as zlib computes it) for session snapshots.
#pragma once
#include <cstddef>
#include <cstdint>

namespace streamsink {

uint32_t crc32(const void* data, size_t n, uint32_t seed = 0);

}  // namespace streamsink
