// ModelCheckpoint (keras/src/callbacks/model_checkpoint.py), weights only, written by rank 0 as .npz. The file name
// is a Python str.format template over the fields Keras passes (epoch, 1-based, and every logs key), formatted by
// libfmt, whose format-spec language is Python's: "{epoch:02d}", "{val_loss:.4f}", "{loss:.3e}", "{epoch}".
#include <fmt/args.h>
#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dist/io/format.h"
#include "dist/io/weights_io.h"
#include "dist/train/callbacks/internal.h"
#include "kernels/error.h"

namespace shardfit::callbacks {
namespace {

// A logged value, formatted as Python formats a float where fmt and Python part ways: an empty spec is str()
// ("2.0", where fmt would write "2"), a spec without a type keeps str()'s ".0" on a whole number ({loss:6} of 2.0
// is "   2.0"), and a NaN never shows its sign bit ("nan", where fmt would write "-nan").
struct PythonFloat {
  double value;
};

// The epoch, an int in Python: a float presentation type ({epoch:.1f}) formats it as a float, as Python does; fmt
// alone refuses a precision on an integer.
struct PythonInt {
  int64_t value;
};

}  // namespace
}  // namespace shardfit::callbacks

template <>
struct fmt::formatter<shardfit::callbacks::PythonFloat> : fmt::formatter<double> {
  bool str_ = false;      // no spec: Python's str()
  bool untyped_ = false;  // no presentation type: shortest digits, as str() writes them
  std::string whole_spec_;
  fmt::formatter<double> whole_;  // the spec with '#': fmt then keeps the ".0" of a whole number, as str() does

  auto parse(fmt::format_parse_context& ctx) -> decltype(ctx.begin()) {
    const auto* end = ctx.begin();
    while (end != ctx.end() && *end != '}') ++end;
    const std::string_view spec(ctx.begin(), static_cast<size_t>(end - ctx.begin()));
    str_ = spec.empty();
    untyped_ = !str_ && !std::isalpha(static_cast<unsigned char>(spec.back()));
    if (untyped_) {
      // '#' goes after [[fill]align][sign] in the spec grammar, which fmt shares with Python.
      size_t at = 0;
      if (spec.size() >= 2 && std::string_view("<>^").find(spec[1]) != std::string_view::npos) {
        at = 2;
      } else if (std::string_view("<>^").find(spec[0]) != std::string_view::npos) {
        at = 1;
      }
      if (at < spec.size() && std::string_view("+- ").find(spec[at]) != std::string_view::npos) ++at;
      whole_spec_ = std::string(spec.substr(0, at)) + (spec.substr(at).starts_with('#') ? "" : "#") +
                    std::string(spec.substr(at)) + "}";
      fmt::format_parse_context whole_ctx(whole_spec_);
      whole_.parse(whole_ctx);
    }
    return fmt::formatter<double>::parse(ctx);
  }

  auto format(shardfit::callbacks::PythonFloat v, fmt::format_context& ctx) const -> decltype(ctx.out()) {
    if (str_) return fmt::format_to(ctx.out(), "{}", shardfit::python_float(v.value));
    // Below 1e16 str() writes a whole number in fixed notation ("2.0"); from there on in exponent form, as fmt does.
    if (untyped_ && std::isfinite(v.value) && v.value == std::trunc(v.value) && std::fabs(v.value) < 1e16) {
      return whole_.format(v.value, ctx);
    }
    return fmt::formatter<double>::format(std::isnan(v.value) ? std::fabs(v.value) : v.value, ctx);
  }
};

template <>
struct fmt::formatter<shardfit::callbacks::PythonInt> {
  fmt::formatter<int64_t> as_int_;
  fmt::formatter<shardfit::callbacks::PythonFloat> as_float_;
  bool float_type_ = false;

  auto parse(fmt::format_parse_context& ctx) -> decltype(ctx.begin()) {
    const auto* end = ctx.begin();
    while (end != ctx.end() && *end != '}') ++end;
    float_type_ = end != ctx.begin() && std::string_view("eEfFgG").find(end[-1]) != std::string_view::npos;
    return float_type_ ? as_float_.parse(ctx) : as_int_.parse(ctx);
  }

  auto format(shardfit::callbacks::PythonInt v, fmt::format_context& ctx) const -> decltype(ctx.out()) {
    if (float_type_) return as_float_.format({static_cast<double>(v.value)}, ctx);
    return as_int_.format(v.value, ctx);
  }
};

namespace shardfit::callbacks {
namespace {

// One replacement field of the template: what fmt formats, found beforehand so that errors can name it.
struct TemplateField {
  std::string name;
  std::string spec;  // after the ':', as written
};

// The fields of `tpl`, checked for what fmt would accept but Python would not (a positional "{}" or "{0}": fmt
// takes it as the first named argument), or would print differently (a precision without a type: Python's
// float format then keeps a ".0" that fmt drops). Braces follow str.format: "{{" and "}}" are literal braces.
std::vector<TemplateField> template_fields(const std::string& tpl, const std::string& where) {
  std::vector<TemplateField> fields;
  for (size_t i = 0; i < tpl.size(); ++i) {
    if (tpl[i] == '}') {
      SF_CHECK(i + 1 < tpl.size() && tpl[i + 1] == '}', cat(where, ": single '}' (write '}}' for a literal brace)"));
      ++i;
      continue;
    }
    if (tpl[i] != '{') continue;
    if (i + 1 < tpl.size() && tpl[i + 1] == '{') {
      ++i;
      continue;
    }
    const size_t close = tpl.find('}', i);
    SF_CHECK(close != std::string::npos, cat(where, ": '{' without a closing '}'"));
    const std::string inside = tpl.substr(i + 1, close - i - 1);
    SF_CHECK(inside.find('{') == std::string::npos, cat(where, ": nested fields are not supported"));
    const size_t colon = inside.find(':');
    TemplateField field{inside.substr(0, colon), colon == std::string::npos ? "" : inside.substr(colon + 1)};
    SF_CHECK(!field.name.empty() && !std::isdigit(static_cast<unsigned char>(field.name[0])),
             cat(where, ": a field needs a name ({epoch}, {val_loss:.2f}, ...)"));
    SF_CHECK(field.name.find_first_of("!.[]") == std::string::npos,
             cat(where, ": field '", field.name, "': conversions, attributes and indexes are not supported"));
    const size_t dot = field.spec.rfind('.');
    const bool bare_precision = dot != std::string::npos && dot + 1 < field.spec.size() &&
                                field.spec.find_first_not_of("0123456789", dot + 1) == std::string::npos;
    SF_CHECK(!bare_precision, cat(where, ": field '", field.name, "': a precision needs a type (f, e or g)"));
    fields.push_back(std::move(field));
    i = close;
  }
  return fields;
}

// fmt's message for `spec` on `value`, or "" when fmt takes it.
template <typename Value>
std::string spec_error(const std::string& spec, Value value) {
  try {
    (void)fmt::format(fmt::runtime("{:" + spec + "}"), value);
    return "";
  } catch (const fmt::format_error& error) {
    return error.what();
  }
}

class ModelCheckpoint : public Callback {
 public:
  ModelCheckpoint(std::string filepath, std::string field, Monitor monitor, bool save_best_only)
      : filepath_(std::move(filepath)),
        field_(std::move(field)),
        where_(cat(field_, " = '", filepath_, "'")),
        fields_(template_fields(filepath_, where_)),
        monitor_(std::move(monitor)),
        save_best_only_(save_best_only) {
    // A spec fmt takes for no value is wrong whatever the logs hold: refused now, not after the first epoch. One
    // that only an integer takes ({loss:02d}) fails at the epoch end, naming the value.
    for (const TemplateField& f : fields_) {
      const std::string as_float = spec_error(f.spec, PythonFloat{0.5});
      const std::string why = f.name == "epoch"  ? spec_error(f.spec, PythonInt{1})
                              : as_float.empty() ? as_float
                                                 : spec_error(f.spec, int64_t{1});
      SF_CHECK(why.empty(), cat(where_, ": format spec ':", f.spec, "' of field '", f.name, "' is not supported (", why,
                                "; the spec is Python's: [[fill]align][sign][0][width][.precision][type])"));
    }
  }

  std::string name() const override { return "model_checkpoint"; }

  void on_epoch_end(int64_t epoch, EpochLogs& logs, TrainingControl& control) override {
    // Every rank formats the name, so an unknown field fails on all of them together.
    const std::filesystem::path path = file_path(epoch, logs);
    bool save = true;
    if (save_best_only_) {
      const auto it = logs.find(monitor_.key);
      if (it == logs.end()) {
        if (!warned_) {
          print_line(control, cat("warning: Can save best model only with ", monitor_.key, " available."));
          warned_ = true;
        }
      } else if (monitor_.improves(it->second, best_)) {
        best_ = it->second;
      } else {
        save = false;
      }
    }
    if (save && control.is_root) {
      create_parent_folders(path, field_);
      save_weights(path, *control.model);
    }
  }

  proto::CallbackState::KindCase state_kind() const override { return proto::CallbackState::kModelCheckpoint; }

  void save_state(proto::CallbackState& state) const override {
    proto::ModelCheckpointState& s = *state.mutable_model_checkpoint();
    set_optional(best_, s, &proto::ModelCheckpointState::set_best);
    s.set_warned(warned_);
  }

  void load_state(const proto::CallbackState& state) override {
    const proto::ModelCheckpointState& s = state.model_checkpoint();
    best_ = get_optional(s.has_best(), s.best());
    warned_ = s.warned();
  }

 private:
  std::filesystem::path file_path(int64_t epoch, const EpochLogs& logs) const {
    for (const TemplateField& f : fields_) {
      SF_CHECK(f.name == "epoch" || logs.contains(f.name),
               cat(where_, ": no value named '", f.name, "' at epoch ", epoch + 1, " (available: epoch",
                   logs.empty() ? "" : ",", joined_keys(logs), ")"));
    }
    // Keras passes the 1-based epoch and every logs key.
    fmt::dynamic_format_arg_store<fmt::format_context> args;
    args.push_back(fmt::arg("epoch", PythonInt{epoch + 1}));
    for (const auto& [key, value] : logs) {
      if (key != "epoch") args.push_back(fmt::arg(key.c_str(), PythonFloat{value}));
    }
    try {
      return fmt::vformat(filepath_, args);
    } catch (const fmt::format_error& error) {
      // The specs passed for some value at construction; here one met a value of the other type.
      for (const TemplateField& f : fields_) {
        if (f.name != "epoch" && !spec_error(f.spec, PythonFloat{0.5}).empty()) {
          SF_FAIL(cat(where_, ": field '", f.name, "' is a float; format spec ':", f.spec, "' needs an integer"));
        }
      }
      SF_FAIL(cat(where_, ": ", error.what()));
    }
  }

  std::string filepath_;
  std::string field_;
  std::string where_;  // the field and its template, for errors
  std::vector<TemplateField> fields_;
  Monitor monitor_;
  bool save_best_only_;

  std::optional<double> best_;
  bool warned_ = false;
};

}  // namespace

std::unique_ptr<Callback> make_model_checkpoint(const proto::ModelCheckpoint& c, const std::string& field) {
  SF_CHECK(!c.filepath().empty(),
           cat(field, ".filepath is empty: expected a file name such as \"ckpt/weights.{epoch:02d}.npz\""));
  Monitor monitor =
      make_monitor(field, c.has_monitor() ? c.monitor() : "val_loss", c.has_mode() ? c.mode() : "auto", 0.0);
  return std::make_unique<ModelCheckpoint>(c.filepath(), field + ".filepath", std::move(monitor),
                                           c.has_save_best_only() && c.save_best_only());
}

}  // namespace shardfit::callbacks
