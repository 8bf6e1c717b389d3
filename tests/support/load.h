#pragma once
// Pieces of the failover benchmark (docs/bench-failover.md): an open-loop HTTP load
// generator and a poller of HAProxy's `show servers state`, both timestamped on one
// steady clock so a failure's injection, the member leaving the balancer and every failed
// client request can be put on one time line.

#include "common/clock.h"

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pcloud::bench {

// Milliseconds on the steady clock (fractional), the time base of everything here.
double steadyMs();

enum class Outcome { Ok, Timeout, ConnectError, Reset, BadStatus };
const char* toString(Outcome o);

struct RequestRecord {
    double scheduled_ms = 0; // when the open-loop schedule said to send it
    double done_ms = 0;
    Outcome outcome = Outcome::Ok;
    int status = 0; // HTTP status when one was read
};

// Open loop: a new connection every 1/rate s, whatever happened to the earlier ones, so a
// stalled backend cannot slow the offered load down (no coordinated omission). Each
// request is `GET / HTTP/1.1` with `Connection: close`; it succeeds when a 200 arrives
// within `timeout_ms` of its scheduled time.
class LoadGenerator {
public:
    LoadGenerator(int port, double rate, double timeoutMs);
    ~LoadGenerator();
    void start();
    // Stops sending and waits until every outstanding request finished or timed out.
    void stop();
    // Every request finished so far, in the order they finished.
    std::vector<RequestRecord> records();

private:
    void run();
    int port_;
    double rate_;
    double timeout_ms_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::mutex mu_;
    std::vector<RequestRecord> records_;
};

// One observation of a server by the poller.
struct ServerSample {
    double t_ms = 0;
    bool in = false;    // admin state ready AND operational state up: gets new traffic
    std::string state;  // ready|drain|out (admin)
    std::string health; // up|down|starting|stopping (operational)
};

// Polls `show servers state BACKEND` every `period_ms` and keeps the transitions of one
// server (every sample whose `in`, state or health differ from the previous one).
class StatePoller {
public:
    StatePoller(std::string socket, std::string backend, std::string server, double periodMs);
    ~StatePoller();
    void start();
    void stop();
    std::vector<ServerSample> transitions();
    std::uint64_t polls() const { return polls_; }
    std::uint64_t errors() const { return errors_; }

private:
    void run();
    std::string socket_, backend_, server_;
    double period_ms_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> polls_{0}, errors_{0};
    std::thread thread_;
    std::mutex mu_;
    std::vector<ServerSample> transitions_;
};

} // namespace pcloud::bench
