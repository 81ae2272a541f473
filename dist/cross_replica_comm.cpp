// See cross_replica_comm.h.
#include "dist/cross_replica_comm.h"

#include <vector>

namespace shardfit {

void CommCrossReplicaSum::sum(std::span<double> values) {
  if (comm_.size() == 1) return;
  if (reducer_ != nullptr) {
    reducer_->sum_across_ranks(values);
  } else {
    comm_.allreduce_sum(values);
  }
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
