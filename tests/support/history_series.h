// History values as series, and the measure the run-equivalence tests compare them with (P ranks against 1, a
// resumed run against an uninterrupted one). Header-only, no MPI: the CLI tests use it as well as the MPI tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "proto/shardfit.pb.h"

namespace shardfit::testing {

// The values History holds for key, epoch by epoch; epochs without it are skipped.
inline std::vector<double> series(const proto::History& history, const std::string& key) {
  std::vector<double> values;
  for (const auto& epoch : history.epochs()) {
    if (auto it = epoch.values().find(key); it != epoch.values().end()) values.push_back(it->second);
  }
  return values;
}

// One value per epoch of History: key's, or NaN where the epoch lacks it.
inline std::vector<double> series_or_nan(const proto::History& history, const std::string& key) {
  std::vector<double> values;
  for (const auto& epoch : history.epochs()) {
    const auto it = epoch.values().find(key);
    values.push_back(it != epoch.values().end() ? it->second : std::numeric_limits<double>::quiet_NaN());
  }
  return values;
}

// max |a - b| / max |b|: the relative difference of two runs' values (a and b must be as long).
inline double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0;
  double scale = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace shardfit::testing
