// Inverted dropout: in training each unit is kept with probability 1 - rate and scaled by 1 / (1 - rate); in
// inference it is the identity. The mask is a hash of (seed, layer, step, GLOBAL row, unit), so it does not
// depend on how a global batch is split across ranks, and nothing random is stored between steps.
#pragma once

#include <unordered_map>

#include "kernels/layer.h"

namespace shardfit {

class Dropout final : public Layer {
 public:
  Dropout(std::string name, int64_t dim, float rate, uint64_t layer_index);

  std::string kind() const override { return "dropout"; }
  std::string type_name() const override { return "Dropout"; }
  float rate() const { return rate_; }

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

  // The scale (0 or 1 / (1 - rate)) applied to unit j of global row r at a step: what forward uses.
  float mask(uint64_t seed, uint64_t step, int64_t global_row, int64_t unit) const;

 private:
  float rate_;
  uint64_t layer_index_;
  std::unordered_map<int64_t, LayerBuffers> plans_;
  bool last_training_ = false;
};

}  // namespace shardfit
