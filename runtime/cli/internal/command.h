// Glue between the `tessera` entry point and its subcommands.
//
// Each subcommand lives in runtime/cli/<name>_command.cc and registers itself
// with an Add<Name>Command function declared here. After parsing, the selected
// subcommand's callback stores its process exit code in `*exit_code`.
#pragma once

#include <string_view>

#include "CLI/CLI.hpp"

namespace tessera::cli {

// Exit codes shared by all subcommands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure =
    1;  // The command ran and failed (bad model, I/O...).
inline constexpr int kExitUsage = 2;  // Bad flags or an unavailable subcommand.

void AddVersionCommand(CLI::App& app, int* exit_code);
void AddRunCommand(CLI::App& app, int* exit_code);
void AddServeCommand(CLI::App& app, int* exit_code);
void AddTokenizeCommand(CLI::App& app, int* exit_code);
void AddMakeModelCommand(CLI::App& app, int* exit_code);
void AddPlanCommand(CLI::App& app, int* exit_code);
void AddSimulateCommand(CLI::App& app, int* exit_code);
void AddCalibrateCommand(CLI::App& app, int* exit_code);
void AddWorkerCommand(CLI::App& app, int* exit_code);
void AddBenchCommand(CLI::App& app, int* exit_code);

// `tessera bench <what>` subcommands.
void AddBenchKernelsCommand(CLI::App& bench, int* exit_code);
void AddBenchDecodeCommand(CLI::App& bench, int* exit_code);
void AddBenchServeCommand(CLI::App& bench, int* exit_code);
void AddBenchCommCommand(CLI::App& bench, int* exit_code);
void AddBenchKvTransferCommand(CLI::App& bench, int* exit_code);
void AddBenchCostModelCommand(CLI::App& bench, int* exit_code);
void AddBenchSimulatorCommand(CLI::App& bench, int* exit_code);

// Registers a subcommand that is not built yet: it accepts any arguments,
// prints "tessera <name>: not built yet (<what>)" and exits with kExitUsage.
CLI::App* AddPendingCommand(CLI::App& parent, std::string_view name,
                            std::string_view description, std::string_view what,
                            int* exit_code);

// Prints "tessera: <message>" to stderr and returns kExitFailure (for
// callbacks).
int ReportError(std::string_view command, std::string_view message);

}  // namespace tessera::cli
