#include "dist/train/callbacks/internal.h"

#include <cmath>
#include <system_error>

#include "dist/io/metric_direction.h"
#include "kernels/error.h"

namespace shardfit::callbacks {

Monitor make_monitor(const std::string& field, const std::string& monitor, const std::string& mode, double min_delta) {
  SF_CHECK(!monitor.empty(), cat(field, ".monitor is empty: expected a logged name such as val_loss"));
  SF_CHECK(std::isfinite(min_delta), cat(field, ".min_delta = ", min_delta, ": expected a finite number"));
  Direction direction = Direction::kMin;
  if (mode == "max") {
    direction = Direction::kMax;
  } else if (mode != "min") {
    SF_CHECK(mode == "auto", cat(field, ".mode = '", mode, "': expected auto, min or max"));
    direction = higher_is_better(monitor) ? Direction::kMax : Direction::kMin;
  }
  return {monitor, direction, std::abs(min_delta)};
}

void print_line(TrainingControl& control, const std::string& line) {
  if (control.print) control.print(line);
}

std::string joined_keys(const EpochLogs& logs) {
  std::string out;
  for (const auto& [key, value] : logs) out += (out.empty() ? "" : ",") + key;
  return out;
}

void create_parent_folders(const std::filesystem::path& path, const std::string& who) {
  if (!path.has_parent_path()) return;
  std::error_code error;
  std::filesystem::create_directories(path.parent_path(), error);
  SF_CHECK(!error, cat(who, ": cannot create the folder '", path.parent_path().string(), "': ", error.message()));
}

}  // namespace shardfit::callbacks
