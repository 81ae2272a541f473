// Labels meet the model: how a data set's labels reach the model's outputs, for fit, evaluate and predict alike.
#pragma once

#include <string>

namespace shardfit {

class Dataset;
class Model;
enum class LabelLayout;

// How the labels of `data` reach the model — as stored, class ids to one-hot (categorical_crossentropy), or
// one-hot to ids (sparse) — checked against the model's outputs and the loss (which decides whether a 1-wide label
// is a class id or a target); class ids are range-checked up front, each of the `world` ranks checking its
// contiguous share of the rows (call it in an agreed phase). role names the data set in errors.
LabelLayout prepare_labels(const Dataset& data, const Model& model, const std::string& loss, const std::string& role,
                           int rank, int world);

}  // namespace shardfit
