// `tessera calibrate`: measures this machine with the runtime's own kernels
// (see runtime/calibration.h) and writes a `cpu-local` device profile for the
// planner, optionally wrapped in a one-node cluster file.
#include <cstdio>
#include <memory>
#include <string>

#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "placement/cluster.h"
#include "runtime/calibration.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

struct CalibrateArgs {
  std::string out;
  std::string cluster_out;
  CalibrationOptions options;
};

absl::Status RunCalibrate(const CalibrateArgs& a) {
  std::fprintf(stderr, "calibrating (%.2f s per measurement)...\n",
               a.options.seconds);
  ASSIGN_OR_RETURN(placement::DeviceProfile p, CalibrateCpu(a.options));
  const std::string json = placement::DeviceProfileToJson(p) + "\n";
  std::fprintf(stderr, "%s\n", p.source.c_str());
  if (a.out.empty()) {
    std::fputs(json.c_str(), stdout);
  } else {
    RETURN_IF_ERROR(WriteStringToFile(a.out, json));
  }
  if (!a.cluster_out.empty()) {
    const std::string cluster = fmt::format(
        "{{\"name\": \"this machine\", \"nodes\": 1, \"devices_per_node\": 1, "
        "\"device\": {}}}\n",
        placement::DeviceProfileToJson(p));
    RETURN_IF_ERROR(WriteStringToFile(a.cluster_out, cluster));
  }
  return absl::OkStatus();
}

}  // namespace

void AddCalibrateCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<CalibrateArgs>();
  CLI::App* sub = app.add_subcommand(
      "calibrate", "Measure this machine and write a cluster profile");
  sub->add_option("--out", args->out,
                  "Write the cpu-local device profile here (default: stdout)");
  sub->add_option("--cluster-out", args->cluster_out,
                  "Also write a one-node cluster file using the profile");
  sub->add_option("--threads", args->options.threads,
                  "Threads to measure with (default: all cores)")
      ->check(CLI::Range(1, 1024));
  sub->add_option("--seconds", args->options.seconds, "Seconds per measurement")
      ->check(CLI::Range(0.01, 60.0))
      ->capture_default_str();
  sub->final_callback([args, exit_code] {
    absl::Status status = RunCalibrate(*args);
    *exit_code = status.ok()
                     ? kExitOk
                     : ReportError("calibrate", std::string(status.message()));
  });
}

}  // namespace tessera::cli
