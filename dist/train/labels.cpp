#include "dist/train/labels.h"

#include "dist/io/dataset.h"
#include "dist/sharding.h"
#include "kernels/error.h"
#include "kernels/model.h"

namespace shardfit {

namespace {

// Class ids, one per sample, are what sparse cross-entropy trains on. Its label width is 1, but so is that of any
// one-output model (mse regression, one sigmoid unit with binary_crossentropy), whose targets are taken as they
// are: the loss decides, not the width (as label_dim_for does).
bool trains_on_class_ids(const std::string& loss) { return loss == "sparse_categorical_crossentropy"; }

}  // namespace

LabelLayout prepare_labels(const Dataset& data, const Model& model, const std::string& loss, const std::string& role,
                           int rank, int world) {
  const int64_t out = model.output_dim();
  LabelLayout layout = LabelLayout::kAsIs;
  if (trains_on_class_ids(loss)) {
    if (!data.labels_are_ids()) {
      SF_CHECK(data.label_cols() == out,
               cat("data.", role, ".y has ", data.label_cols(), " values per sample but the model has ", out,
                   " outputs: expected class ids (one per sample) or one-hot rows of ", out));
      layout = LabelLayout::kOneHotToIds;
    }
  } else if (data.labels_are_ids() && out > 1 && data.label_cols() == 1) {
    SF_CHECK(loss == "categorical_crossentropy",
             cat("data.", role, ".y has 1 value per sample but the model has ", out, " outputs and loss '", loss,
                 "': expected ", out, " values per sample (or class ids with a cross-entropy loss)"),
             "check the last Dense layer's units against the labels");
    layout = LabelLayout::kIdsToOneHot;
  } else {
    SF_CHECK(data.label_cols() == out,
             cat("data.", role, ".y has ", data.label_cols(), " value(s) per sample but the model has ", out,
                 " outputs and loss '", loss, "': expected ", out, " values per sample"),
             "check the last Dense layer's units against the labels");
  }
  // Class ids are range-checked once, before the first step, rather than failing mid-epoch.
  if (layout == LabelLayout::kIdsToOneHot || (layout == LabelLayout::kAsIs && trains_on_class_ids(loss))) {
    const Slice share = slice_of(data.rows(), rank, world);
    data.check_class_ids(out, share.offset, share.count);
  }
  return layout;
}

}  // namespace shardfit
