// See model_setup.h.
#include "dist/train/model_setup.h"

#include <algorithm>

#include "dist/io/weights_io.h"
#include "kernels/error.h"
#include "kernels/model.h"

namespace shardfit {

MemoryBudget rank_memory_budget(const Comm& comm, int64_t rows, int64_t optimizer_slots) {
  MemoryBudget budget;
  budget.rows = std::max<int64_t>(1, rows);
  budget.optimizer_slots = optimizer_slots;
  budget.ranks_sharing = comm.local_size();
  return budget;
}

void load_weights_everywhere(Comm& comm, const std::filesystem::path& path, Model& model,
                             const std::function<void()>& on_error) {
  // The broadcast needs one count on every rank: a rank that built another model is refused while every rank can
  // still agree, rather than blocking the others in a broadcast of the wrong size.
  const int64_t root_count = comm.broadcast(model.param_count(), 0);
  run_agreed(comm, [&] {
    SF_CHECK(model.param_count() == root_count,
             cat("the model has ", model.param_count(), " parameters on this rank but ", root_count, " on rank 0"),
             "every rank builds the model from the job and the data's width: do all ranks read the same data?");
    if (!comm.is_root()) return;
    try {
      load_weights(path, model);
    } catch (const Error&) {
      if (on_error) on_error();
      throw;
    }
  });
  comm.broadcast(model.parameters(), 0);
}

}  // namespace shardfit
