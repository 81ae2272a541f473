// The activations users name, shared by Dense (fused post-op), Activation layers and the loss fusion rules.
#pragma once

#include <string>
#include <string_view>

namespace shardfit {

enum class ActivationKind { kLinear, kRelu, kSigmoid, kTanh, kSoftmax, kGelu };

// "linear" | "relu" | "sigmoid" | "tanh" | "softmax" | "gelu"; throws Error naming the value otherwise.
ActivationKind parse_activation(std::string_view name);
std::string activation_name(ActivationKind kind);

}  // namespace shardfit
