// The one place where the job's messages become objects: layers, loss, metrics and the model. Adding a layer
// touches three places: its proto message, its file in kernels/, its test — and one case here.
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/memory_budget.h"
#include "kernels/model.h"

namespace shardfit {

namespace proto {
class Job;
}

// Label width the model trains against: 1 (class ids) for sparse_categorical_crossentropy, else the output width.
int64_t label_dim_for(const proto::Job& job, int64_t output_dim);

// Builds the Sequential model of job.model for `input_dim` features (job.model.input_dim wins when set and must
// agree). Dense activations that oneDNN can fuse are fused; softmax / gelu, and a final sigmoid taken over by
// the loss, become Activation layers. Errors name the field, e.g. "model.layers[1].dense.units = 0: ...".
// Sizes are counted with overflow checks and the model's buffers (parameters, gradients, optimizer slots and
// activations for budget.rows rows) checked against the budget before anything is allocated: a layer too large
// for memory is an error naming it and the GiB it needs.
std::unique_ptr<Model> build_model(const proto::Job& job, int64_t input_dim, const MemoryBudget& budget = {});

}  // namespace shardfit
