// Names of activations, as users type them in a job file.
#include "kernels/activation_kind.h"

#include "kernels/error.h"

namespace shardfit {

namespace {
struct Named {
  const char* name;
  ActivationKind kind;
};
constexpr Named kActivations[] = {
    {"linear", ActivationKind::kLinear}, {"relu", ActivationKind::kRelu},       {"sigmoid", ActivationKind::kSigmoid},
    {"tanh", ActivationKind::kTanh},     {"softmax", ActivationKind::kSoftmax}, {"gelu", ActivationKind::kGelu},
};
}  // namespace

ActivationKind parse_activation(std::string_view name) {
  for (const auto& a : kActivations) {
    if (name == a.name) return a.kind;
  }
  SF_FAIL(cat("unknown activation '", name, "'; expected one of: linear, relu, sigmoid, tanh, softmax, gelu"));
}

std::string activation_name(ActivationKind kind) {
  for (const auto& a : kActivations) {
    if (kind == a.kind) return a.name;
  }
  return "?";
}

}  // namespace shardfit
