#include "referee/runtime_api.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace pcloud::referee {
namespace {

Millis steadyMs() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0)
            ::close(fd);
    }
};

// Waits for `events` on fd until the deadline; false on timeout (errno = ETIMEDOUT).
bool waitFor(int fd, short events, Millis deadline) {
    for (;;) {
        Millis left = deadline - steadyMs();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return false;
        }
        pollfd p{fd, events, 0};
        int n = ::poll(&p, 1, static_cast<int>(left));
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

} // namespace

Result<std::string> runtimeApiExchange(const std::string& socketPath, const std::string& payload,
                                       Millis timeoutMs) {
    const Millis deadline = steadyMs() + timeoutMs;
    auto fail = [&](const std::string& what) {
        return makeError("haproxy runtime API " + what + ": " + std::strerror(errno) +
                             " (is 'stats socket " + socketPath +
                             " level admin' in haproxy.cfg and haproxy running?)",
                         socketPath);
    };
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socketPath.size() >= sizeof(addr.sun_path))
        return makeError("haproxy runtime API socket path is too long (max " +
                             std::to_string(sizeof(addr.sun_path) - 1) + " bytes)",
                         socketPath);
    std::memcpy(addr.sun_path, socketPath.c_str(), socketPath.size() + 1);

    Fd s;
    s.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s.fd < 0)
        return fail("socket");
    if (::connect(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        if (errno != EAGAIN && errno != EINPROGRESS)
            return fail("cannot connect");
        if (!waitFor(s.fd, POLLOUT, deadline))
            return fail("cannot connect");
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            errno = err;
            return fail("cannot connect");
        }
    }
    size_t off = 0;
    while (off < payload.size()) {
        ssize_t n = ::send(s.fd, payload.data() + off, payload.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!waitFor(s.fd, POLLOUT, deadline))
                return fail("write");
            continue;
        }
        return fail("write");
    }
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(s.fd, buf, sizeof(buf), 0);
        if (n > 0) {
            out.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!waitFor(s.fd, POLLIN, deadline)) {
                if (errno == ETIMEDOUT)
                    return makeError("haproxy runtime API did not answer within " +
                                         std::to_string(timeoutMs) + " ms",
                                     socketPath);
                return fail("read");
            }
            continue;
        }
        return fail("read");
    }
    return out;
}

std::vector<std::string> splitRuntimeResponses(const std::string& output,
                                               const std::vector<std::string>& commands) {
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < output.size()) {
        size_t nl = output.find('\n', pos);
        if (nl == std::string::npos)
            nl = output.size();
        lines.push_back(output.substr(pos, nl - pos));
        pos = nl + 1;
    }
    std::vector<std::string> out;
    size_t i = 0;
    for (const auto& cmd : commands) {
        if (i >= lines.size())
            break;
        if (cmd.compare(0, 10, "del server") == 0) {
            out.push_back(lines[i++]);
            continue;
        }
        std::string answer;
        bool terminated = false;
        while (i < lines.size()) {
            const std::string& line = lines[i++];
            if (line.empty()) {
                terminated = true;
                break;
            }
            if (!answer.empty())
                answer += '\n';
            answer += line;
        }
        if (!terminated && answer.empty())
            break;
        out.push_back(answer);
    }
    return out;
}

} // namespace pcloud::referee
