// A model on every rank, set up the same way by fit and by evaluate / predict: weights from a file read once, on
// rank 0, and broadcast. Not the model itself (kernels/model.h) nor the file formats (dist/io/weights_io.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "dist/comm.h"

namespace shardfit {

class Model;

// Collective: `model` on every rank takes the weights of `path` (an .npz or a checkpoint.pb: load_weights), read
// once: rank 0 reads the file and its parameters are broadcast, so a job of P ranks neither reads the file P times
// nor needs it visible on every node. Every rank's model must have been built alike (a rank whose parameter count
// differs from rank 0's is refused before the broadcast). Failures are agreed: every rank throws the same
// AgreedFailure. on_error, when given, runs on rank 0 when the load fails, before the error is agreed, and may throw
// a clearer Error instead (evaluate names an x of the wrong width rather than the weights).
void load_weights_everywhere(Comm& comm, const std::filesystem::path& path, Model& model,
                             const std::function<void()>& on_error = {});

}  // namespace shardfit
