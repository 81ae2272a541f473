// The layer interface: forward and backward over model-owned buffers, with oneDNN primitives built once per
// batch size (prepare) and only executed in the step. Layers hold views into the model's flat parameter and
// gradient buffers; they never own parameters. A layer knows the shape of one sample in and out (Keras's, batch axis
// left out, channels last); a buffer row is one sample's tensor in row-major order, so an (n, width) buffer holds an
// (N, H, W, C) batch as it is and a shape never moves data.
#pragma once

#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/random.h"

namespace shardfit {

class CrossReplicaSum;  // kernels/cross_replica.h

// What a step knows that a layer may need: training mode, and the counters that make dropout masks
// depend on the GLOBAL sample (so P ranks draw the same masks as one rank).
struct BatchContext {
  bool training = false;
  uint64_t seed = 0;
  uint64_t step = 0;      // global optimizer step
  int64_t first_row = 0;  // offset of this rank's first sample within the global batch
};

// The buffers of one batch size: row-major, n rows. Views into model-owned memory.
struct LayerBuffers {
  const float* x = nullptr;   // (n, in) input
  float* y = nullptr;         // (n, out) output
  const float* dy = nullptr;  // (n, out) d loss / d y; nullptr when only inference is prepared
  float* dx = nullptr;        // (n, in) d loss / d x; nullptr when not needed (first layer)
  float* scratch = nullptr;   // (n, out) workspace owned by the model, private to this layer
  // bf16 edges (mixed_bfloat16, kernels/precision.h note 3): where the model keeps the activation between two
  // layers as bf16, the consumer gets x_bf16 instead of x and the producer y_bf16 instead of y (the f32 one is
  // then nullptr). Only for layers that said they can (Layer::reads_bf16_input / writes_bf16_output).
  const uint16_t* x_bf16 = nullptr;  // (n, in)
  uint16_t* y_bf16 = nullptr;        // (n, out)
};

// One sample's shape, batch axis left out: (features) flat, (height, width, channels) an image.
using Shape = std::vector<int64_t>;

// The element count of a shape (1 for the empty shape).
inline int64_t element_count(const Shape& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, [](int64_t a, int64_t b) { return a * b; });
}

// "(None, 26, 26, 32)": Keras's way of printing a batch of this shape.
std::string batch_shape_text(const Shape& shape);

// One tensor of the Keras weight list, e.g. Dense kernel (in, out) then bias (out).
// Non-trainable tensors (BatchNormalization's moving statistics) follow the trainable ones, as in Keras's
// layer.weights, and live in the model's state span (Model::state_count()), not in param_count()'s.
struct WeightShape {
  std::string name;
  std::vector<int64_t> shape;
  bool trainable = true;
};

class Layer {
 public:
  Layer(std::string name, int64_t input_dim, int64_t output_dim)
      : Layer(std::move(name), Shape{input_dim}, Shape{output_dim}) {}
  Layer(std::string name, Shape input_shape, Shape output_shape)
      : name_(std::move(name)),
        input_dim_(element_count(input_shape)),
        output_dim_(element_count(output_shape)),
        input_shape_(std::move(input_shape)),
        output_shape_(std::move(output_shape)) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  virtual std::string kind() const = 0;
  // Keras's class name, as the model summary prints it ("Conv2D"); kind() where none is given.
  virtual std::string type_name() const { return kind(); }
  const std::string& name() const { return name_; }
  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }
  // One sample's shape in and out; input_dim() and output_dim() are their element counts.
  const Shape& input_shape() const { return input_shape_; }
  const Shape& output_shape() const { return output_shape_; }
  // For a layer that maps each element on its own (Activation, Dropout) and is built by width: the shape of what
  // feeds it, which it keeps. The element count must stay the width.
  void set_elementwise_shape(const Shape& shape);

  virtual int64_t param_count() const { return 0; }
  virtual std::vector<WeightShape> weight_shapes() const { return {}; }
  // Views of param_count() floats each in the model's flat buffers.
  virtual void bind(float* /*params*/, float* /*grads*/) {}
  // Under mixed_bfloat16 (kernels/precision.h): the bf16 copy of the same param_count() values, which the model
  // refreshes once per step. Layers that compute in f32 ignore it.
  virtual void bind_compute_weights(const uint16_t* /*weights*/) {}
  // Whether this layer, as built, can read its input as bf16 / write its output as bf16 (LayerBuffers::x_bf16 /
  // y_bf16). The model keeps an activation bf16 where its producer can write and its consumer can read it
  // (Model::activation_is_bf16); every other edge, and the model's input and output, stay f32.
  virtual bool reads_bf16_input() const { return false; }
  virtual bool writes_bf16_output() const { return false; }
  virtual void initialize(Rng& /*rng*/) {}

  // Non-trainable state (Keras's non-trainable weights: BatchNormalization's moving mean and variance): state_count()
  // floats in the model's flat parameter buffer after every layer's trainable parameters, so checkpoints, broadcasts
  // and weight files carry them, while the gradients and the optimizer see only the trainable part. initialize()
  // sets them too. A layer writes its state only in a training forward.
  virtual int64_t state_count() const { return 0; }
  virtual void bind_state(float* /*state*/) {}

  // Sums across ranks (kernels/cross_replica.h), for layers whose training step needs the global batch's
  // statistics; nullptr: this rank is the whole batch. Every rank must make the same calls in the same order, so a
  // layer that uses it (uses_cross_replica()) also runs forward_without_rows / backward_without_rows on a rank with
  // no rows in a step. Inference never sums across ranks.
  virtual void set_cross_replica(CrossReplicaSum* /*sum*/) {}
  virtual bool uses_cross_replica() const { return false; }
  virtual void forward_without_rows(const BatchContext& /*ctx*/) {}
  virtual void backward_without_rows() {}
  // True when the state may differ across ranks after training steps (per-replica statistics): dist/ averages it
  // before anyone reads it (dist/cross_replica_comm.h).
  virtual bool has_replica_local_state() const { return false; }

  // A producer's bias gradient written by its consumer: a Conv2D whose relu moved into the MaxPooling2D after it
  // (kernels/pooling.h) leaves its bias gradient, the per-channel sums of dz, to that layer's backward, which sums
  // it at the pooled size. bias_gradient_for_consumer(): where this layer's bias gradient is, when its consumer
  // writes it (count floats), else nullptr. write_producer_bias_gradient(): the model hands that to the next
  // layer after bind(); a layer that cannot write it throws Error.
  virtual float* bias_gradient_for_consumer(int64_t* /*count*/) const { return nullptr; }
  virtual void write_producer_bias_gradient(float* bias_grad, int64_t count);

  // Builds everything batch size n needs over these buffers. Called once per n (n >= 1) until forget_plans().
  virtual void prepare(int64_t n, const LayerBuffers& buffers) = 0;
  virtual void forward(int64_t n, const BatchContext& ctx) = 0;
  // Writes dx (when prepared with one) and this layer's parameter gradients: overwrites, never accumulates. (A
  // layer whose bias gradient its consumer writes, bias_gradient_for_consumer() above, finds it already written.)
  virtual void backward(int64_t n) = 0;
  // Drops all prepared batch sizes (the model moved its buffers).
  virtual void forget_plans() = 0;

  // Backward's "gradients ready" point inside this layer (the model sets it; empty: none). A layer whose parameter
  // gradients are final before it computes dx (which the gradient buffer does not hold) calls it in between, so
  // whoever waits for them (an overlapped gradient reducer, dist/gradient_reducer.h) starts while dx is computed.
  void set_gradients_ready(std::function<void()> hook) { gradients_ready_ = std::move(hook); }

 protected:
  void gradients_ready() const {
    if (gradients_ready_) gradients_ready_();
  }

 private:
  std::function<void()> gradients_ready_;
  std::string name_;
  int64_t input_dim_;
  int64_t output_dim_;
  Shape input_shape_;
  Shape output_shape_;
};

}  // namespace shardfit
