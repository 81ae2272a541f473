#include "dist/io/metric_direction.h"

namespace shardfit {

bool higher_is_better(std::string_view name) {
  if (name.starts_with("val_")) name.remove_prefix(4);
  for (std::string_view word : {"acc", "auc", "precision", "recall", "f1", "fmeasure"}) {
    if (name.find(word) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace shardfit
