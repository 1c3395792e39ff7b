// Parsing human byte sizes ("512m", "8g", "1.5GiB", "5GB") for budgets and shard sizes.
#pragma once

#include <cstddef>
#include <string>

namespace vacc {

// Accepts a number with an optional unit: b, k/kb/kib, m/mb/mib, g/gb/gib, t/tb/tib
// (case-insensitive). kb/mb/gb/tb are decimal (1000^n); k/m/g/t and kib/mib/gib/tib binary
// (1024^n). Throws vacc::Error naming `what` on bad input.
size_t parse_byte_size(const std::string& text, const std::string& what);

}  // namespace vacc
