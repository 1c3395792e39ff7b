#include "vacc/core/text_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "vacc/core/error.h"

namespace vacc {

void write_file_atomically(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    VACC_CHECK(out.good(), "cannot write ", path, " (cannot create ", tmp, ")");
    out << text;
    out.flush();
    if (!out.good()) {
      out.close();
      fs::remove(tmp, ec);
      fail("cannot write ", path, " (disk full?)");
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fail("cannot replace ", path, ": ", ec.message());
  }
}

}  // namespace vacc
