// A checkpoint.pb a run could have written, for the tests of the checkpoint file (dist/io) and of its range checks
// (dist/train): epoch 2, step 4 of 10, of a 2-rank run over 75 samples in global batches of 8 (the last step 3
// samples: 2 on rank 0, 1 on rank 1), adam on kSampleParams parameters, with loss, accuracy and count per rank.
#pragma once

#include <cstdint>

#include "proto/shardfit.pb.h"

namespace shardfit {

inline constexpr int64_t kSampleParams = 6;

inline proto::Checkpoint sample_checkpoint() {
  proto::Checkpoint c;
  c.set_epoch(2);
  c.set_step_in_epoch(4);
  c.set_global_step(24);
  for (int64_t i = 0; i < kSampleParams; ++i) c.add_parameters(0.25F * static_cast<float>(i) - 0.5F);
  auto* o = c.mutable_optimizer();
  o->set_kind("adam");
  o->set_iterations(24);
  o->set_learning_rate(0.001F);
  for (const char* name : {"m", "v"}) {
    auto* slot = o->add_slots();
    slot->set_name(name);
    for (int64_t i = 0; i < kSampleParams; ++i) slot->add_values(0.01F * static_cast<float>(i));
  }
  c.mutable_history()->add_epochs()->set_epoch(0);
  c.mutable_history()->add_epochs()->set_epoch(1);
  for (double v : {3.5, 2.0, 16.0, 3.25, 1.0, 16.0}) c.add_rank_epoch_sums(v);
  c.set_world_size(2);
  c.set_job_fingerprint("the job");
  c.set_seed(1337);
  return c;
}

}  // namespace shardfit
