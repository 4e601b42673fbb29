#include <cstdio>
#include <string>

#include "runtime/cli/internal/command.h"

namespace tessera::cli {

CLI::App* AddPendingCommand(CLI::App& parent, std::string_view name,
                            std::string_view description, std::string_view what,
                            int* exit_code) {
  CLI::App* sub =
      parent.add_subcommand(std::string(name), std::string(description));
  sub->allow_extras();
  std::string path(name);
  for (const CLI::App* p = &parent; p->get_parent() != nullptr;
       p = p->get_parent()) {
    path = p->get_name() + " " + path;
  }
  sub->final_callback([path, what = std::string(what), exit_code] {
    std::fprintf(stderr, "tessera %s: not built yet (%s)\n", path.c_str(),
                 what.c_str());
    *exit_code = kExitUsage;
  });
  return sub;
}

int ReportError(std::string_view command, std::string_view message) {
  std::fprintf(stderr, "tessera %.*s: %.*s\n", static_cast<int>(command.size()),
               command.data(), static_cast<int>(message.size()),
               message.data());
  return kExitFailure;
}

}  // namespace tessera::cli
