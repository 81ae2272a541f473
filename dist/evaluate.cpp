// Inference across ranks: evaluate (reduced sums) and predict (rows gathered to rank 0 in input order).
#include "dist/evaluate.h"

#include <algorithm>
#include <memory>

#include "dist/dataset.h"
#include "dist/npy_writer.h"
#include "dist/sharding.h"
#include "dist/weights_io.h"
#include "kernels/error.h"
#include "kernels/model_factory.h"

namespace shardfit {

namespace {

struct Loaded {
  std::unique_ptr<Dataset> data;
  std::unique_ptr<Model> model;
  LabelLayout layout = LabelLayout::kAsIs;
};

// Opens the data and builds the model with the given weights on every rank; any failure is agreed.
Loaded load_everywhere(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                       const InferenceOptions& options, bool need_labels) {
  Loaded loaded;
  std::exception_ptr error;
  try {
    SF_CHECK(!options.weights.empty(), "no weights given: expected --weights FILE.npz (written by fit's "
                                       "outputs.export_weights or ModelCheckpoint)");
    SF_CHECK(options.data.has_x(), "no input data: expected --x FILE (or data.test in the job file)");
    SF_CHECK(options.batch_size >= 1, cat("batch size ", options.batch_size, ": expected a positive integer"));
    loaded.data = std::make_unique<Dataset>(Dataset::open(options.data, job_dir, "test"));
    loaded.model = build_model(job, loaded.data->feature_dim());
    load_weights(options.weights, *loaded.model);
    if (need_labels) {
      const Model& model = *loaded.model;
      const int64_t out = model.output_dim();
      if (model.label_dim() == 1) {
        loaded.layout = loaded.data->labels_are_ids() ? LabelLayout::kAsIs : LabelLayout::kOneHotToIds;
      } else if (loaded.data->labels_are_ids() && out > 1 && job.loss() == "categorical_crossentropy") {
        loaded.layout = LabelLayout::kIdsToOneHot;
      } else {
        SF_CHECK(loaded.data->label_cols() == out, cat("test labels have ", loaded.data->label_cols(),
                                                       " values per sample but the model has ", out, " outputs"));
      }
      if (loaded.layout != LabelLayout::kOneHotToIds && (model.label_dim() == 1 || loaded.layout == LabelLayout::kIdsToOneHot)) {
        loaded.data->check_class_ids(out);
      }
    }
  } catch (...) {
    error = std::current_exception();
  }
  comm.agree(error);
  comm.check_same_everywhere("loaded weights", loaded.model->parameters());
  return loaded;
}

}  // namespace

std::map<std::string, double> evaluate(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                                       const InferenceOptions& options) {
  Loaded loaded = load_everywhere(comm, job, job_dir, options, true);
  SF_CHECK(loaded.data->label_cols() > 0, "evaluate needs labels: expected --y FILE (or a label column)");
  Model& model = *loaded.model;
  const Slice slice = slice_of(loaded.data->rows(), comm.rank(), comm.size());
  model.reserve(std::max<int64_t>(1, std::min(slice.count, options.batch_size)));
  const size_t metrics = model.metric_names().size();
  std::vector<double> sums(metrics + 2, 0.0);  // loss, metrics..., count
  std::vector<double> batch_metrics(metrics);
  std::vector<int64_t> rows(static_cast<size_t>(model.capacity()));
  for (int64_t done = 0; done < slice.count;) {
    const int64_t count = std::min(model.capacity(), slice.count - done);
    for (int64_t i = 0; i < count; ++i) rows[i] = slice.offset + done + i;
    loaded.data->gather({rows.data(), static_cast<size_t>(count)}, model.input(), model.labels(), loaded.layout,
                        model.label_dim());
    sums[0] += model.evaluate_batch(count, batch_metrics);
    for (size_t m = 0; m < metrics; ++m) sums[1 + m] += batch_metrics[m];
    sums.back() += static_cast<double>(count);
    done += count;
  }
  comm.allreduce_sum(std::span<double>(sums));
  std::map<std::string, double> values{{"loss", sums[0] / sums.back()}, {"samples", sums.back()}};
  for (size_t m = 0; m < metrics; ++m) values[model.metric_names()[m]] = sums[1 + m] / sums.back();
  return values;
}

int64_t predict(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                const InferenceOptions& options, const std::filesystem::path& output) {
  Loaded loaded = load_everywhere(comm, job, job_dir, options, false);
  Model& model = *loaded.model;
  const int64_t rows_total = loaded.data->rows();
  const Slice slice = slice_of(rows_total, comm.rank(), comm.size());
  model.reserve(std::max<int64_t>(1, std::min(slice.count, options.batch_size)));
  const int64_t out = model.output_dim();
  std::vector<float> local(static_cast<size_t>(slice.count * out));
  std::vector<int64_t> rows(static_cast<size_t>(model.capacity()));
  for (int64_t done = 0; done < slice.count;) {
    const int64_t count = std::min(model.capacity(), slice.count - done);
    for (int64_t i = 0; i < count; ++i) rows[i] = slice.offset + done + i;
    // Features only: labels, if the file has any, are not needed to predict.
    loaded.data->x().read_rows({rows.data(), static_cast<size_t>(count)}, model.input(), loaded.data->x_scale());
    const float* outputs = model.predict_batch(count);
    std::copy(outputs, outputs + count * out, local.begin() + done * out);
    done += count;
  }
  // Contiguous slices in rank order: gathering in rank order restores the input order.
  const std::vector<float> all = comm.gather_to_root(std::span<const float>(local));
  std::exception_ptr error;
  try {
    if (comm.is_root()) write_npy(output, all, {rows_total, out});
  } catch (...) {
    error = std::current_exception();
  }
  comm.agree(error);
  return rows_total;
}

}  // namespace shardfit
