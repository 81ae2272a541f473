// Overflow-checked size arithmetic and the machine's memory, for the model's up-front memory check.
#include "kernels/memory_budget.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

namespace shardfit {

std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t product = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t sum = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &sum)) return std::nullopt;
  return sum;
}

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_bytes = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_bytes <= 0) return 0;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_bytes);
}

int64_t peak_rss_bytes() {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports kibibytes
}

std::string bytes_text(double bytes) {
  constexpr double kMiB = 1024.0 * 1024.0;
  constexpr double kGiB = 1024.0 * kMiB;
  char text[64];
  if (bytes >= kGiB) {
    std::snprintf(text, sizeof text, bytes >= 100 * kGiB ? "%.0f GiB" : "%.1f GiB", bytes / kGiB);
  } else {
    std::snprintf(text, sizeof text, "%.1f MiB", bytes / kMiB);
  }
  return text;
}

std::optional<int64_t> model_bytes(int64_t params, int64_t floats_per_row, const MemoryBudget& budget) {
  const auto per_param = checked_add(2, budget.optimizer_slots);  // parameters, gradients, slots
  if (!per_param) return std::nullopt;
  const auto slots = checked_mul(params, *per_param);
  const auto state = slots ? checked_add(*slots, budget.bf16_weight_copy ? params / 2 + params % 2 : 0) : slots;
  const auto activations = checked_mul(floats_per_row, budget.rows);
  if (!state || !activations) return std::nullopt;
  const auto floats = checked_add(*state, *activations);
  if (!floats) return std::nullopt;
  return checked_mul(*floats, static_cast<int64_t>(sizeof(float)));
}

uint64_t allowed_bytes(const MemoryBudget& budget) {
  if (budget.available_bytes != 0) return budget.available_bytes;
  return physical_memory_bytes() / static_cast<uint64_t>(budget.ranks_sharing > 0 ? budget.ranks_sharing : 1);
}

}  // namespace shardfit
