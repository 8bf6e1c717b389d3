#include "support/load.h"

#include "referee/haproxy_referee.h"
#include "referee/runtime_api.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pcloud::bench {

double steadyMs() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

const char* toString(Outcome o) {
    switch (o) {
    case Outcome::Ok:
        return "ok";
    case Outcome::Timeout:
        return "timeout";
    case Outcome::ConnectError:
        return "connect-error";
    case Outcome::Reset:
        return "reset";
    case Outcome::BadStatus:
        return "bad-status";
    }
    return "?";
}

LoadGenerator::LoadGenerator(int port, double rate, double timeoutMs)
    : port_(port), rate_(rate), timeout_ms_(timeoutMs) {}

LoadGenerator::~LoadGenerator() {
    stop();
}

void LoadGenerator::start() {
    thread_ = std::thread([this] { run(); });
}

void LoadGenerator::stop() {
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

std::vector<RequestRecord> LoadGenerator::records() {
    std::lock_guard lock(mu_);
    return records_;
}

namespace {

struct Pending {
    RequestRecord rec;
    bool connected = false;
    std::string in;
};

int statusOf(const std::string& text) {
    // "HTTP/1.x NNN ..."
    if (text.size() < 12 || text.compare(0, 5, "HTTP/") != 0)
        return 0;
    auto sp = text.find(' ');
    if (sp == std::string::npos || sp + 4 > text.size())
        return 0;
    return std::atoi(text.c_str() + sp + 1);
}

} // namespace

void LoadGenerator::run() {
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    std::map<int, Pending> pending;
    const std::string request =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pcloud-failover-bench\r\n"
        "Connection: close\r\n\r\n";
    const double period = 1000.0 / rate_;
    double next = steadyMs();
    std::vector<RequestRecord> done;

    auto finish = [&](int fd, Outcome o, int status) {
        auto it = pending.find(fd);
        if (it == pending.end())
            return;
        it->second.rec.done_ms = steadyMs();
        it->second.rec.outcome = o;
        it->second.rec.status = status;
        done.push_back(it->second.rec);
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        pending.erase(it);
    };

    while (!stop_ || !pending.empty()) {
        double now = steadyMs();
        // Send everything the schedule says is due (catching up if we fell behind).
        while (!stop_ && now >= next) {
            RequestRecord rec;
            rec.scheduled_ms = next;
            next += period;
            int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                rec.done_ms = now;
                rec.outcome = Outcome::ConnectError;
                done.push_back(rec);
                continue;
            }
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(static_cast<uint16_t>(port_));
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
            if (rc < 0 && errno != EINPROGRESS) {
                ::close(fd);
                rec.done_ms = now;
                rec.outcome = Outcome::ConnectError;
                done.push_back(rec);
                continue;
            }
            pending[fd].rec = rec;
            epoll_event ev{};
            ev.events = EPOLLOUT;
            ev.data.fd = fd;
            ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        // Deadlines.
        std::vector<int> expired;
        double earliest = stop_ ? now + 50 : next;
        for (auto& [fd, p] : pending) {
            double dl = p.rec.scheduled_ms + timeout_ms_;
            if (now >= dl)
                expired.push_back(fd);
            else
                earliest = std::min(earliest, dl);
        }
        for (int fd : expired)
            finish(fd, Outcome::Timeout, 0);
        int waitMs = static_cast<int>(std::max(0.0, earliest - steadyMs()));
        if (!done.empty()) {
            // Published as they finish, so a long run (pcloud-cts) can read them meanwhile.
            std::lock_guard lock(mu_);
            records_.insert(records_.end(), done.begin(), done.end());
            done.clear();
        }
        epoll_event evs[64];
        int n = ::epoll_wait(ep, evs, 64, std::min(waitMs, 50));
        for (int i = 0; i < n; ++i) {
            int fd = evs[i].data.fd;
            auto it = pending.find(fd);
            if (it == pending.end())
                continue;
            Pending& p = it->second;
            if (!p.connected) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    finish(fd, Outcome::ConnectError, 0);
                    continue;
                }
                p.connected = true;
                // The request is small: one write on a fresh loopback socket takes it all.
                if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
                    static_cast<ssize_t>(request.size())) {
                    finish(fd, Outcome::Reset, 0);
                    continue;
                }
                epoll_event ev{};
                ev.events = EPOLLIN | EPOLLRDHUP;
                ev.data.fd = fd;
                ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                continue;
            }
            char buf[4096];
            for (;;) {
                ssize_t r = ::recv(fd, buf, sizeof buf, 0);
                if (r > 0) {
                    if (p.in.size() < 256)
                        p.in.append(buf, static_cast<size_t>(r));
                    continue;
                }
                if (r == 0) {
                    int st = statusOf(p.in);
                    finish(fd,
                           st == 200 ? Outcome::Ok
                           : st == 0 ? Outcome::Reset
                                     : Outcome::BadStatus,
                           st);
                } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    finish(fd, Outcome::Reset, statusOf(p.in));
                }
                break;
            }
        }
    }
    ::close(ep);
    std::lock_guard lock(mu_);
    records_.insert(records_.end(), done.begin(), done.end());
}

StatePoller::StatePoller(std::string socket, std::string backend, std::string server,
                         double periodMs)
    : socket_(std::move(socket)), backend_(std::move(backend)), server_(std::move(server)),
      period_ms_(periodMs) {}

StatePoller::~StatePoller() {
    stop();
}

void StatePoller::start() {
    thread_ = std::thread([this] { run(); });
}

void StatePoller::stop() {
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

std::vector<ServerSample> StatePoller::transitions() {
    std::lock_guard lock(mu_);
    return transitions_;
}

void StatePoller::run() {
    const std::string cmd = "show servers state " + backend_ + "\n";
    std::optional<ServerSample> last;
    double next = steadyMs();
    while (!stop_) {
        double t = steadyMs();
        auto text = referee::runtimeApiExchange(socket_, cmd, 500);
        ++polls_;
        ServerSample s;
        s.t_ms = t;
        bool found = false;
        if (text) {
            auto members = referee::parseServersState(*text, backend_);
            if (members) {
                for (const auto& m : *members) {
                    if (m.name != server_)
                        continue;
                    found = true;
                    s.state = referee::toString(m.state);
                    s.health = m.health;
                    s.in = m.state == referee::MemberState::Ready && m.health == "up";
                }
            }
        }
        if (!found) {
            ++errors_;
            s.state = text ? "absent" : "error";
        }
        if (!last || last->in != s.in || last->state != s.state || last->health != s.health) {
            std::lock_guard lock(mu_);
            transitions_.push_back(s);
        }
        last = s;
        next += period_ms_;
        double now = steadyMs();
        if (next < now)
            next = now; // fell behind (slow socket): don't burst
        std::this_thread::sleep_for(
            std::chrono::microseconds(static_cast<long>((next - now) * 1000)));
    }
}

} // namespace pcloud::bench
