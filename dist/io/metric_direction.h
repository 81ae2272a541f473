// Whether a logged value improves upward: the one rule behind the plot's "best" marker and the callbacks' mode
// "auto" (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint), so they never disagree about a name. (The verdict
// reads only loss and val_loss, which improve downward.)
#pragma once

#include <string_view>

namespace shardfit {

// True for accuracy-like names: the name (a "val_" prefix ignored) holds "acc", "auc", "precision", "recall",
// "f1" or "fmeasure". Everything else, the loss and mae included, improves downward. Keras 3 decides "auto" from
// the compiled metric's direction; the metrics this trainer computes are accuracy (up) and mae / the loss (down),
// on which the name rule and Keras agree.
bool higher_is_better(std::string_view name);

}  // namespace shardfit
