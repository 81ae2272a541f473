// The cross-rank sums layers ask for (kernels/cross_replica.h) over the job's communicator, and what follows from
// layers that make them: their sums keep step order with an overlapped reducer's buckets, and per-rank layer state
// is averaged before it is read. Not here: the statistics themselves (kernels/batch_norm.h).
//
// Design notes:
//  1. A synchronized BatchNormalization makes one allreduce of 2 C + 1 doubles in each training forward and one of
//     2 C in each backward, on the step's thread, in layer order, on every rank (a rank with no rows in a step
//     adds zeros: Model::forward_train / backward_train). With one rank there is nothing to sum and no MPI call.
//  2. Comm is MPI_THREAD_SERIALIZED and an overlapped gradient reducer (fit.overlap) makes its bucket allreduces on
//     its communication thread during backward, exactly when the BatchNormalization backward makes its own. So
//     once the reducer exists (route_through), a sum goes through it: during a step's backward with overlap it is
//     made by the communication thread, after the buckets already handed over, while the layer waits for it;
//     elsewhere it is made here as before (dist/gradient_reducer.h, note 13, says why every rank then makes the
//     same calls in the same order). Overlap stays on for such a model and trains bit for bit as without it; each
//     such sum waits for the buckets before it, so the overlap left is what backward computes between the sums.
//  3. BatchNormalization with synchronized: false keeps each rank's moving statistics, as Keras's MirroredStrategy
//     keeps per-replica ON_READ variables and reads their MEAN. The moving update is linear in the statistics, so
//     averaging the ranks' values in place whenever they are read (before validation at each epoch end, before
//     a checkpoint is written, at the end of fit) gives what averaging only on reads would, up to rounding, and
//     a resumed run continues from the same averaged values the interrupted one did.
#pragma once

#include <span>

#include "dist/comm.h"
#include "dist/gradient_reducer.h"
#include "kernels/cross_replica.h"
#include "kernels/model.h"

namespace shardfit {

class CommCrossReplicaSum final : public CrossReplicaSum {
 public:
  explicit CommCrossReplicaSum(Comm& comm) : comm_(comm) {}
  void sum(std::span<double> values) override;
  // From now on the sums go through the reducer of the step (design note 2); null: straight to comm again. The
  // reducer must outlive the sums made through it.
  void route_through(GradientReducer* reducer) { reducer_ = reducer; }

 private:
  Comm& comm_;
  GradientReducer* reducer_ = nullptr;
};

// Collective when the model has per-rank state (design note 3) and there is more than one rank: replaces
// model.state() by its mean over the ranks, computed in double. Otherwise nothing.
void average_replica_state(Comm& comm, Model& model);

}  // namespace shardfit
