// A Sequential model: layers in order, all parameters in one flat buffer and all gradients in another (each
// layer holds views), batch buffers owned here and reused for every step. No MPI: gradients and sums are this
// rank's; dist/ reduces them.
//
// The flat parameter buffer is [every layer's trainable parameters | every layer's non-trainable state]
// (BatchNormalization's moving statistics): parameters() and param_count() are all of it, the model's weights as
// checkpoints, broadcasts, weight files and EarlyStopping see them; gradients() and the optimizer cover the
// trainable prefix only (trainable_count(), trainable_parameters()).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cross_replica.h"
#include "kernels/layer.h"
#include "kernels/loss.h"
#include "kernels/metrics.h"
#include "kernels/precision.h"

namespace shardfit {

// One tensor of the Keras weight list (layer by layer: Dense kernel (in, out), then bias (out)).
struct WeightTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

class Model {
 public:
  // label_dim: 1 for class ids (sparse cross-entropy), else the output width. policy: the one the layers were
  // built for; mixed_bfloat16 gives the model the bf16 copy of its parameters (kernels/precision.h).
  Model(int64_t input_dim, std::vector<std::unique_ptr<Layer>> layers, std::unique_ptr<Loss> loss,
        std::vector<std::unique_ptr<Metric>> metrics, int64_t label_dim, DtypePolicy policy = DtypePolicy::kFloat32);

  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return layers_.back()->output_dim(); }
  // One sample's shape in (the first layer's) and out (the last layer's), Keras's without the batch axis.
  const Shape& input_shape() const { return layers_.front()->input_shape(); }
  const Shape& output_shape() const { return layers_.back()->output_shape(); }
  int64_t label_dim() const { return label_dim_; }
  // Every weight: trainable parameters, then the layers' non-trainable state (Keras's "Total params").
  int64_t param_count() const { return parameters_.count(); }
  int64_t trainable_count() const { return trainable_count_; }
  int64_t state_count() const { return param_count() - trainable_count_; }
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  const Loss& loss() const { return *loss_; }
  const std::vector<std::string>& metric_names() const { return metric_names_; }
  // True when the final activation's backward is folded into the loss (softmax / sigmoid + cross-entropy).
  bool loss_is_fused() const { return fused_; }
  DtypePolicy dtype_policy() const { return policy_; }
  // The warning build_model gave when the job asked for bf16 on a CPU without it (kernels/precision.h), else "".
  const std::string& dtype_policy_warning() const { return dtype_policy_warning_; }
  void set_dtype_policy_warning(std::string warning) { dtype_policy_warning_ = std::move(warning); }
  // Rounds the parameters into their bf16 copy now (a no-op under float32). The forward does this itself when
  // they were handed out for writing; a benchmark calls it to time the refresh.
  void refresh_compute_weights();
  // How many refreshes have run (under float32 always 0): a test's count that it is once per step.
  int64_t compute_weight_refreshes() const { return compute_weight_refreshes_; }
  // Whether activation i (the input of layer i; i = 0 the model's input, i = layers().size() its output) is held
  // as bf16: where layer i - 1 can write and layer i can read bf16 (Layer::writes_bf16_output, reads_bf16_input),
  // so neither converts it (kernels/precision.h note 3). Never the model's input or output.
  bool activation_is_bf16(size_t i) const { return i < bf16_edges_.size() && bf16_edges_[i] != 0; }

  // Handing the parameters out for writing marks the bf16 copy stale (as initialize and set_weights do): the next
  // forward refreshes it (once).
  std::span<float> parameters() {
    compute_weights_stale_ = true;
    return parameters_.span();
  }
  std::span<const float> parameters() const { return parameters_.span(); }
  // The trainable prefix of parameters(), what the optimizer updates (marks the bf16 copy stale, as parameters()).
  std::span<float> trainable_parameters() { return parameters().first(static_cast<size_t>(trainable_count_)); }
  // The non-trainable suffix of parameters() (moving statistics), in layer order.
  std::span<float> state() { return parameters_.span().last(static_cast<size_t>(state_count())); }
  // trainable_count() floats, laid out as trainable_parameters().
  std::span<float> gradients() { return gradients_.span().first(static_cast<size_t>(trainable_count_)); }
  // kGradientTailCount floats right after gradients() in the same allocation, never read or written by the model:
  // room for values a caller wants reduced in the same call as the gradients' last elements, with no copy
  // (dist/train/step_control.h puts the per-step control values there). Zero after construction.
  static constexpr int64_t kGradientTailCount = 16;  // one cache line
  std::span<float> gradient_tail() { return gradients_.span().last(static_cast<size_t>(kGradientTailCount)); }
  // Each layer's initialisers, from a stream keyed by (seed, layer index): same seed, same weights.
  void initialize(uint64_t seed);

  // Batch buffers for up to `rows` samples. Growing moves them and drops all prepared batch sizes.
  void reserve(int64_t rows);
  int64_t capacity() const { return capacity_; }
  float* input() { return activations_.front().data(); }      // (capacity, input_dim)
  float* labels() { return labels_.data(); }                  // (capacity, label_dim)
  float* sample_weights() { return sample_weights_.data(); }  // (capacity)

  // The step's compute on the first n rows of input() / labels(): forward (dropout per ctx), the loss and
  // metric SUMS over the n samples (metric_sums has one slot per metric), and backward, which leaves
  // gradients() = d(sum of the samples' losses)/d(parameters). n == 0 gives zeros. weighted: use sample_weights().
  double train_batch(int64_t n, const BatchContext& ctx, bool weighted, std::span<double> metric_sums);
  // train_batch in its two halves, for a step that times them (dist/train/step.h): forward_train is the forward
  // pass, the loss and metric sums and the loss's gradient; backward_train the layers' backward, which leaves
  // gradients(). Call them in that order on the same n; together they do exactly what train_batch does.
  double forward_train(int64_t n, const BatchContext& ctx, bool weighted, std::span<double> metric_sums);
  void backward_train(int64_t n);
  // Backward's "gradients ready" points: during backward_train, hook(first) says gradients()[first, end) are final
  // for this step. Backward runs from the last layer to the first, so first only decreases within a step, down to
  // 0 (the whole buffer) before backward_train returns; the same first may come twice. The hook runs on the calling
  // thread, between the layers' kernels (and inside a layer whose parameter gradients are done before its dx); with
  // n == 0 it comes after each layer as with rows, so the layers' cross-rank sums fall between the same points on
  // every rank. Set once, before training (empty: none); it costs one call per layer and allocates nothing.
  void set_gradients_ready(std::function<void(int64_t first)> hook);
  // The cross-rank sum layers ask for (synchronized BatchNormalization; kernels/cross_replica.h), set before
  // training; nullptr (the default): this rank holds the whole batch. Not owned.
  void set_cross_replica(CrossReplicaSum* sum);
  // True when some layer sums across ranks in its training forward or backward: every rank must then run every
  // step's forward_train and backward_train (a rank with no rows too), and the sums must keep their order with any
  // other collective made meanwhile (dist/ makes them on an overlapped reducer's thread: dist/gradient_reducer.h,
  // note 13).
  bool uses_cross_replica() const;
  // True when some layer keeps per-rank state (BatchNormalization with synchronized: false) that dist/ averages
  // across ranks before it is read (dist/cross_replica_comm.h).
  bool has_replica_local_state() const;

  // Forward in inference mode; the loss and metric sums of the n samples.
  double evaluate_batch(int64_t n, std::span<double> metric_sums);
  // Forward in inference mode; returns the outputs (n, output_dim), valid until the next call.
  const float* predict_batch(int64_t n);

  std::vector<WeightTensor> get_weights() const;
  // Shapes must match get_weights() exactly (names are not compared).
  void set_weights(const std::vector<WeightTensor>& weights);
  // Keras's table: layer (type), output shape "(None, 26, 26, 32)", parameter count (trainable and state); then
  // Keras's Total / Trainable / Non-trainable params lines.
  std::string summary() const;
  // What names this model in a checkpoint's job fingerprint (dist/train/fit.cpp; checkpoint_file.cpp compares it
  // for evaluate and predict): each layer's name, kind, output width and parameter count, plus the output shape of
  // a layer whose output is an image. Not summary(): its text is for people and may change, while a checkpoint
  // written by an earlier version of shardfit must still load; for a model of flat layers this is the text those
  // versions wrote.
  std::string architecture() const;

 private:
  void prepare(int64_t n);
  void run_forward(int64_t n, const BatchContext& ctx);
  double loss_and_metrics(int64_t n, bool weighted, float* grad, std::span<double> metric_sums);
  // bf16 edges: which activations are bf16 (constructor), their buffers (reserve) and the layers' views (prepare).
  void choose_bf16_edges();
  void reserve_bf16_edges(int64_t rows);
  void route_bf16_edges(size_t layer, LayerBuffers* buffers);

  int64_t input_dim_;
  int64_t label_dim_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<Loss> loss_;
  std::vector<std::unique_ptr<Metric>> metrics_;
  std::vector<std::string> metric_names_;
  bool fused_ = false;
  std::vector<int64_t> param_offsets_;  // [i]: layer i's first element in the flat buffers
  std::vector<int64_t> state_offsets_;  // [i]: layer i's first state element in parameters_
  int64_t trainable_count_ = 0;
  std::function<void(int64_t)> gradients_ready_;

  FloatBuffer parameters_;
  FloatBuffer gradients_;
  DtypePolicy policy_;
  std::string dtype_policy_warning_;
  Bf16Buffer compute_weights_;  // mixed_bfloat16: bf16 copy of parameters_, same layout; else empty
  bool compute_weights_stale_ = true;
  int64_t compute_weight_refreshes_ = 0;

  int64_t capacity_ = 0;
  std::vector<FloatBuffer> activations_;       // [i]: input of layer i; [L]: the output
  std::vector<FloatBuffer> activation_grads_;  // [i]: d loss / d activations_[i] (unused for i = 0)
  std::vector<FloatBuffer> scratch_;           // one per layer, (capacity, out)
  std::vector<char> bf16_edges_;               // [i] != 0: activation i is bf16 (activation_is_bf16)
  std::vector<Bf16Buffer> bf16_activations_;   // [i]: activation i when it is bf16 (activations_[i] then empty)
  FloatBuffer labels_;
  FloatBuffer sample_weights_;
  std::vector<char> prepared_;  // prepared_[n] != 0 once batch size n is built
};

}  // namespace shardfit
