// The model with shapes: where its input shape comes from (the job's input_shape, the data's stored shape, flat for
// an MLP, a channel axis for a grey image under Conv2D), Keras's summary table, the errors that name the field
// (Dense on a non-flat input, an output that is not flat, an input_shape that does not fit the data), and a small
// convnet's gradients against central differences of its own loss, Conv2D under mixed_bfloat16 in a model, and a
// Conv2D's relu run by the max pooling after it (the same values as relu then pool).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "kernels/precision.h"
#include "kernels/random.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

std::unique_ptr<Model> build(const std::string& text, const Shape& sample_shape) {
  return build_model(parse_job_text(text, "shapes.pbtxt"), sample_shape);
}

std::string error_of(const std::string& text, const Shape& sample_shape) {
  try {
    build(text, sample_shape);
  } catch (const Error& e) {
    return std::string(e.what()) + " | hint: " + e.hint();
  }
  return "no error";
}

constexpr const char* kConvnet = R"(
    model { layers { conv2d { filters: 32 kernel_size: 3 activation: "relu" } }
            layers { max_pooling2d { } }
            layers { flatten { } }
            layers { dense { units: 10 activation: "softmax" } } }
    loss: "sparse_categorical_crossentropy")";

TEST(ModelShapes, AGreyImageGetsAChannelAxisUnderConv2DAndTheSummaryIsKeras) {
  auto model = build(kConvnet, {28, 28});
  EXPECT_EQ(model->input_shape(), (Shape{28, 28, 1}));
  EXPECT_EQ(model->input_dim(), 784);
  EXPECT_EQ(model->layers()[0]->output_shape(), (Shape{26, 26, 32}));
  EXPECT_EQ(model->layers()[1]->output_shape(), (Shape{13, 13, 32}));
  EXPECT_EQ(model->output_shape(), (Shape{10}));
  // Keras's table for this model (tf.keras 2.x, summary() of the same Sequential): 320, 0, 0, 54090 parameters.
  const std::string expected =
      "Layer (type)                     Output Shape              Param #\n"
      "=================================================================\n"
      "conv2d_0 (Conv2D)                (None, 26, 26, 32)        320\n"
      "max_pooling2d_1 (MaxPooling2D)   (None, 13, 13, 32)        0\n"
      "flatten_2 (Flatten)              (None, 5408)              0\n"
      "dense_3 (Dense)                  (None, 10)                54090\n"
      "dense_3_softmax (Activation)     (None, 10)                0\n"
      "=================================================================\n"
      "Total params: 54410\n"
      "Trainable params: 54410\n"
      "Non-trainable params: 0\n";
  EXPECT_EQ(model->summary(), expected);
}

// A checkpoint's job fingerprint opens with architecture(): for a model of flat layers it must stay the text the
// versions before shapes wrote (their summary), or their checkpoints would no longer resume or load.
TEST(ModelShapes, ArchitectureOfAFlatModelIsTheTextEarlierCheckpointsHold) {
  const std::string mlp = R"(model { layers { dense { units: 5 activation: "relu" } }
                                     layers { dropout { rate: 0.5 } }
                                     layers { dense { units: 3 activation: "softmax" } } }
                             loss: "sparse_categorical_crossentropy")";
  EXPECT_EQ(build(mlp, {4})->architecture(),
            "Layer (type)                    Output width      Param #\n"
            "dense_0 (dense)                 5                 25\n"
            "dropout_1 (dropout)             5                 0\n"
            "dense_2 (dense)                 3                 18\n"
            "dense_2_softmax (activation)    3                 0\n"
            "Total params: 43\n");
  // An image-shaped output is named by its shape too: the widths alone do not tell (26, 26, 32) from (13, 52, 32).
  const std::string architecture = build(kConvnet, {28, 28})->architecture();
  EXPECT_NE(architecture.find("conv2d_0 (conv2d)               21632             320 (None, 26, 26, 32)\n"),
            std::string::npos)
      << architecture;
}

TEST(ModelShapes, InputShapeFromTheJobOrTheData) {
  // An MLP on (N, 28, 28) images reads them flat, as before shapes.
  const std::string mlp = R"(model { layers { dropout { rate: 0.1 } } layers { dense { units: 4 } } } loss: "mse")";
  EXPECT_EQ(build(mlp, {28, 28})->input_shape(), (Shape{784}));
  // Flat data and the job's input_shape.
  const std::string shaped = R"(model { input_shape: [8, 8, 1] layers { conv2d { filters: 2 kernel_size: [3, 2] } }
                                        layers { flatten { } } layers { dense { units: 3 } } } loss: "mse")";
  auto model = build(shaped, {64});
  EXPECT_EQ(model->layers()[0]->output_shape(), (Shape{6, 7, 2}));
  // A (N, 28, 28, 1) array keeps its shape; Reshape of flat data is Keras's other way in.
  EXPECT_EQ(build(kConvnet, {28, 28, 1})->input_shape(), (Shape{28, 28, 1}));
  const std::string reshaped = R"(model { layers { reshape { target_shape: [8, -1, 1] } }
                                          layers { conv2d { filters: 2 kernel_size: 3 padding: "same" strides: 2 } }
                                          layers { global_average_pooling2d { } } } loss: "mse")";
  auto from_flat = build(reshaped, {64});
  EXPECT_EQ(from_flat->input_shape(), (Shape{64}));
  EXPECT_EQ(from_flat->layers()[1]->output_shape(), (Shape{4, 4, 2}));
  EXPECT_EQ(from_flat->output_shape(), (Shape{2}));
  // Activation and Dropout keep the shape they are given.
  auto elementwise = build(R"(model { input_shape: [6, 6, 2] layers { dropout { rate: 0.5 } }
                                      layers { activation { activation: "tanh" } }
                                      layers { average_pooling2d { pool_size: 3 } } layers { flatten { } } }
                              loss: "mse")",
                           {72});
  EXPECT_EQ(elementwise->layers()[1]->output_shape(), (Shape{6, 6, 2}));
  EXPECT_EQ(elementwise->output_shape(), (Shape{8}));
}

TEST(ModelShapes, ErrorsNameTheFieldAndTheShape) {
  const std::string dense_on_image = R"(model { input_shape: [4, 4, 1] layers { dense { units: 2 } } } loss: "mse")";
  const std::string e1 = error_of(dense_on_image, {16});
  EXPECT_NE(e1.find("model.layers[0].dense: its input (None, 4, 4, 1) is not flat"), std::string::npos) << e1;
  EXPECT_NE(e1.find("add layers { flatten { } } before model.layers[0]"), std::string::npos) << e1;

  const std::string open_end = R"(model { layers { conv2d { filters: 2 kernel_size: 3 } } } loss: "mse")";
  const std::string e2 = error_of(open_end, {5, 5});
  EXPECT_NE(e2.find("the model's output (None, 3, 3, 2) is not flat"), std::string::npos) << e2;

  const std::string e3 = error_of(R"(model { input_shape: [28, 28] layers { dense { units: 2 } } } loss: "mse")", {64});
  EXPECT_NE(e3.find("model.input_shape = (None, 28, 28) holds 784 features per sample but the data has 64"),
            std::string::npos)
      << e3;

  const std::string e4 = error_of(kConvnet, {784});
  EXPECT_NE(e4.find("model.layers[0].conv2d: Conv2D 'conv2d_0' takes (None, height, width, channels) samples, got "
                    "(None, 784)"),
            std::string::npos)
      << e4;
  EXPECT_NE(e4.find("hint: give the model input_shape [height, width, channels]"), std::string::npos) << e4;

  const std::string e5 =
      error_of(R"(model { layers { conv2d { filters: 2 kernel_size: [1, 2, 3] } } } loss: "mse")", {5, 5});
  EXPECT_NE(e5.find("model.layers[0].conv2d.kernel_size has 3 values"), std::string::npos) << e5;
  const std::string e6 =
      error_of(R"(model { layers { max_pooling2d { padding: "full" } } layers { flatten { } } } loss: "mse")", {4, 4});
  EXPECT_NE(e6.find("model.layers[0].max_pooling2d.padding = 'full'"), std::string::npos) << e6;
  const std::string e7 = error_of(R"(model { layers { reshape { target_shape: [5, -1] } } } loss: "mse")", {64});
  EXPECT_NE(e7.find("model.layers[0].reshape.target_shape: "), std::string::npos) << e7;
  const std::string e8 = error_of(R"(model { input_shape: [4, 4, 1] layers { activation { activation: "softmax" } }
                                             layers { flatten { } } } loss: "mse")",
                                  {16});
  EXPECT_NE(e8.find("model.layers[0].activation: softmax over the input (None, 4, 4, 1)"), std::string::npos) << e8;
}

// The whole convnet's backward (Conv2D with a fused tanh, same padding and strides, average pooling, Flatten, Dense,
// softmax + cross-entropy) against central differences of the model's own loss, computed in float and summed in
// double: the step h = 1e-3 leaves errors near 1e-4 of the largest gradient, a wiring mistake is off by O(1).
TEST(ModelShapes, ConvnetGradientsMatchFiniteDifferences) {
  auto model = build(R"(model { input_shape: [7, 6, 2]
                                layers { conv2d { filters: 3 kernel_size: 3 strides: 2 padding: "same"
                                                  activation: "tanh" } }
                                layers { average_pooling2d { pool_size: 2 padding: "same" } }
                                layers { flatten { } }
                                layers { dense { units: 4 activation: "softmax" } } }
                        loss: "sparse_categorical_crossentropy")",
                     {84});
  const int64_t n = 3;
  model->initialize(7);
  model->reserve(n);
  Rng rng(11);
  for (float& p : model->parameters()) p += static_cast<float>(rng.uniform(-0.1, 0.1));
  for (int64_t i = 0; i < n * 84; ++i) model->input()[i] = static_cast<float>(rng.uniform(-1, 1));
  for (int64_t s = 0; s < n; ++s) model->labels()[s] = static_cast<float>(rng.below(4));
  std::vector<double> sums;
  model->train_batch(n, BatchContext{true, 1, 0, 0}, false, sums);
  const std::vector<float> grads(model->gradients().begin(), model->gradients().end());
  const std::vector<double> params = testing::to_double(model->parameters());
  const auto loss = [&](const std::vector<double>& p) {
    std::copy(p.begin(), p.end(), model->parameters().begin());
    return model->evaluate_batch(n, sums);
  };
  const std::vector<double> fd = testing::finite_difference_gradient(loss, params, 1e-3);
  EXPECT_TRUE(testing::all_close(grads, fd, 2000));
}

// Under mixed_bfloat16 the factory builds Conv2D in bf16 and the model hands it its bf16 weight copy: a model of
// Conv2D alone (so no other layer rounds) gives gradients at the f32 master weights within bf16's roundings of the
// float32 model's, and not equal to them.
TEST(ModelShapes, ConvnetUnderMixedBfloat16ComputesConv2DInBf16) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "mixed_bfloat16 runs float32 on this CPU";
  const std::string layers = R"(input_shape: [7, 6, 2]
                                layers { conv2d { filters: 3 kernel_size: 3 padding: "same" activation: "tanh" } }
                                layers { flatten { } } } loss: "mse")";
  auto f32 = build("model { " + layers, {84});
  auto bf16 = build(R"(model { dtype_policy: "mixed_bfloat16" )" + layers, {84});
  ASSERT_EQ(bf16->dtype_policy(), DtypePolicy::kMixedBfloat16);
  const int64_t n = 3;
  std::vector<std::vector<float>> grads;
  for (Model* model : {f32.get(), bf16.get()}) {
    model->initialize(7);
    model->reserve(n);
    Rng rng(11);
    for (int64_t i = 0; i < n * 84; ++i) model->input()[i] = static_cast<float>(rng.uniform(-1, 1));
    for (int64_t i = 0; i < n * 126; ++i) model->labels()[i] = static_cast<float>(rng.uniform(-1, 1));
    std::vector<double> sums;
    model->train_batch(n, BatchContext{true, 1, 0, 0}, false, sums);
    grads.emplace_back(model->gradients().begin(), model->gradients().end());
  }
  EXPECT_NE(grads[0], grads[1]) << "the bf16 model's Conv2D computed in f32";
  // Two roundings of 2^-8 per product, against the largest gradient (sums of |terms| here are a few times it).
  EXPECT_TRUE(testing::all_close(grads[1], testing::to_double(grads[0]), 8 * 65536.0));
}

// Conv2D(relu) then MaxPooling2D: the factory moves the relu into the pooling and leaves it the bias gradient
// (kernels/pooling.h). Against the same network with the relu as its own Activation layer (which the factory
// leaves in place): the pairs are made, the same outputs and loss bit for bit, the same gradients up to the order
// of float sums (the bias's, and backward weights with and without a bias term). Average pooling and a tanh keep
// theirs.
TEST(ModelShapes, ReluBeforeMaxPoolingRunsAfterItWithTheSameValues) {
  const std::string tail = R"(layers { flatten { } } layers { dense { units: 5 activation: "softmax" } } }
                              loss: "sparse_categorical_crossentropy")";
  auto moved = build(R"(model { input_shape: [12, 11, 2]
      layers { conv2d { filters: 6 kernel_size: 3 activation: "relu" } }
      layers { max_pooling2d { } }
      layers { conv2d { filters: 4 kernel_size: 2 padding: "same" activation: "relu" } }
      layers { max_pooling2d { pool_size: 3 strides: 2 padding: "same" } } )" +
                         tail,
                     {264});
  auto separate = build(R"(model { input_shape: [12, 11, 2]
      layers { conv2d { filters: 6 kernel_size: 3 } } layers { activation { activation: "relu" } }
      layers { max_pooling2d { } }
      layers { conv2d { filters: 4 kernel_size: 2 padding: "same" } } layers { activation { activation: "relu" } }
      layers { max_pooling2d { pool_size: 3 strides: 2 padding: "same" } } )" +
                            tail,
                        {264});
  ASSERT_EQ(moved->layers().size() + 2, separate->layers().size()) << "the relu became a layer of its own";
  ASSERT_EQ(moved->param_count(), separate->param_count());
  // The pairs were made: each Conv2D leaves its bias gradient (filters values) to the pooling after it.
  for (const auto& [index, filters] : {std::pair<size_t, int64_t>{0, 6}, {2, 4}}) {
    int64_t count = 0;
    EXPECT_NE(moved->layers()[index]->bias_gradient_for_consumer(&count), nullptr) << "layer " << index;
    EXPECT_EQ(count, filters) << "layer " << index;
  }
  const int64_t n = 9;
  std::vector<std::vector<float>> outputs;
  std::vector<std::vector<float>> grads;
  std::vector<double> losses;
  for (Model* model : {moved.get(), separate.get()}) {
    model->initialize(7);
    model->reserve(n);
    Rng rng(13);
    for (float& p : model->parameters()) p = static_cast<float>(rng.uniform(-0.5, 0.5));  // biases too
    for (int64_t i = 0; i < n * 264; ++i) model->input()[i] = static_cast<float>(rng.uniform(-1, 1));
    for (int64_t s = 0; s < n; ++s) model->labels()[s] = static_cast<float>(rng.below(5));
    std::vector<double> sums;
    losses.push_back(model->train_batch(n, BatchContext{true, 1, 0, 0}, false, sums));
    grads.emplace_back(model->gradients().begin(), model->gradients().begin() + model->param_count());
    const float* out = model->predict_batch(n);
    outputs.emplace_back(out, out + n * 5);
  }
  EXPECT_EQ(outputs[0], outputs[1]);
  EXPECT_EQ(losses[0], losses[1]);
  // Parameter order: conv1 kernel (3*3*2*6 = 108), bias (6), conv2 kernel (2*2*6*4 = 96), bias (4), dense.
  const auto span = [&](const std::vector<float>& g, size_t from, size_t count) {
    return std::vector<float>(g.begin() + static_cast<std::ptrdiff_t>(from),
                              g.begin() + static_cast<std::ptrdiff_t>(from + count));
  };
  // dz is the same, but backward weights with and without the bias term are two primitives, which may order their
  // sums differently: a few roundings.
  EXPECT_TRUE(testing::all_close(span(grads[0], 0, 108), testing::to_double(span(grads[1], 0, 108)), 16)) << "K1";
  EXPECT_TRUE(testing::all_close(span(grads[0], 114, 96), testing::to_double(span(grads[1], 114, 96)), 16)) << "K2";
  EXPECT_EQ(span(grads[0], 214, grads[0].size() - 214), span(grads[1], 214, grads[1].size() - 214)) << "dense";
  EXPECT_TRUE(testing::all_close(span(grads[0], 108, 6), testing::to_double(span(grads[1], 108, 6)), 64)) << "b1";
  EXPECT_TRUE(testing::all_close(span(grads[0], 210, 4), testing::to_double(span(grads[1], 210, 4)), 64)) << "b2";
  EXPECT_NE(span(grads[0], 108, 6), std::vector<float>(6, 0.0F)) << "conv1's bias gradient was not written";

  auto average = build(R"(model { input_shape: [12, 11, 2]
      layers { conv2d { filters: 6 kernel_size: 3 activation: "relu" } } layers { average_pooling2d { } } )" +
                           tail,
                       {264});
  auto tanh_model = build(R"(model { input_shape: [12, 11, 2]
      layers { conv2d { filters: 6 kernel_size: 3 activation: "tanh" } } layers { max_pooling2d { } } )" +
                              tail,
                          {264});
  for (Model* model : {average.get(), tanh_model.get()}) {
    int64_t count = 0;
    EXPECT_EQ(model->layers()[0]->bias_gradient_for_consumer(&count), nullptr);
  }
}

}  // namespace
}  // namespace shardfit
