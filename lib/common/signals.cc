#include "common/signals.h"

#include <pthread.h>

namespace pcloud::signals {

sigset_t blockShutdownSignals() {
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    return sigs;
}

} // namespace pcloud::signals
