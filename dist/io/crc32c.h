// CRC-32C (Castagnoli, the polynomial of iSCSI, ext4 and SSE4.2's crc32 instruction): the integrity check of
// checkpoint files. Detects every single-bit flip and every burst up to 32 bits; not a defence against an
// adversary, which a checkpoint on the job's own disk does not need.
#pragma once

#include <cstdint>
#include <string_view>

namespace shardfit {

// crc32c("123456789") == 0xE3069283 (the standard check value). `crc` continues an earlier result.
uint32_t crc32c(std::string_view bytes, uint32_t crc = 0);

}  // namespace shardfit
