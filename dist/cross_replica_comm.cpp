// See cross_replica_comm.h.
#include "dist/cross_replica_comm.h"

#include <cstdio>
#include <vector>

namespace shardfit {

void CommCrossReplicaSum::sum(std::span<double> values) {
  if (comm_.size() > 1) comm_.allreduce_sum(values);
}

bool effective_overlap(const Comm& comm, const Model& model, bool overlap) {
  if (!overlap || !model.uses_cross_replica()) return overlap;
  if (comm.is_root()) {
    std::fprintf(stderr,
                 "shardfit: warning: fit.overlap is off for this model: its synchronized BatchNormalization sums "
                 "across ranks during backward, when the overlapped reducer would be sending gradients\n");
    std::fflush(stderr);
  }
  return false;
}

void average_replica_state(Comm& comm, Model& model) {
  if (comm.size() == 1 || !model.has_replica_local_state()) return;
  const std::span<float> state = model.state();
  std::vector<double> values(state.begin(), state.end());
  comm.allreduce_sum(std::span<double>(values));
  const double ranks = comm.size();
  for (size_t i = 0; i < values.size(); ++i) state[i] = static_cast<float>(values[i] / ranks);
}

}  // namespace shardfit
