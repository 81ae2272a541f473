// Metrics as (sum, count) over one rank's samples, reduced globally by the caller. Keras's names and rules:
// "accuracy" is binary when the output has one unit (p > 0.5), sparse when labels are class ids, else argmax vs
// argmax; "mae" is the mean absolute error (per sample: mean over the outputs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace shardfit {

struct MetricArgs {
  const float* outputs = nullptr;  // (n, dim)
  const float* labels = nullptr;   // (n, label_dim): class ids (label_dim 1, dim > 1) or targets (label_dim == dim)
  int64_t n = 0;
  int64_t dim = 0;
  int64_t label_dim = 0;
};

class Metric {
 public:
  virtual ~Metric() = default;
  // The name the user typed ("accuracy", "mae"): the History key.
  virtual std::string name() const = 0;
  // Sum over the n samples; the count is n.
  virtual double sum(const MetricArgs& args) const = 0;
};

// Chooses the variant from the output width and the label layout. Throws Error naming unknown metrics.
std::unique_ptr<Metric> make_metric(std::string_view name, int64_t output_dim, int64_t label_dim);

}  // namespace shardfit
