// The end-of-fit verdict: reads the loss and val_loss curves of a History the way the textbook teaches (diverging,
// overfitting, underfitting, still improving, good fit) and says which, with the numbers behind it. Pure function, no
// MPI, no I/O.
#pragma once

#include <string>

#include "proto/shardfit.pb.h"

namespace shardfit {

// The rule, its thresholds and why each is what it is: docs/verdict.md. In short, on the epochs that have val_loss:
//   diverging         a NaN/inf loss or val_loss; or the training loss ended above 3x the chance level, or passed 3x
//                     it at some epoch and ended at 80% of it or more (blew up and never recovered), or ended more
//                     than 10% above its own low after the best val_loss's epoch without being near zero (2% of the
//                     chance level; lower the learning rate);
//   undetermined      no epochs, no val_loss, or fewer than 3 epochs of it;
//   underfitting      train loss and best val_loss both stay high: near the chance level of cross-entropy, or less
//                     than 30% below where they started;
//   not_generalizing  cross-entropy only: the training loss fell below 80% of the chance level but no val_loss did
//                     better than guessing (best val_loss >= the chance level);
//   overfitting       the best val_loss is not in the last 20% of the validated epochs and afterwards val_loss rose
//                     10% above it while the training loss fell, or val_loss stalled at its floor while the training
//                     loss fell 20% more (not when the last validated epoch holds the best val_loss);
//   still_improving   the best val_loss is in the last 20% and over that stretch val_loss and loss both fell 5%
//                     (between the plotted values at its ends);
//   good_fit          otherwise.
// Epochs are 0-based in the fields (best_epoch, overfitting_from_epoch = best_epoch + 1; -1 when there is none) and
// 1-based in the summary, like the console's "Epoch N/M". `numbers` holds every value the rule compared.
proto::Diagnosis diagnose(const proto::History& history);

// The chance level of the loss named in history.params (ln K for softmax cross-entropy with K = output_units,
// ln 2 for binary cross-entropy); 0 when the loss has none or the history does not say enough.
double chance_level(const proto::HistoryParams& params);

}  // namespace shardfit
