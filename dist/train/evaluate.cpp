// Inference across ranks: evaluate (reduced sums) and predict (rows gathered to rank 0 in input order).
#include "dist/train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>

#include "dist/data_checks.h"
#include "dist/io/dataset.h"
#include "dist/io/format.h"
#include "dist/io/npy_writer.h"
#include "dist/io/npz.h"
#include "dist/io/paths.h"
#include "dist/sharding.h"
#include "dist/train/labels.h"
#include "dist/train/model_setup.h"
#include "dist/watchdog.h"
#include "kernels/error.h"
#include "kernels/model_factory.h"

namespace shardfit {

namespace {

struct Loaded {
  std::unique_ptr<Dataset> data;  // features and labels; not opened by predict when the data has no labels
  std::optional<ArrayFile> x;     // the features, whichever way they were opened
  float x_scale = 1.0F;
  std::unique_ptr<Model> model;
  LabelLayout layout = LabelLayout::kAsIs;
  std::vector<DataFile> files;  // for the agreed checks of dist/data_checks.h
};

// Labels are there: a y file, or a CSV x with a label column (which must then not be read as a feature).
bool has_labels(const proto::Dataset& data) {
  return (data.has_y() && !data.y().path().empty()) ||
         data.x().csv().label_column_case() != proto::CsvOptions::LABEL_COLUMN_NOT_SET;
}

// predict's features without labels: a Dataset insists on labels, and `predict --x X` has none to give.
void open_features_only(const proto::Dataset& data, const std::filesystem::path& job_dir, Loaded& loaded) {
  const std::filesystem::path path(data.x().path());
  loaded.x =
      ArrayFile::open(resolve_path(job_dir, path), data.x().has_format() ? data.x().format() : "", &data.x().csv());
  loaded.x_scale = data.has_x_scale() ? data.x_scale() : 1.0F;
  SF_CHECK(std::isfinite(loaded.x_scale), cat("data.test.x_scale = ", loaded.x_scale, ": expected a finite number"));
  SF_CHECK(loaded.x->rows() > 0, cat("x ", loaded.x->describe(), " has no rows: expected at least one sample"));
  SF_CHECK(loaded.x->cols() > 0, cat("x ", loaded.x->describe(), " has no features: expected at least one column"));
}

// The model is built for x's width, so an x of the wrong width makes load_weights blame the weights file ("wrong
// shapes"). When the file's first kernel differs from the model's in its input width only, name the data instead.
void explain_width_mismatch(const std::filesystem::path& weights, const Model& model, const ArrayFile& x) {
  const std::vector<WeightTensor> expected = model.get_weights();
  if (expected.empty() || expected.front().shape.size() != 2) return;
  const WeightTensor& first = expected.front();
  std::vector<NpzArray> arrays;
  try {
    arrays = read_npz(weights);
  } catch (const Error&) {
    return;  // not an .npz (a checkpoint): the load's own error says what differs
  }
  for (const NpzArray& array : arrays) {
    if (array.key != first.name || array.shape.size() != 2 || array.shape[1] != first.shape[1] ||
        array.shape[0] == first.shape[0]) {
      continue;
    }
    SF_FAIL(cat("x ", x.describe(), " has ", x.cols(), " features per row but the weights in ", weights.string(),
                " take ", array.shape[0], " ('", array.key, "' is ", shape_text(array.shape), "): expected x with ",
                array.shape[0], " columns"),
            "evaluate and predict need rows shaped like the training data's");
  }
}

// Opens the data and builds the model on every rank, with the weights read on rank 0 and broadcast; any failure is
// agreed.
Loaded load_everywhere(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                       const InferenceOptions& options, bool need_labels) {
  Loaded loaded;
  run_agreed(comm, [&] {
    SF_CHECK(!options.weights.empty(),
             "no weights given: expected --weights FILE: an .npz (fit's outputs.export_weights or "
             "ModelCheckpoint) or a checkpoint.pb");
    SF_CHECK(options.data.has_x(), "no input data: expected --x FILE (or data.test in the job file)");
    SF_CHECK(options.batch_size >= 1, cat("batch size ", options.batch_size, ": expected a positive integer"));
    if (need_labels || has_labels(options.data)) {
      loaded.data = std::make_unique<Dataset>(Dataset::open(options.data, job_dir, "test"));
      loaded.x = loaded.data->x();
      loaded.x_scale = loaded.data->x_scale();
    } else {
      open_features_only(options.data, job_dir, loaded);
    }
    // Built for the rows each pass takes (the reserve in evaluate / predict) and this node's share of memory.
    const int64_t rows = slice_of(loaded.x->rows(), comm.rank(), comm.size()).count;
    loaded.model = build_model(job, sample_shape_of(loaded.x->shape(), loaded.x->cols()),
                               rank_memory_budget(comm, std::min(rows, options.batch_size), 0));
  });
  load_weights_everywhere(comm, options.weights, *loaded.model,
                          [&] { explain_width_mismatch(options.weights, *loaded.model, *loaded.x); });
  if (need_labels) {
    run_agreed(comm, [&] {
      loaded.layout = prepare_labels(*loaded.data, *loaded.model, job.loss(), "test", comm.rank(), comm.size());
    });
  }
  if (loaded.data) {
    add_data_files(loaded.files, *loaded.data, "test");
  } else {
    loaded.files.push_back({"test x", *loaded.x});
  }
  agree_on_data_files(comm, loaded.files);
  check_data_values(comm, loaded.files);
  return loaded;
}

}  // namespace

std::map<std::string, double> evaluate_rows(Comm& comm, Model& model, const Dataset& data, LabelLayout layout,
                                            int64_t first_row, int64_t row_count) {
  const Slice slice = slice_of(row_count, comm.rank(), comm.size());
  const size_t metrics = model.metric_names().size();
  std::vector<double> sums(metrics + 2, 0.0);  // loss, metrics..., count: one reduction
  std::vector<double> batch_metrics(metrics);
  std::vector<int64_t> rows(static_cast<size_t>(model.capacity()));
  for (int64_t done = 0; done < slice.count;) {
    progress_beacon().tick();  // a validation pass may be long; each batch is progress for the watchdog
    const int64_t count = std::min(model.capacity(), slice.count - done);
    for (int64_t i = 0; i < count; ++i) rows[i] = first_row + slice.offset + done + i;
    data.gather({rows.data(), static_cast<size_t>(count)}, model.input(), model.labels(), layout, model.label_dim());
    sums[0] += naming_rows(data, {rows.data(), static_cast<size_t>(count)},
                           [&] { return model.evaluate_batch(count, batch_metrics); });
    for (size_t m = 0; m < metrics; ++m) sums[1 + m] += batch_metrics[m];
    sums.back() += static_cast<double>(count);
    done += count;
  }
  comm.allreduce_sum(std::span<double>(sums));
  std::map<std::string, double> values{{"loss", sums[0] / sums.back()}, {"samples", sums.back()}};
  for (size_t m = 0; m < metrics; ++m) values[model.metric_names()[m]] = sums[1 + m] / sums.back();
  return values;
}

std::map<std::string, double> evaluate(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                                       const InferenceOptions& options) {
  Loaded loaded = load_everywhere(comm, job, job_dir, options, true);
  SF_CHECK(loaded.data->label_cols() > 0, "evaluate needs labels: expected --y FILE (or a label column)");
  Model& model = *loaded.model;
  const int64_t rows = loaded.data->rows();
  model.reserve(std::max<int64_t>(1, std::min(slice_of(rows, comm.rank(), comm.size()).count, options.batch_size)));
  std::map<std::string, double> values = evaluate_rows(comm, model, *loaded.data, loaded.layout, 0, rows);
  check_data_unchanged(comm, loaded.files);
  return values;
}

int64_t predict(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir,
                const InferenceOptions& options, const std::filesystem::path& output) {
  Loaded loaded = load_everywhere(comm, job, job_dir, options, false);
  Model& model = *loaded.model;
  const int64_t rows_total = loaded.x->rows();
  const Slice slice = slice_of(rows_total, comm.rank(), comm.size());
  model.reserve(std::max<int64_t>(1, std::min(slice.count, options.batch_size)));
  const int64_t out = model.output_dim();
  std::vector<float> local(static_cast<size_t>(slice.count * out));
  std::vector<int64_t> rows(static_cast<size_t>(model.capacity()));
  for (int64_t done = 0; done < slice.count;) {
    const int64_t count = std::min(model.capacity(), slice.count - done);
    for (int64_t i = 0; i < count; ++i) rows[i] = slice.offset + done + i;
    // Features only: labels, if the file has any, are not needed to predict.
    loaded.x->read_rows({rows.data(), static_cast<size_t>(count)}, model.input(), loaded.x_scale);
    const float* outputs = model.predict_batch(count);
    std::copy(outputs, outputs + count * out, local.begin() + done * out);
    done += count;
  }
  // Contiguous slices in rank order: gathering in rank order restores the input order.
  const std::vector<float> all = comm.gather_to_root(std::span<const float>(local));
  check_data_unchanged(comm, loaded.files);  // no predictions written from changed data
  run_agreed(comm, [&] {
    if (comm.is_root()) write_npy(output, all, {rows_total, out});
  });
  return rows_total;
}

}  // namespace shardfit
