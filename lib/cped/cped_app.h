#pragma once
// cped, the control daemon, as a library function so main.cc stays a few lines: options,
// start-up checks (a corrupt db file stops it with exit Config and the file untouched), the
// embedded hub (or an external broker), the command API on pcloud.cped, the event journal
// fed from pcloud.journal and published on pcloud.events, dped supervision, signals.

#include "common/clock.h"
#include "cped/coordinator.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pcloud::cped {

// Makes the Coordinator of `cped --cluster URL --node-name N` (makeEtcdCoordinator); cped's
// main passes it when built with etcd, so pcloud_cped itself does not link gRPC.
using ClusterCoordinatorFactory = std::function<Result<std::unique_ptr<Coordinator>>(
    const ClusterSettings& settings, const Clock& clock)>;

// Returns the process exit status (ExitCode). Without a factory, --cluster is refused.
int runCped(int argc, char** argv, ClusterCoordinatorFactory cluster = {});

} // namespace pcloud::cped
