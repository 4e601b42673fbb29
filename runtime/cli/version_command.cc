#include <cstdio>

#include "runtime/build_info.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddVersionCommand(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("version",
                                     "Print the version, git commit, enabled "
                                     "backends and detected CPU features");
  sub->final_callback([exit_code] {
    std::fputs(BuildInfoReport().c_str(), stdout);
    *exit_code = kExitOk;
  });
}

}  // namespace tessera::cli
