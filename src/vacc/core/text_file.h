// Writing a whole text file so that a reader never sees half of it and a failure leaves the
// old file intact: written to PATH.tmp.PID, then renamed over PATH.
#pragma once

#include <string>

namespace vacc {

// Throws vacc::Error naming the file (and what failed) on any problem; the temporary is
// removed then.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace vacc
