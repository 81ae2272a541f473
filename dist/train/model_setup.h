// A model on every rank, set up the same way by fit and by evaluate / predict: what one rank may spend on it (its
// node's memory shared by the ranks there), and weights from a file read once, on rank 0, and broadcast. Not the
// model itself (kernels/model.h) nor the file formats (dist/io/weights_io.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "dist/comm.h"
#include "kernels/memory_budget.h"

namespace shardfit {

class Model;

// What one rank may spend on its model: the physical memory of its node shared by the ranks there
// (comm.local_size(), each holding its own copy), for passes of `rows` rows (at least 1 is counted) and
// `optimizer_slots` per-parameter state arrays (optimizer_slot_count for fit, 0 for inference).
MemoryBudget rank_memory_budget(const Comm& comm, int64_t rows, int64_t optimizer_slots);

// Collective: `model` on every rank takes the weights of `path` (an .npz or a checkpoint.pb: load_weights), read
// once: rank 0 reads the file and its parameters are broadcast, so a job of P ranks neither reads the file P times
// nor needs it visible on every node. Every rank's model must have been built alike (a rank whose parameter count
// differs from rank 0's is refused before the broadcast). Failures are agreed: every rank throws the same
// AgreedFailure. on_error, when given, runs on rank 0 when the load fails, before the error is agreed, and may throw
// a clearer Error instead (evaluate names an x of the wrong width rather than the weights).
void load_weights_everywhere(Comm& comm, const std::filesystem::path& path, Model& model,
                             const std::function<void()>& on_error = {});

}  // namespace shardfit
