#include "tests/util/test_util.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace tessera::testing {
namespace {

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDirs {
  std::vector<std::string> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};

TempDirs& AllTempDirs() {
  static TempDirs* dirs = new TempDirs();  // Cleaned by the atexit below.
  static const bool registered = [] {
    std::atexit([] { delete &AllTempDirs(); });
    return true;
  }();
  (void)registered;
  return *dirs;
}

}  // namespace

std::optional<std::string> SharedDir() {
  const char* env = std::getenv("TESSERA_SHARED");
  std::string dir = env != nullptr ? env : TESSERA_SHARED_DEFAULT;
  if (!IsDir(dir)) return std::nullopt;
  return dir;
}

std::string TesseraBin() {
  const char* env = std::getenv("TESSERA_BIN");
  return env != nullptr ? env : TESSERA_BIN_DEFAULT;
}

std::string MakeTempDir() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "tessera-test-XXXXXX").string();
  char* made = ::mkdtemp(tmpl.data());
  if (made == nullptr) std::abort();
  AllTempDirs().dirs.push_back(tmpl);
  return tmpl;
}

CommandResult RunCommand(const std::string& command) {
  const std::string dir = MakeTempDir();
  const std::string out_path = dir + "/out", err_path = dir + "/err";
  const std::string full = command + " >" + out_path + " 2>" + err_path;
  const int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = Slurp(out_path);
  r.err = Slurp(err_path);
  return r;
}

}  // namespace tessera::testing
