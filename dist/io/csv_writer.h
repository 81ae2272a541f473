// The one CSV writer of shardfit's files: history.csv and CSVLogger's log. Fields are quoted as Python's csv module
// quotes them (QUOTE_MINIMAL: only a field holding the separator, a quote or a line break, quotes doubled), so
// pandas.read_csv and csv.reader read back exactly the text written. Numbers go in as python_float's text.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace shardfit {

// One field, quoted when it must be: `a,b` -> `"a,b"`, `say "hi"` -> `"say ""hi"""`.
std::string csv_field(std::string_view text, char separator);

// One row: each field through csv_field, joined by `separator`, ended by `line_end` ("\n" for history.csv; "\r\n",
// the excel dialect, for CSVLogger as Keras writes it).
std::string csv_row(std::span<const std::string> fields, char separator, std::string_view line_end);

}  // namespace shardfit
