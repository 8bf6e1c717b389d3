#pragma once
// Process signal set-up shared by the daemons (cped, dped).

#include <csignal>

namespace pcloud::signals {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, so every thread started after
// inherits the mask and one thread takes them with sigwait() on the returned set; ignores
// SIGPIPE (a peer closing a socket must not kill the daemon). Call before any thread starts.
sigset_t blockShutdownSignals();

} // namespace pcloud::signals
