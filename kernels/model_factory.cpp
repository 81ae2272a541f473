// Job messages -> layers, loss, metrics, model. Validation of the model part of a job lives here too.
#include "kernels/model_factory.h"

#include <array>
#include <cmath>
#include <optional>

#include "kernels/activation.h"
#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "kernels/dense.h"
#include "kernels/dropout.h"
#include "kernels/error.h"
#include "kernels/memory_budget.h"
#include "kernels/pooling.h"
#include "kernels/precision.h"
#include "kernels/reshape.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

namespace {

// The activations Dense and Conv2D fuse as a oneDNN post-op; the rest become Activation layers.
bool fusable_activation(ActivationKind kind) {
  return kind == ActivationKind::kLinear || kind == ActivationKind::kRelu || kind == ActivationKind::kSigmoid ||
         kind == ActivationKind::kTanh;
}

// Parses a name-valued field (or builds what a field describes), prefixing any error with where it was found and
// keeping its hint.
template <typename Parse>
auto parse_field(const std::string& field, const std::string& value, Parse parse) {
  try {
    return parse(value);
  } catch (const Error& e) {
    SF_FAIL(cat(field, ": ", e.what()), e.hint());
  }
}

// One layer's share of the model's memory, for the up-front check.
struct LayerSize {
  std::string label;  // "dense_0 (units 1000000000)"
  std::string field;  // "model.layers[0].dense.units"
  int64_t params = 0;
  int64_t floats_per_row = 0;  // its output, output gradient and scratch: 3 x width
};

// Counts every buffer Model and Optimizer will allocate before any of them is, so a model too large for this
// machine fails here, naming the layer that takes the most, instead of in (or after) the allocator.
void check_memory(const std::vector<LayerSize>& layers, int64_t extra_floats_per_row, const MemoryBudget& budget) {
  int64_t params = 0;
  int64_t per_row = extra_floats_per_row;
  const LayerSize* largest = nullptr;
  double largest_bytes = -1.0;
  for (const LayerSize& layer : layers) {
    const auto bytes = model_bytes(layer.params, layer.floats_per_row, budget);
    const auto total_params = checked_add(params, layer.params);
    const auto total_per_row = checked_add(per_row, layer.floats_per_row);
    SF_CHECK(bytes && total_params && total_per_row,
             cat(layer.label, " needs more memory than a 64-bit byte count holds (", layer.params, " parameters and ",
                 layer.floats_per_row, " activations per row): expected a layer that fits ", "in memory"),
             cat("make ", layer.field, " smaller"));
    params = *total_params;
    per_row = *total_per_row;
    if (static_cast<double>(*bytes) > largest_bytes) {
      largest_bytes = static_cast<double>(*bytes);
      largest = &layer;
    }
  }
  const uint64_t allowed = allowed_bytes(budget);
  const auto total = model_bytes(params, per_row, budget);
  if (largest == nullptr || allowed == 0 || (total && static_cast<uint64_t>(*total) <= allowed)) return;
  const std::string where = budget.available_bytes != 0 ? "the memory allowed"
                            : budget.ranks_sharing > 1
                                ? cat("this machine's memory shared by ", budget.ranks_sharing, " ranks")
                                : "this machine's memory";
  const double param_bytes =
      static_cast<double>(largest->params) * static_cast<double>(2 + budget.optimizer_slots) * sizeof(float);
  SF_FAIL(
      cat(largest->label, " needs ", bytes_text(param_bytes), " of parameters, gradients and optimizer state (",
          largest->params, " parameters), and the model ",
          total ? bytes_text(static_cast<double>(*total)) : std::string("more than 8 EiB"), " in all for ", budget.rows,
          " rows per step on each rank: expected at most ", bytes_text(static_cast<double>(allowed)), " (", where, ")"),
      cat("make ", largest->field, " smaller, or the batch, or run fewer ranks per machine"));
}

// A Keras size pair ((height, width)) from a repeated field: none gives `fallback`, one value is both.
std::array<int64_t, 2> size_pair(const std::string& field, const google::protobuf::RepeatedField<int64_t>& values,
                                 std::array<int64_t, 2> fallback) {
  SF_CHECK(values.size() <= 2, cat(field, " has ", values.size(), " values: expected one or two (height, width)"));
  if (values.empty()) return fallback;
  const std::array<int64_t, 2> pair{values[0], values[values.size() - 1]};
  SF_CHECK(pair[0] > 0 && pair[1] > 0, cat(field, " = (", pair[0], ", ", pair[1], "): expected positive sizes"));
  return pair;
}

bool same_padding(const std::string& field, bool has, const std::string& value) {
  if (!has || value == "valid") return false;
  SF_CHECK(value == "same", cat(field, " = '", value, "': expected \"valid\" or \"same\""));
  return true;
}

// The model's input shape (model_factory.h, build_model): the job's input_shape, else the data's, flat for a
// model whose first layer with weights is Dense, with a channel axis of 1 added to a grey image that Conv2D or
// pooling reads.
Shape model_input_shape(const proto::Model& config, const Shape& sample_shape) {
  const int64_t width = element_count(sample_shape);
  if (config.input_shape_size() > 0) {
    Shape shape(config.input_shape().begin(), config.input_shape().end());
    for (const int64_t d : shape) {
      SF_CHECK(d > 0, cat("model.input_shape = ", batch_shape_text(shape), ": expected positive sizes"));
    }
    SF_CHECK(element_count(shape) == width,
             cat("model.input_shape = ", batch_shape_text(shape), " holds ", element_count(shape),
                 " features per sample but the data has ", width),
             "fix model.input_shape or the data file");
    return shape;
  }
  for (const auto& layer : config.layers()) {
    switch (layer.kind_case()) {
      case proto::Layer::kActivation:
      case proto::Layer::kDropout:
      case proto::Layer::kBatchNormalization:
        continue;  // element-wise: the next layer decides
      case proto::Layer::kConv2D:
      case proto::Layer::kMaxPooling2D:
      case proto::Layer::kAveragePooling2D:
      case proto::Layer::kGlobalAveragePooling2D:
        if (sample_shape.size() == 2) return {sample_shape[0], sample_shape[1], 1};
        return sample_shape;
      case proto::Layer::kFlatten:
      case proto::Layer::kReshape:
        return sample_shape;
      default:
        return {width};
    }
  }
  return {width};
}

// Keras's defaults; every error names the field and the value.
BatchNormalization::Options batch_norm_options(const proto::BatchNormalization& b, const std::string& field) {
  SF_CHECK(!b.has_axis() || b.axis() == -1,
           cat(field, ".axis = ", b.axis(), ": expected -1 (the last axis, channels last): the only one supported"));
  BatchNormalization::Options options;
  if (b.has_momentum()) options.momentum = b.momentum();
  if (b.has_epsilon()) options.epsilon = b.epsilon();
  SF_CHECK(options.momentum >= 0.0F && options.momentum < 1.0F,
           cat(field, ".momentum = ", options.momentum, ": expected 0 <= momentum < 1 (Keras's default 0.99)"));
  SF_CHECK(options.epsilon > 0.0F && std::isfinite(options.epsilon),
           cat(field, ".epsilon = ", options.epsilon, ": expected a number > 0 (Keras's default 0.001)"));
  options.center = !b.has_center() || b.center();
  options.scale = !b.has_scale() || b.scale();
  options.synchronized = !b.has_synchronized() || b.synchronized();
  auto initializer = [&](const char* name, bool has, const std::string& value, const char* fallback) {
    return parse_field(cat(field, ".", name), has ? value : fallback, parse_initializer);
  };
  options.beta_initializer = initializer("beta_initializer", b.has_beta_initializer(), b.beta_initializer(), "zeros");
  options.gamma_initializer =
      initializer("gamma_initializer", b.has_gamma_initializer(), b.gamma_initializer(), "ones");
  options.moving_mean_initializer =
      initializer("moving_mean_initializer", b.has_moving_mean_initializer(), b.moving_mean_initializer(), "zeros");
  options.moving_variance_initializer = initializer("moving_variance_initializer", b.has_moving_variance_initializer(),
                                                    b.moving_variance_initializer(), "ones");
  return options;
}

}  // namespace

Shape sample_shape_of(const std::vector<int64_t>& stored_shape, int64_t feature_dim) {
  if (stored_shape.size() >= 2) {
    Shape sample(stored_shape.begin() + 1, stored_shape.end());
    if (element_count(sample) == feature_dim) return sample;
  }
  return {feature_dim};
}

int64_t label_dim_for(const proto::Job& job, int64_t output_dim) {
  return job.loss() == "sparse_categorical_crossentropy" ? 1 : output_dim;
}

std::unique_ptr<Model> build_model(const proto::Job& job, int64_t input_dim, const MemoryBudget& budget) {
  return build_model(job, Shape{input_dim}, budget);
}

std::unique_ptr<Model> build_model(const proto::Job& job, const Shape& sample_shape, const MemoryBudget& budget) {
  const auto& config = job.model();
  const int64_t input_dim = element_count(sample_shape);
  if (config.has_input_dim()) {
    SF_CHECK(
        config.input_dim() == input_dim,
        cat("model.input_dim = ", config.input_dim(), " but the training data has ", input_dim, " features per sample"),
        "remove model.input_dim (it is taken from the data) or fix the data file");
  }
  SF_CHECK(input_dim > 0, cat("expected at least one input feature, got ", input_dim));
  SF_CHECK(config.layers_size() > 0,
           "model.layers is empty: expected at least one layer, e.g. layers { dense { units: 10 } }");
  SF_CHECK(!job.loss().empty(),
           "loss is not set: expected one of mse, mae, binary_crossentropy, "
           "categorical_crossentropy, sparse_categorical_crossentropy");
  std::unique_ptr<Loss> loss = parse_field("loss", job.loss(), [](const std::string& v) { return make_loss(v); });

  std::string policy_warning;
  const DtypePolicy policy = runnable_dtype_policy(
      parse_field("model.dtype_policy", config.has_dtype_policy() ? config.dtype_policy() : "float32",
                  parse_dtype_policy),
      cpu_has_bf16(), &policy_warning);

  const Shape input_shape = model_input_shape(config, sample_shape);
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<LayerSize> sizes;
  Shape shape = input_shape;  // one sample's, as the layers so far give it
  int64_t width = input_dim;  // its element count
  const int count = config.layers_size();
  bool relu_to_next = false;  // this Conv2D's relu runs in the max pooling after it
  for (int i = 0; i < count; ++i) {
    const bool relu_from_previous = relu_to_next;
    relu_to_next = false;
    const auto& spec = config.layers(i);
    const std::string field = cat("model.layers[", i, "]");
    const bool last = i + 1 == count;
    switch (spec.kind_case()) {
      case proto::Layer::kDense: {
        const auto& d = spec.dense();
        const std::string name = spec.has_name() ? spec.name() : cat("dense_", i);
        SF_CHECK(shape.size() == 1,
                 cat(field, ".dense: its input ", batch_shape_text(shape),
                     " is not flat: expected (None, features) (Keras would apply Dense to the last axis alone)"),
                 cat("add layers { flatten { } } before ", field));
        SF_CHECK(d.units() > 0, cat(field, ".dense.units = ", d.units(), ": expected a positive integer"));
        const ActivationKind act = parse_field(cat(field, ".dense.activation"),
                                               d.has_activation() ? d.activation() : "linear", parse_activation);
        Dense::Options options;
        options.use_bias = !d.has_use_bias() || d.use_bias();
        options.kernel_initializer =
            parse_field(cat(field, ".dense.kernel_initializer"),
                        d.has_kernel_initializer() ? d.kernel_initializer() : "glorot_uniform", parse_initializer);
        options.bias_initializer =
            parse_field(cat(field, ".dense.bias_initializer"),
                        d.has_bias_initializer() ? d.bias_initializer() : "zeros", parse_initializer);
        // The final activation stays a layer of its own when the loss computes through it from the logits.
        const bool separate =
            !fusable_activation(act) || (last && act != ActivationKind::kLinear && loss->fuses_with(act));
        options.activation = separate ? ActivationKind::kLinear : act;
        options.bf16 = policy == DtypePolicy::kMixedBfloat16;
        const std::string label = cat(name, " (units ", d.units(), ")");
        const auto kernel = checked_mul(width, d.units());
        const auto params = kernel ? checked_add(*kernel, options.use_bias ? d.units() : 0) : std::nullopt;
        // Under bf16 a plan also holds bf16 copies of its x and dz: half a float each per row.
        const int64_t bf16_copies = policy == DtypePolicy::kMixedBfloat16 ? (width + d.units() + 1) / 2 : 0;
        const auto floats = checked_mul(d.units(), separate ? 6 : 3);
        const auto per_row = floats ? checked_add(*floats, bf16_copies) : floats;
        SF_CHECK(params && per_row,
                 cat(label, " would have ", width, " x ", d.units(),
                     " parameters, more than a 64-bit count holds: expected a layer that fits in memory"),
                 cat("make ", field, ".dense.units smaller"));
        sizes.push_back({label, cat(field, ".dense.units"), *params, *per_row});
        layers.push_back(std::make_unique<Dense>(name, width, d.units(), options));
        width = d.units();
        shape = {width};
        if (separate) layers.push_back(std::make_unique<Activation>(name + "_" + activation_name(act), width, act));
        break;
      }
      case proto::Layer::kActivation: {
        const ActivationKind act =
            parse_field(cat(field, ".activation.activation"), spec.activation().activation(), parse_activation);
        SF_CHECK(act != ActivationKind::kSoftmax || shape.size() == 1,
                 cat(field, ".activation: softmax over the input ", batch_shape_text(shape),
                     ": expected a flat input (None, features); shardfit's softmax takes the whole sample"),
                 cat("add layers { flatten { } } before ", field));
        layers.push_back(
            std::make_unique<Activation>(spec.has_name() ? spec.name() : cat("activation_", i), width, act));
        layers.back()->set_elementwise_shape(shape);
        sizes.push_back({layers.back()->name(), field, 0, 3 * width});  // width * 6 was checked by its Dense
        break;
      }
      case proto::Layer::kDropout: {
        const float rate = spec.dropout().rate();
        SF_CHECK(rate >= 0.0F && rate < 1.0F, cat(field, ".dropout.rate = ", rate, ": expected 0 <= rate < 1"));
        layers.push_back(std::make_unique<Dropout>(spec.has_name() ? spec.name() : cat("dropout_", i), width, rate,
                                                   static_cast<uint64_t>(i)));
        layers.back()->set_elementwise_shape(shape);
        sizes.push_back({layers.back()->name(), field, 0, 3 * width});
        break;
      }
      case proto::Layer::kFlatten: {
        layers.push_back(std::make_unique<Flatten>(spec.has_name() ? spec.name() : cat("flatten_", i), shape));
        shape = layers.back()->output_shape();
        sizes.push_back({layers.back()->name(), field, 0, 3 * width});
        break;
      }
      case proto::Layer::kReshape: {
        const auto& target = spec.reshape().target_shape();
        const Shape resolved = parse_field(cat(field, ".reshape.target_shape"), "", [&](const std::string&) {
          return resolve_target_shape(Shape(target.begin(), target.end()), width);
        });
        layers.push_back(
            std::make_unique<Reshape>(spec.has_name() ? spec.name() : cat("reshape_", i), shape, resolved));
        shape = resolved;
        sizes.push_back({layers.back()->name(), field, 0, 3 * width});
        break;
      }
      case proto::Layer::kConv2D: {
        const auto& c = spec.conv2d();
        const std::string name = spec.has_name() ? spec.name() : cat("conv2d_", i);
        SF_CHECK(c.filters() > 0, cat(field, ".conv2d.filters = ", c.filters(), ": expected a positive integer"));
        SF_CHECK(c.kernel_size_size() > 0,
                 cat(field, ".conv2d.kernel_size is not set: expected one or two sizes, e.g. kernel_size: 3"));
        const ActivationKind act = parse_field(cat(field, ".conv2d.activation"),
                                               c.has_activation() ? c.activation() : "linear", parse_activation);
        SF_CHECK(act != ActivationKind::kSoftmax,
                 cat(field,
                     ".conv2d.activation = 'softmax': expected an element-wise activation (shardfit's softmax "
                     "takes a flat sample)"),
                 "use a Dense layer with softmax after Flatten");
        Conv2D::Options options;
        options.filters = c.filters();
        options.kernel_size = size_pair(cat(field, ".conv2d.kernel_size"), c.kernel_size(), {0, 0});
        options.strides = size_pair(cat(field, ".conv2d.strides"), c.strides(), {1, 1});
        options.dilation_rate = size_pair(cat(field, ".conv2d.dilation_rate"), c.dilation_rate(), {1, 1});
        options.same_padding = same_padding(cat(field, ".conv2d.padding"), c.has_padding(), c.padding());
        options.use_bias = !c.has_use_bias() || c.use_bias();
        options.kernel_initializer =
            parse_field(cat(field, ".conv2d.kernel_initializer"),
                        c.has_kernel_initializer() ? c.kernel_initializer() : "glorot_uniform", parse_initializer);
        options.bias_initializer =
            parse_field(cat(field, ".conv2d.bias_initializer"),
                        c.has_bias_initializer() ? c.bias_initializer() : "zeros", parse_initializer);
        const bool separate = !fusable_activation(act);
        options.activation = separate ? ActivationKind::kLinear : act;
        // relu then max pooling: the relu runs after the pooling, on a quarter of the values, and the pooling's
        // backward sums this layer's bias gradient (kernels/pooling.h: the same values, and why it is faster).
        relu_to_next = act == ActivationKind::kRelu && i + 1 < count && config.layers(i + 1).has_max_pooling2d();
        if (relu_to_next) {
          options.activation = ActivationKind::kLinear;
          options.bias_gradient_by_consumer = options.use_bias;
        }
        options.bf16 = policy == DtypePolicy::kMixedBfloat16;
        const Shape out = parse_field(
            field + ".conv2d", "", [&](const std::string&) { return Conv2D::output_shape_for(name, shape, options); });
        const auto field_count = checked_mul(options.kernel_size[0], options.kernel_size[1]);
        const auto fan_in = field_count ? checked_mul(*field_count, shape[2]) : std::nullopt;
        const auto kernel = fan_in ? checked_mul(*fan_in, c.filters()) : std::nullopt;
        const auto params = kernel ? checked_add(*kernel, options.use_bias ? c.filters() : 0) : std::nullopt;
        // Under bf16 a plan also holds bf16 copies of its x and dz: half a float each per row.
        const int64_t bf16_copies = policy == DtypePolicy::kMixedBfloat16 ? (width + element_count(out) + 1) / 2 : 0;
        const auto floats = checked_mul(element_count(out), separate ? 6 : 3);
        const auto per_row = floats ? checked_add(*floats, bf16_copies) : floats;
        const std::string label = cat(name, " (filters ", c.filters(), ")");
        SF_CHECK(params && per_row,
                 cat(label, " would have more parameters or activations than a 64-bit count holds: expected a layer ",
                     "that fits in memory"),
                 cat("make ", field, ".conv2d.kernel_size or filters smaller"));
        sizes.push_back({label, cat(field, ".conv2d.filters"), *params, *per_row});
        layers.push_back(std::make_unique<Conv2D>(name, shape, options));
        shape = out;
        width = element_count(out);
        if (separate) {
          layers.push_back(std::make_unique<Activation>(name + "_" + activation_name(act), width, act));
          layers.back()->set_elementwise_shape(shape);
        }
        break;
      }
      case proto::Layer::kMaxPooling2D:
      case proto::Layer::kAveragePooling2D:
      case proto::Layer::kGlobalAveragePooling2D: {
        Pooling2D::Options options;
        std::string prefix;
        if (spec.has_global_average_pooling2d()) {
          options.kind = Pooling2D::Kind::kGlobalAverage;
          prefix = "global_average_pooling2d";
        } else {
          const bool max = spec.has_max_pooling2d();
          options.kind = max ? Pooling2D::Kind::kMax : Pooling2D::Kind::kAverage;
          prefix = max ? "max_pooling2d" : "average_pooling2d";
          const auto& pool_size = max ? spec.max_pooling2d().pool_size() : spec.average_pooling2d().pool_size();
          const auto& strides = max ? spec.max_pooling2d().strides() : spec.average_pooling2d().strides();
          const bool has_padding = max ? spec.max_pooling2d().has_padding() : spec.average_pooling2d().has_padding();
          const std::string& padding = max ? spec.max_pooling2d().padding() : spec.average_pooling2d().padding();
          options.pool_size = size_pair(cat(field, ".", prefix, ".pool_size"), pool_size, {2, 2});
          options.strides = size_pair(cat(field, ".", prefix, ".strides"), strides, options.pool_size);
          options.same_padding = same_padding(cat(field, ".", prefix, ".padding"), has_padding, padding);
          options.relu = max && relu_from_previous;
        }
        const std::string name = spec.has_name() ? spec.name() : cat(prefix, "_", i);
        const Shape out = parse_field(cat(field, ".", prefix), "", [&](const std::string&) {
          return Pooling2D::output_shape_for(name, shape, options);
        });
        layers.push_back(std::make_unique<Pooling2D>(name, shape, options));
        shape = out;
        width = element_count(out);
        // Its output, output gradient and scratch, and max pooling's workspace (at most one int per output).
        sizes.push_back({name, field, 0, 4 * width});
        break;
      }
      case proto::Layer::kBatchNormalization: {
        const std::string name = spec.has_name() ? spec.name() : cat("batch_normalization_", i);
        // Channels last, as Keras's axis -1: a Dense's units, or an image's channels (then every position of a
        // sample is a row of the statistics).
        const int64_t channels = shape.back();
        layers.push_back(std::make_unique<BatchNormalization>(
            name, width, channels, batch_norm_options(spec.batch_normalization(), cat(field, ".batch_normalization"))));
        layers.back()->set_elementwise_shape(shape);
        // Its output, output gradient and scratch per row, as every layer; its parameters and state are 4 C.
        sizes.push_back({layers.back()->name(), field, 4 * channels, 3 * width});
        break;
      }
      case proto::Layer::KIND_NOT_SET:
        SF_FAIL(cat(field,
                    " has no kind: expected one of dense { ... }, activation { ... }, dropout { ... }, flatten { }, "
                    "reshape { ... }, conv2d { ... }, max_pooling2d { ... }, average_pooling2d { ... }, "
                    "global_average_pooling2d { }, batch_normalization { ... }"));
    }
  }
  SF_CHECK(shape.size() == 1,
           cat("the model's output ", batch_shape_text(shape),
               " is not flat: expected (None, outputs), which the loss and the labels compare"),
           "add layers { flatten { } } (and a Dense layer) at the end of model.layers");

  const int64_t label_dim = label_dim_for(job, width);
  // Beyond the layers' own: the input rows, the labels and the sample weights; under bf16 the weight copy.
  MemoryBudget with_policy = budget;
  with_policy.bf16_weight_copy = policy == DtypePolicy::kMixedBfloat16;
  check_memory(sizes, input_dim + label_dim + 1, with_policy);

  std::vector<std::unique_ptr<Metric>> metrics;
  metrics.reserve(static_cast<size_t>(job.metrics_size()));
  for (int i = 0; i < job.metrics_size(); ++i) {
    metrics.push_back(parse_field(cat("metrics[", i, "]"), job.metrics(i),
                                  [&](const std::string& v) { return make_metric(v, width, label_dim); }));
  }
  auto model =
      std::make_unique<Model>(input_dim, std::move(layers), std::move(loss), std::move(metrics), label_dim, policy);
  model->set_dtype_policy_warning(std::move(policy_warning));
  return model;
}

}  // namespace shardfit
