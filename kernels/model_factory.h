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

// The same for data whose samples have a shape: `sample_shape` is one sample's as stored, batch axis left out, e.g.
// (28, 28) for an (N, 28, 28) IDX file (its element count is the input width). The model's input shape is
// job.model.input_shape when set (its product must be the width), else this one, except that a model whose first
// layer with weights is Dense reads each sample flat (an MLP on images, as before shapes), and that a grey image
// (h, w) read by Conv2D or pooling gets a channel axis of 1. Dense on a non-flat input is an error (Keras would apply
// it to the last axis: add Flatten), as is a model whose output is not flat.
std::unique_ptr<Model> build_model(const proto::Job& job, const Shape& sample_shape, const MemoryBudget& budget = {});

// One sample's shape from a data file's stored shape (rows first): the stored shape less its row axis, or
// (feature_dim) when that does not hold feature_dim elements (a CSV file whose label column was split off).
Shape sample_shape_of(const std::vector<int64_t>& stored_shape, int64_t feature_dim);

}  // namespace shardfit
