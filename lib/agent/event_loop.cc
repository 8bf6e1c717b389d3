#include "agent/event_loop.h"

#include "common/log.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace pcloud::agent {

void EventLoop::runOnce(Millis maxWaitMs) {
    PollSet ps;
    Millis now = clock_.monotonicMs();
    for (auto* s : sources_)
        s->prepare(ps, now);
    if (stop_)
        return;
    int timeout = -1;
    if (ps.wake_at != kNever) {
        Millis d = ps.wake_at - clock_.monotonicMs();
        timeout = d <= 0 ? 0 : static_cast<int>(std::min<Millis>(d, 3'600'000));
    }
    if (maxWaitMs >= 0 && (timeout < 0 || timeout > maxWaitMs))
        timeout = static_cast<int>(maxWaitMs);
    int n = ::poll(ps.fds.data(), ps.fds.size(), timeout);
    if (n < 0 && errno != EINTR) {
        PCLOUD_LOG(Error, "poll failed", {{"error", std::strerror(errno)}});
        for (auto& f : ps.fds)
            f.revents = 0;
    } else if (n < 0) {
        for (auto& f : ps.fds)
            f.revents = 0;
    }
    now = clock_.monotonicMs();
    for (auto* s : sources_)
        s->dispatch(ps, now);
}

void EventLoop::run() {
    while (!stop_)
        runOnce();
}

} // namespace pcloud::agent
