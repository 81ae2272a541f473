// `shardfit evaluate` and `shardfit predict`: inference over a data set sharded like validation (each rank a
// contiguous slice), with the model's weights loaded from an .npz. Results do not depend on the rank count.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

struct InferenceOptions {
  std::filesystem::path weights;  // .npz or checkpoint.pb (required), relative to the working directory
  proto::Dataset data;            // what to read: --x/--y, else the job's data.test
  int64_t batch_size = 256;       // rows per forward pass on a rank
};

class Dataset;
class Model;
enum class LabelLayout;

// Collective: the loss and metric means over rows [first_row, first_row + row_count) of `data`, each rank taking
// its contiguous slice in chunks of at most model.capacity() rows, every row counted once:
// {"loss": ..., "<metric>": ..., "samples": row_count}. Shared by fit's validation and `shardfit evaluate`.
std::map<std::string, double> evaluate_rows(Comm& comm, Model& model, const Dataset& data, LabelLayout layout,
                                            int64_t first_row, int64_t row_count);

// Loss and metrics over the data set, reduced over ranks: {"loss": ..., "accuracy": ..., "samples": N}.
std::map<std::string, double> evaluate(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                                       const InferenceOptions& options);

// The model's outputs for every row, in input order, gathered on rank 0 and written there as float32 .npy of
// shape (rows, outputs). Returns the row count.
int64_t predict(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                const InferenceOptions& options, const std::filesystem::path& output);

}  // namespace shardfit
