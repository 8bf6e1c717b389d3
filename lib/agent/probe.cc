#include "agent/probe.h"

#include "common/log.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pcloud::agent {

bool ProbeTracker::record(bool success) {
    auto before = ready_;
    if (success) {
        failures_ = 0;
        ready_ = true;
    } else {
        ++failures_;
        if (failures_ >= threshold_)
            ready_ = false;
        else if (!ready_)
            ready_ = false; // never proven ready: stays not-ready
    }
    return before != ready_;
}

bool ProbeTracker::start() {
    auto before = ready_;
    failures_ = 0;
    ready_ = false;
    return before != ready_;
}

bool ProbeTracker::reset() {
    auto before = ready_;
    failures_ = 0;
    ready_.reset();
    return before != ready_;
}

int parseHttpStatus(const std::string& head) {
    auto eol = head.find("\r\n");
    if (eol == std::string::npos) {
        if (head.size() > 8 && head.rfind("HTTP/", 0) != 0)
            return -1;
        return head.size() > 1024 ? -1 : 0;
    }
    // HTTP/1.x SP 3DIGIT SP reason
    if (head.rfind("HTTP/", 0) != 0)
        return -1;
    auto sp = head.find(' ');
    if (sp == std::string::npos || sp + 4 > eol)
        return -1;
    int code = 0;
    for (int i = 1; i <= 3; ++i) {
        char c = head[sp + i];
        if (c < '0' || c > '9')
            return -1;
        code = code * 10 + (c - '0');
    }
    return code;
}

ProbeRunner::~ProbeRunner() {
    for (auto& [u, e] : probes_)
        closeFd(e);
}

void ProbeRunner::closeFd(Entry& e) {
    if (e.fd >= 0)
        ::close(e.fd);
    e.fd = -1;
    e.connected = false;
    e.in.clear();
    e.out.clear();
}

void ProbeRunner::setProbe(const std::string& unit, std::optional<model::Probe> probe) {
    auto it = probes_.find(unit);
    if (!probe) {
        if (it == probes_.end())
            return;
        closeFd(it->second);
        probes_.erase(it);
        if (cb_)
            cb_(unit, std::nullopt);
        return;
    }
    // The controller repeats the same watch on every hello (and a restarted dped asks again):
    // the same probe keeps its verdict, or every reconnect would flap the member not-ready.
    if (it != probes_.end() && it->second.spec == *probe)
        return;
    bool active = it != probes_.end() && it->second.active;
    if (it != probes_.end()) {
        closeFd(it->second);
        probes_.erase(it);
    }
    Entry e{*probe, ProbeTracker(probe->threshold), false, kNever, -1, 0, false, {}, {}, 0, false};
    probes_.emplace(unit, std::move(e));
    if (active)
        setActive(unit, true);
    else if (cb_)
        cb_(unit, std::nullopt);
}

void ProbeRunner::setActive(const std::string& unit, bool active) {
    auto it = probes_.find(unit);
    if (it == probes_.end())
        return;
    Entry& e = it->second;
    if (active == e.active)
        return;
    e.active = active;
    closeFd(e);
    bool changed;
    if (active) {
        changed = e.tracker.start();
        e.next_at = clock_.monotonicMs(); // probe at once
    } else {
        changed = e.tracker.reset();
        e.next_at = kNever;
    }
    if (changed && cb_)
        cb_(unit, e.tracker.ready());
}

std::optional<bool> ProbeRunner::ready(const std::string& unit) const {
    auto it = probes_.find(unit);
    if (it == probes_.end())
        return std::nullopt;
    return it->second.tracker.ready();
}

void ProbeRunner::begin(const std::string& unit, Entry& e, Millis now) {
    closeFd(e);
    e.attempt_deadline = now + e.spec.timeout;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(e.spec.port));
    if (::inet_pton(AF_INET, e.spec.host.c_str(), &sa.sin_addr) != 1) {
        // Names other than dotted quads: only "localhost" is resolved, without DNS.
        if (e.spec.host == "localhost")
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else {
            PCLOUD_LOG(Warning, "Probe host is not an IPv4 address",
                       {{"unit", unit}, {"host", e.spec.host}});
            finish(unit, e, false, now);
            return;
        }
    }
    e.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (e.fd < 0) {
        finish(unit, e, false, now);
        return;
    }
    int rc = ::connect(e.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    if (rc < 0 && errno != EINPROGRESS) {
        finish(unit, e, false, now);
        return;
    }
    if (e.spec.kind == model::ProbeKind::Http)
        e.out = "GET " + e.spec.path + " HTTP/1.0\r\nHost: " + e.spec.host +
                "\r\nUser-Agent: pcloud-agent\r\nConnection: close\r\n\r\n";
}

void ProbeRunner::finish(const std::string& unit, Entry& e, bool success, Millis now) {
    closeFd(e);
    e.next_at = now + e.spec.interval;
    PCLOUD_LOG(Debug, "Probe finished", {{"unit", unit}, {"ok", success ? "yes" : "no"}});
    if (e.tracker.record(success)) {
        PCLOUD_LOG(Notice, success ? "Service is ready" : "Service is active but not answering",
                   {{"unit", unit}});
        if (cb_)
            cb_(unit, e.tracker.ready());
    }
}

void ProbeRunner::step(const std::string& unit, Entry& e, short revents, Millis now) {
    if (!e.connected) {
        if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(e.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0)
            return finish(unit, e, false, now);
        e.connected = true;
        if (e.spec.kind == model::ProbeKind::Tcp)
            return finish(unit, e, true, now);
    }
    if (!e.out.empty() && (revents & POLLOUT)) {
        ssize_t n = ::send(e.fd, e.out.data(), e.out.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN)
            return finish(unit, e, false, now);
        if (n > 0)
            e.out.erase(0, static_cast<std::size_t>(n));
    }
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[512];
        ssize_t n = ::recv(e.fd, buf, sizeof buf, 0);
        if (n > 0)
            e.in.append(buf, static_cast<std::size_t>(n));
        int status = parseHttpStatus(e.in);
        if (status > 0)
            return finish(unit, e, status == e.spec.expect_status, now);
        if (status < 0 || n == 0 || (n < 0 && errno != EAGAIN))
            return finish(unit, e, false, now);
    }
}

void ProbeRunner::prepare(PollSet& ps, Millis now) {
    for (auto& [unit, e] : probes_) {
        e.polled = false;
        if (!e.active)
            continue;
        if (e.fd >= 0) {
            short ev = !e.connected ? POLLOUT : (e.out.empty() ? POLLIN : POLLIN | POLLOUT);
            e.poll_index = ps.add(e.fd, ev);
            e.polled = true;
            ps.wakeAt(e.attempt_deadline);
        } else {
            ps.wakeAt(e.next_at);
        }
    }
}

void ProbeRunner::dispatch(const PollSet& ps, Millis now) {
    for (auto& [unit, e] : probes_) {
        if (!e.active)
            continue;
        if (e.fd >= 0 && e.polled) {
            short re = ps.revents(e.poll_index);
            if (re)
                step(unit, e, re, now);
            if (e.fd >= 0 && now >= e.attempt_deadline)
                finish(unit, e, false, now);
        } else if (e.fd < 0 && now >= e.next_at) {
            begin(unit, e, now);
        }
    }
}

} // namespace pcloud::agent
