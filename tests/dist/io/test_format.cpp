// dist/io/format.h and metric_direction.h: each number spelt one way per purpose (the console's format_value,
// Python's str() for CSV and messages, JSON's json_number), NaN never as "-nan", shapes as NumPy prints them, and
// the one "higher is better" rule on the names the plot, the callbacks and the tests use.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "dist/io/format.h"
#include "dist/io/metric_direction.h"

namespace shardfit {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(Format, NaNHasOneSpellingPerPurposeWhateverItsSign) {
  for (double nan : {kNaN, -kNaN}) {
    EXPECT_EQ(format_value(nan), "nan");
    EXPECT_EQ(python_float(nan), "nan");
    EXPECT_EQ(json_number(nan), "NaN");
  }
  EXPECT_EQ(format_value(-kInf), "-inf");
  EXPECT_EQ(python_float(kInf), "inf");
  EXPECT_EQ(python_float(-kInf), "-inf");
  EXPECT_EQ(json_number(-kInf), "-Infinity");
}

TEST(Format, PythonFloatIsStrOfAFloat) {
  EXPECT_EQ(python_float(2.0), "2.0");
  EXPECT_EQ(python_float(0.1), "0.1");
  EXPECT_EQ(python_float(1e-5), "1e-05");
  EXPECT_EQ(python_float(1e16), "1e+16");
  EXPECT_EQ(python_float(-0.000123), "-0.000123");
  EXPECT_EQ(format_value(0.13271), "0.1327");
  EXPECT_EQ(format_value(0.000123456), "1.2346e-04");
}

TEST(Format, ShapesAsNumPyPrintsThem) {
  EXPECT_EQ(shape_text(std::vector<int64_t>{3, 5}), "(3, 5)");
  EXPECT_EQ(shape_text(std::vector<int64_t>{5}), "(5,)");
  EXPECT_EQ(shape_text(std::vector<int64_t>{}), "()");
  EXPECT_EQ(shape_text(std::vector<int64_t>{1797}, ShapeStyle::kPlain), "(1797)");
  EXPECT_EQ(shape_text(std::vector<int64_t>{2, 2, 3}, ShapeStyle::kPlain), "(2, 2, 3)");
}

TEST(MetricDirection, AccuracyLikeNamesGoUpEverythingElseDown) {
  for (const char* up : {"accuracy", "val_accuracy", "acc", "val_acc", "binary_accuracy", "auc", "val_auc_1",
                         "precision", "recall", "f1_score", "fmeasure"}) {
    EXPECT_TRUE(higher_is_better(up)) << up;
  }
  for (const char* down : {"loss", "val_loss", "mae", "val_mae", "mse", "learning_rate", "lr"}) {
    EXPECT_FALSE(higher_is_better(down)) << down;
  }
}

}  // namespace
}  // namespace shardfit
