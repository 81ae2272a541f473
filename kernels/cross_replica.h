// The one collective a layer may need: an elementwise sum over every rank, in place. kernels/ stays free of MPI;
// dist/ implements it over its communicator (dist/cross_replica_comm.h) and the model hands it to the layers that
// ask (Model::set_cross_replica). Synchronized BatchNormalization sums its batch statistics with it.
#pragma once

#include <span>

namespace shardfit {

class CrossReplicaSum {
 public:
  CrossReplicaSum() = default;
  virtual ~CrossReplicaSum() = default;
  CrossReplicaSum(const CrossReplicaSum&) = delete;
  CrossReplicaSum& operator=(const CrossReplicaSum&) = delete;

  // Collective: every rank calls it with the same count, in the same order; values becomes the sum over all ranks.
  virtual void sum(std::span<double> values) = 0;
};

}  // namespace shardfit
