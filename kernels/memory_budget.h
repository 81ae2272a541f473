// Sizes of the model's buffers, counted with overflow checks, and whether they fit this machine's memory. A layer
// too large for memory is refused when the model is built, naming the layer and the GiB it needs, rather than in
// the allocator (or as a segfault after an unchecked one).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace shardfit {

// a * b and a + b for counts (both >= 0), or nullopt when the result does not fit int64.
std::optional<int64_t> checked_mul(int64_t a, int64_t b);
std::optional<int64_t> checked_add(int64_t a, int64_t b);

// The machine's physical memory in bytes (sysconf), or 0 when it cannot be told.
uint64_t physical_memory_bytes();

// The peak resident set size of this process so far (getrusage RUSAGE_SELF ru_maxrss), in bytes; 0 when it cannot
// be told. What `top` calls RES at its highest: the memory a rank actually held, not what it mapped.
int64_t peak_rss_bytes();

// "1.5 GiB", "242 GiB", "12.0 MiB": a byte count as people read it.
std::string bytes_text(double bytes);

// What one rank may spend on the model, and what it spends it on beyond the parameters.
struct MemoryBudget {
  int64_t rows = 1;               // batch rows per forward / backward pass on this rank
  int64_t optimizer_slots = 0;    // per-parameter state arrays (Adam: 2)
  uint64_t available_bytes = 0;   // 0: physical_memory_bytes() / ranks_sharing
  int ranks_sharing = 1;          // ranks on this machine (each holds its own copy of the model)
  bool bf16_weight_copy = false;  // mixed_bfloat16: a bf16 copy of the parameters too (half a float each)
};

// Bytes of the model's buffers on one rank: parameters, gradients and optimizer slots (params * (2 + slots)),
// and the bf16 weight copy when the budget has one, plus `floats_per_row` activation floats for each of
// budget.rows rows; nullopt on overflow.
std::optional<int64_t> model_bytes(int64_t params, int64_t floats_per_row, const MemoryBudget& budget);

// The bytes the budget allows: available_bytes, or the physical memory shared by ranks_sharing; 0 when unknown.
uint64_t allowed_bytes(const MemoryBudget& budget);

}  // namespace shardfit
