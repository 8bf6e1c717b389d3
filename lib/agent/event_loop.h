#pragma once
// The agent's single-threaded poll() loop. Every part (the AMQP link, the D-Bus connection,
// process pidfds, probe sockets, signals) is a Source: before each poll() it adds the fds it
// wants and its next deadline; after poll() it handles what is ready. Nothing polls busily:
// when nothing is due the loop sleeps in poll() until an fd fires or the earliest deadline.

#include "common/clock.h"

#include <poll.h>

#include <cstddef>
#include <limits>
#include <vector>

namespace pcloud::agent {

constexpr Millis kNever = std::numeric_limits<Millis>::max();

struct PollSet {
    std::vector<pollfd> fds;
    Millis wake_at = kNever; // monotonic ms

    std::size_t add(int fd, short events) {
        fds.push_back(pollfd{fd, events, 0});
        return fds.size() - 1;
    }
    short revents(std::size_t index) const { return fds[index].revents; }
    void wakeAt(Millis t) {
        if (t < wake_at)
            wake_at = t;
    }
};

class Source {
public:
    virtual ~Source() = default;
    // Add fds and the next deadline. May do non-blocking work first (flush output).
    virtual void prepare(PollSet& ps, Millis now) = 0;
    // Handle ready fds and due timers. Called after every poll(), ready or not.
    virtual void dispatch(const PollSet& ps, Millis now) = 0;
};

class EventLoop {
public:
    explicit EventLoop(const Clock& clock) : clock_(clock) {}
    void add(Source* s) { sources_.push_back(s); }
    void stop() { stop_ = true; }
    bool stopped() const { return stop_; }
    // Runs until stop(); returns the number of iterations (for tests and the idle check).
    void run();
    // One iteration with a cap on how long poll() may sleep (tests).
    void runOnce(Millis maxWaitMs = -1);

private:
    const Clock& clock_;
    std::vector<Source*> sources_;
    bool stop_ = false;
};

} // namespace pcloud::agent
