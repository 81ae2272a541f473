// The Sequential model: wiring of layers over flat parameter / gradient buffers and reusable batch buffers.
#include "kernels/model.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "kernels/activation.h"
#include "kernels/error.h"
#include "kernels/random.h"

namespace shardfit {

Model::Model(int64_t input_dim, std::vector<std::unique_ptr<Layer>> layers, std::unique_ptr<Loss> loss,
             std::vector<std::unique_ptr<Metric>> metrics, int64_t label_dim, DtypePolicy policy)
    : input_dim_(input_dim),
      label_dim_(label_dim),
      layers_(std::move(layers)),
      loss_(std::move(loss)),
      metrics_(std::move(metrics)),
      policy_(policy) {
  SF_CHECK(!layers_.empty(), "the model has no layers: expected at least one in model.layers");
  SF_CHECK(loss_ != nullptr, "the model has no loss");
  int64_t width = input_dim_;
  int64_t count = 0;
  int64_t state = 0;
  for (const auto& layer : layers_) {
    SF_CHECK(layer->input_dim() == width, cat("layer '", layer->name(), "' expects ", layer->input_dim(),
                                              " inputs but the previous layer gives ", width));
    width = layer->output_dim();
    count += layer->param_count();
    state += layer->state_count();
  }
  trainable_count_ = count;
  for (size_t i = 1; i < layers_.size(); ++i) {
    const Shape& given = layers_[i - 1]->output_shape();
    SF_CHECK(layers_[i]->input_shape() == given,
             cat("layer '", layers_[i]->name(), "' expects input ", batch_shape_text(layers_[i]->input_shape()),
                 " but the previous layer gives ", batch_shape_text(given)));
  }
  SF_CHECK(label_dim_ == 1 || label_dim_ == output_dim(),
           cat("labels of width ", label_dim_, " do not fit a model with ", output_dim(),
               " outputs: expected 1 (class ids) or ", output_dim()));
  for (const auto& metric : metrics_) metric_names_.push_back(metric->name());

  const auto* last = dynamic_cast<const Activation*>(layers_.back().get());
  fused_ = last != nullptr && loss_->fuses_with(last->activation());

  parameters_.resize(count + state);              // the state after every trainable parameter
  gradients_.resize(count + kGradientTailCount);  // gradient_tail() after the gradients
  const bool bf16 = policy_ == DtypePolicy::kMixedBfloat16 && count > 0;
  if (bf16) {
    compute_weights_.resize(count);
  }
  int64_t offset = 0;
  int64_t state_offset = count;
  for (auto& layer : layers_) {
    layer->bind(parameters_.data() + offset, gradients_.data() + offset);
    if (bf16) layer->bind_compute_weights(compute_weights_.data() + offset);
    param_offsets_.push_back(offset);
    offset += layer->param_count();
    if (layer->state_count() > 0) layer->bind_state(parameters_.data() + state_offset);
    state_offsets_.push_back(state_offset);
    state_offset += layer->state_count();
  }
  // A Conv2D whose relu moved into the max pooling after it leaves that layer its bias gradient (kernels/pooling.h).
  for (size_t i = 0; i + 1 < layers_.size(); ++i) {
    int64_t bias_count = 0;
    if (float* bias_grad = layers_[i]->bias_gradient_for_consumer(&bias_count)) {
      layers_[i + 1]->write_producer_bias_gradient(bias_grad, bias_count);
    }
  }
  int64_t last_bias_count = 0;
  SF_CHECK(layers_.back()->bias_gradient_for_consumer(&last_bias_count) == nullptr,
           cat("layer '", layers_.back()->name(), "' leaves its bias gradient to a next layer, and is the last"));
  choose_bf16_edges();
}

void Model::refresh_compute_weights() {
  if (compute_weights_.count() > 0) {
    // The array conversion rather than a oneDNN reorder: 37 us against 96 us for the 669706 weights of the MLP
    // 784-512-512-10 on 2 threads (oneDNN 2.6's jit:uni reorder ran slower on 2 threads than on 1, 54 us).
    to_bf16(parameters_.data(), compute_weights_.data(), compute_weights_.count());
    ++compute_weight_refreshes_;
  }
  compute_weights_stale_ = false;
}

void Model::set_gradients_ready(std::function<void(int64_t first)> hook) {
  gradients_ready_ = std::move(hook);
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!gradients_ready_) {
      layers_[i]->set_gradients_ready({});
      continue;
    }
    // Layer i's own gradients and every later layer's are final once layer i has its parameter gradients.
    layers_[i]->set_gradients_ready([this, first = param_offsets_[i]] { gradients_ready_(first); });
  }
}

void Model::set_cross_replica(CrossReplicaSum* sum) {
  for (auto& layer : layers_) layer->set_cross_replica(sum);
}

bool Model::uses_cross_replica() const {
  return std::any_of(layers_.begin(), layers_.end(), [](const auto& layer) { return layer->uses_cross_replica(); });
}

bool Model::has_replica_local_state() const {
  return std::any_of(layers_.begin(), layers_.end(),
                     [](const auto& layer) { return layer->has_replica_local_state(); });
}

void Model::initialize(uint64_t seed) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    Rng rng(hash_key(seed, 0x494E4954ULL /*'INIT'*/, i));
    layers_[i]->initialize(rng);
  }
  compute_weights_stale_ = true;  // the layers wrote through their bound pointers
}

void Model::reserve(int64_t rows) {
  if (rows <= capacity_) return;
  capacity_ = rows;
  const size_t count = layers_.size();
  activations_.clear();
  activation_grads_.clear();
  scratch_.clear();
  activations_.resize(count + 1);
  activation_grads_.resize(count + 1);
  scratch_.resize(count);
  activations_[0].resize(rows * input_dim_);
  for (size_t i = 0; i < count; ++i) {
    const int64_t out = layers_[i]->output_dim();
    activations_[i + 1].resize(rows * out);
    activation_grads_[i + 1].resize(rows * out);
    scratch_[i].resize(rows * out);
    if (i > 0) activation_grads_[i].resize(rows * layers_[i]->input_dim());
    layers_[i]->forget_plans();
  }
  reserve_bf16_edges(rows);
  labels_.resize(rows * label_dim_);
  sample_weights_.resize(rows);
  prepared_.assign(static_cast<size_t>(rows) + 1, 0);
}

void Model::prepare(int64_t n) {
  SF_CHECK(n >= 1 && n <= capacity_, cat("batch of ", n, " samples exceeds the model's reserved ", capacity_));
  if (prepared_[n] != 0) return;
  const size_t count = layers_.size();
  for (size_t i = 0; i < count; ++i) {
    const bool loss_owns_backward = fused_ && i + 1 == count;
    LayerBuffers buffers;
    buffers.x = activations_[i].data();
    buffers.y = activations_[i + 1].data();
    buffers.dy = loss_owns_backward ? nullptr : activation_grads_[i + 1].data();
    buffers.dx = i == 0 || loss_owns_backward ? nullptr : activation_grads_[i].data();
    buffers.scratch = scratch_[i].data();
    route_bf16_edges(i, &buffers);
    layers_[i]->prepare(n, buffers);
  }
  prepared_[n] = 1;
}

void Model::choose_bf16_edges() {
  bf16_edges_.assign(layers_.size() + 1, 0);  // the input (0) and the output (L) stay f32: data and loss read them
  for (size_t i = 1; i < layers_.size(); ++i) {
    bf16_edges_[i] = layers_[i - 1]->writes_bf16_output() && layers_[i]->reads_bf16_input() ? 1 : 0;
  }
}

// A bf16 activation replaces the f32 one: nothing else reads it (the loss reads only the last two, which a bf16
// edge never is: the last is the output, and the one before it feeds the fused loss's Activation, which reads f32).
void Model::reserve_bf16_edges(int64_t rows) {
  bf16_activations_.clear();
  bf16_activations_.resize(layers_.size() + 1);
  for (size_t i = 1; i < layers_.size(); ++i) {
    if (!activation_is_bf16(i)) continue;
    activations_[i].resize(0);
    bf16_activations_[i].resize(rows * layers_[i]->input_dim());
  }
}

void Model::route_bf16_edges(size_t layer, LayerBuffers* buffers) {
  if (activation_is_bf16(layer)) {
    buffers->x = nullptr;
    buffers->x_bf16 = bf16_activations_[layer].data();
  }
  if (activation_is_bf16(layer + 1)) {
    buffers->y = nullptr;
    buffers->y_bf16 = bf16_activations_[layer + 1].data();
  }
}

void Model::run_forward(int64_t n, const BatchContext& ctx) {
  prepare(n);
  if (compute_weights_stale_) refresh_compute_weights();
  for (auto& layer : layers_) layer->forward(n, ctx);
}

double Model::loss_and_metrics(int64_t n, bool weighted, float* grad, std::span<double> metric_sums) {
  SF_CHECK(metric_sums.size() == metrics_.size(),
           cat("expected ", metrics_.size(), " metric sums, got ", metric_sums.size()));
  const size_t count = layers_.size();
  LossArgs args;
  args.outputs = activations_[count].data();
  args.logits = fused_ ? activations_[count - 1].data() : nullptr;
  args.labels = labels_.data();
  args.sample_weights = weighted ? sample_weights_.data() : nullptr;
  args.n = n;
  args.dim = output_dim();
  args.label_dim = label_dim_;
  args.grad = grad;
  const double loss_sum = loss_->compute(args);
  MetricArgs metric_args{args.outputs, args.labels, n, args.dim, label_dim_};
  for (size_t i = 0; i < metrics_.size(); ++i) metric_sums[i] = metrics_[i]->sum(metric_args);
  return loss_sum;
}

double Model::train_batch(int64_t n, const BatchContext& ctx, bool weighted, std::span<double> metric_sums) {
  const double loss_sum = forward_train(n, ctx, weighted, metric_sums);
  backward_train(n);
  return loss_sum;
}

double Model::forward_train(int64_t n, const BatchContext& ctx, bool weighted, std::span<double> metric_sums) {
  if (n == 0) {
    std::fill(metric_sums.begin(), metric_sums.end(), 0.0);
    // No rows here, but the layers that sum across ranks take part with zeros, in the same order as every rank.
    for (auto& layer : layers_) layer->forward_without_rows(ctx);
    return 0.0;
  }
  run_forward(n, ctx);
  const size_t count = layers_.size();
  // With the fused pair the loss writes d/d logits, which is the final activation's input gradient.
  float* loss_grad = fused_ ? activation_grads_[count - 1].data() : activation_grads_[count].data();
  if (fused_ && count == 1) loss_grad = scratch_[0].data();  // a lone softmax layer has no parameters below it
  return loss_and_metrics(n, weighted, loss_grad, metric_sums);
}

void Model::backward_train(int64_t n) {
  // No samples here: this rank adds zeros to the global sum, and its layers' sums (as forward's) and its
  // gradients-ready points come in the same order as on a rank with rows, so an overlapped reducer's thread makes
  // the same sequence of calls on every rank (dist/gradient_reducer.h, note 13).
  if (n == 0) std::fill(gradients().begin(), gradients().end(), 0.0F);
  const size_t first_backward = fused_ ? layers_.size() - 1 : layers_.size();
  for (size_t i = first_backward; i-- > 0;) {
    if (n == 0) {
      layers_[i]->backward_without_rows();
    } else {
      layers_[i]->backward(n);
    }
    if (gradients_ready_) gradients_ready_(param_offsets_[i]);
  }
  // A fused final activation has no parameters, but a model of that activation alone still ends here.
  if (gradients_ready_ && first_backward == 0) gradients_ready_(0);
}

double Model::evaluate_batch(int64_t n, std::span<double> metric_sums) {
  if (n == 0) {
    std::fill(metric_sums.begin(), metric_sums.end(), 0.0);
    return 0.0;
  }
  run_forward(n, BatchContext{});
  return loss_and_metrics(n, false, nullptr, metric_sums);
}

const float* Model::predict_batch(int64_t n) {
  if (n > 0) run_forward(n, BatchContext{});
  return activations_.back().data();
}

std::vector<WeightTensor> Model::get_weights() const {
  // Keras's order, layer by layer: its trainable tensors, then its non-trainable ones (from the state span).
  std::vector<WeightTensor> weights;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const float* trainable = parameters_.data() + param_offsets_[i];
    const float* state = parameters_.data() + state_offsets_[i];
    for (const auto& shape : layers_[i]->weight_shapes()) {
      const int64_t count = element_count(shape.shape);
      const float*& p = shape.trainable ? trainable : state;
      weights.push_back({shape.name, shape.shape, std::vector<float>(p, p + count)});
      p += count;
    }
  }
  return weights;
}

void Model::set_weights(const std::vector<WeightTensor>& weights) {
  const std::vector<WeightTensor> expected = get_weights();
  SF_CHECK(weights.size() == expected.size(),
           cat("set_weights: got ", weights.size(), " tensors, the model has ", expected.size()));
  for (size_t i = 0; i < weights.size(); ++i) {
    SF_CHECK(
        weights[i].shape == expected[i].shape && weights[i].values.size() == expected[i].values.size(),
        cat("set_weights: tensor ", i, " ('", weights[i].name, "') has the wrong shape for '", expected[i].name, "'"));
  }
  size_t next = 0;  // get_weights' order: walk the layers' tensors as it does
  for (size_t i = 0; i < layers_.size(); ++i) {
    float* trainable = parameters_.data() + param_offsets_[i];
    float* state = parameters_.data() + state_offsets_[i];
    for (const auto& shape : layers_[i]->weight_shapes()) {
      float*& p = shape.trainable ? trainable : state;
      p = std::copy(weights[next].values.begin(), weights[next].values.end(), p);
      ++next;
    }
  }
  compute_weights_stale_ = true;
}

std::string Model::architecture() const {
  std::ostringstream out;
  out << "Layer (type)                    Output width      Param #\n";
  for (const auto& layer : layers_) {
    std::string label = layer->name() + " (" + layer->kind() + ")";
    label.resize(std::max<size_t>(label.size() + 1, 32), ' ');
    std::string width = std::to_string(layer->output_dim());
    width.resize(std::max<size_t>(width.size() + 1, 18), ' ');
    out << label << width << layer->param_count() + layer->state_count();
    if (layer->output_shape().size() > 1) out << " " << batch_shape_text(layer->output_shape());
    out << "\n";
  }
  out << "Total params: " << param_count() << "\n";
  // A model without state (every model before BatchNormalization) keeps the text its checkpoints hold.
  if (state_count() > 0) out << "Non-trainable params: " << state_count() << "\n";
  return out.str();
}

std::string Model::summary() const {
  // Keras's columns: 33, 26 and the rest; a longer cell keeps one space before the next.
  auto cell = [](std::string text, size_t width) {
    text.resize(std::max(text.size() + 1, width), ' ');
    return text;
  };
  const std::string rule(65, '=');
  std::ostringstream out;
  out << cell("Layer (type)", 33) << cell("Output Shape", 26) << "Param #\n" << rule << "\n";
  for (const auto& layer : layers_) {
    out << cell(layer->name() + " (" + layer->type_name() + ")", 33)
        << cell(batch_shape_text(layer->output_shape()), 26) << layer->param_count() + layer->state_count() << "\n";
  }
  out << rule << "\n"
      << "Total params: " << param_count() << "\n"
      << "Trainable params: " << trainable_count() << "\n"
      << "Non-trainable params: " << state_count() << "\n";
  return out.str();
}

}  // namespace shardfit
