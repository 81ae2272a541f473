// Tests for dist/train/bench: the presets' models, and the arithmetic of the report (quantiles, busbw) against values
// worked by hand. The benchmark as a whole runs end to end in tests/launch/test_bench.cpp.
#include <gtest/gtest.h>

#include <vector>

#include "dist/train/bench.h"
#include "kernels/error.h"
#include "kernels/model_factory.h"

namespace shardfit {
namespace {

TEST(BenchPreset, MlpIsTheModelItsNameSays) {
  const proto::Job job = bench_preset("mlp");
  EXPECT_EQ(job.model().input_dim(), 784);
  ASSERT_EQ(job.model().layers_size(), 3);
  EXPECT_EQ(job.model().layers(0).dense().units(), 1024);
  EXPECT_EQ(job.model().layers(0).dense().activation(), "relu");
  EXPECT_EQ(job.model().layers(1).dense().units(), 1024);
  EXPECT_EQ(job.model().layers(2).dense().units(), 10);
  EXPECT_EQ(job.model().layers(2).dense().activation(), "softmax");
  EXPECT_EQ(job.loss(), "sparse_categorical_crossentropy");
  EXPECT_TRUE(job.optimizer().has_sgd());
  // 784*1024 + 1024 + 1024*1024 + 1024 + 1024*10 + 10
  EXPECT_EQ(build_model(job, 784)->param_count(), 1863690);
}

TEST(BenchPreset, WideIsCommunicationBound) {
  const proto::Job job = bench_preset("wide");
  EXPECT_EQ(job.model().input_dim(), 4096);
  ASSERT_EQ(job.model().layers_size(), 3);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(job.model().layers(i).dense().units(), 4096);
  EXPECT_EQ(job.model().layers(2).dense().units(), 10);
  EXPECT_TRUE(job.optimizer().has_sgd());
  EXPECT_EQ(bench_preset_names(), (std::vector<std::string>{"mlp", "wide", "convnet"}));
}

// The Fashion-MNIST convnet (bench/peer_torch.py --model convnet): its input shape alone, no input_dim.
TEST(BenchPreset, ConvnetIsTheFashionMnistConvnet) {
  const proto::Job job = bench_preset("convnet");
  EXPECT_FALSE(job.model().has_input_dim());
  EXPECT_EQ(std::vector<int64_t>(job.model().input_shape().begin(), job.model().input_shape().end()),
            (std::vector<int64_t>{28, 28, 1}));
  ASSERT_EQ(job.model().layers_size(), 7);
  EXPECT_EQ(job.model().layers(0).conv2d().filters(), 32);
  EXPECT_EQ(job.model().layers(2).conv2d().filters(), 64);
  for (const int i : {0, 2}) {
    EXPECT_EQ(job.model().layers(i).conv2d().kernel_size(0), 3);
    EXPECT_EQ(job.model().layers(i).conv2d().activation(), "relu");
    EXPECT_EQ(job.model().layers(i + 1).max_pooling2d().pool_size(0), 2);
  }
  EXPECT_TRUE(job.model().layers(4).has_flatten());
  EXPECT_EQ(job.model().layers(5).dense().units(), 128);
  EXPECT_EQ(job.model().layers(6).dense().units(), 10);
  EXPECT_EQ(job.model().layers(6).dense().activation(), "softmax");
  EXPECT_EQ(job.loss(), "sparse_categorical_crossentropy");
  EXPECT_TRUE(job.optimizer().has_sgd());
  // (3*3*1*32 + 32) + (3*3*32*64 + 64) + (5*5*64*128 + 128) + (128*10 + 10), as Keras's summary counts it
  const auto model = build_model(job, Shape{28, 28, 1});
  EXPECT_EQ(model->param_count(), 225034);
  EXPECT_EQ(model->input_dim(), 784);
}

TEST(BenchPreset, AnUnknownNameListsThePresets) {
  try {
    bench_preset("resnet");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--model resnet: no such preset: expected mlp"), std::string::npos)
        << e.what();
  }
}

TEST(BenchArithmetic, BusBandwidthIsAlgbwTimesTwoPMinusOneOverP) {
  EXPECT_EQ(bus_bandwidth(3.0, 1), 0.0);  // one rank exchanges nothing
  EXPECT_DOUBLE_EQ(bus_bandwidth(3.0, 2), 3.0);
  EXPECT_DOUBLE_EQ(bus_bandwidth(3.0, 4), 4.5);
  EXPECT_DOUBLE_EQ(bus_bandwidth(1.0, 16), 1.875);
}

TEST(BenchArithmetic, QuantilesInterpolateAsNumPy) {
  // np.quantile([4, 1, 3, 2], [0, 0.5, 0.9, 1]) = [1, 2.5, 3.7, 4]
  const std::vector<double> values{4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(quantile(values, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(quantile(values, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(quantile(values, 0.9), 3.7);
  EXPECT_DOUBLE_EQ(quantile(values, 1.0), 4.0);
  EXPECT_DOUBLE_EQ(quantile({7.0}, 0.9), 7.0);
  EXPECT_EQ(quantile({}, 0.5), 0.0);
}

}  // namespace
}  // namespace shardfit
