#include "harness.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pcloud::referee::test {
namespace {

long long steadyMs() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

} // namespace

int freeLoopbackPort() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(0);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    int port = ntohs(a.sin_port);
    ::close(fd);
    return port;
}

std::string makeTempDir(const std::string& tag) {
    std::string tmpl = "/tmp/pcloud-" + tag + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* dir = ::mkdtemp(buf.data());
    if (dir == nullptr)
        return {};
    ::chmod(dir, 0755); // apache children run as www-data
    return dir;
}

void removeTree(const std::string& dir) {
    std::error_code ec;
    if (!dir.empty())
        std::filesystem::remove_all(dir, ec);
}

bool haveProgram(const std::string& name) {
    if (!name.empty() && name[0] == '/')
        return ::access(name.c_str(), X_OK) == 0;
    const char* path = std::getenv("PATH");
    std::string all = std::string(path ? path : "") + ":/usr/sbin:/sbin";
    size_t start = 0;
    while (start <= all.size()) {
        size_t end = all.find(':', start);
        if (end == std::string::npos)
            end = all.size();
        std::string candidate = all.substr(start, end - start) + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0)
            return true;
        start = end + 1;
    }
    return false;
}

HttpBackend::HttpBackend(std::string name) : name_(std::move(name)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a = loopback(0);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(listen_fd_, 128);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (::pipe2(stop_pipe_, O_CLOEXEC) != 0)
        stop_pipe_[0] = stop_pipe_[1] = -1;
    thread_ = std::thread([this] { loop(); });
}

HttpBackend::~HttpBackend() {
    char c = 'x';
    [[maybe_unused]] auto n = ::write(stop_pipe_[1], &c, 1);
    if (thread_.joinable())
        thread_.join();
    ::close(listen_fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
}

void HttpBackend::loop() {
    for (;;) {
        pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (p[1].revents)
            return;
        int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        // Read the request head (bounded), then answer and close.
        std::string req;
        char buf[4096];
        long long deadline = steadyMs() + 2000;
        while (req.find("\r\n\r\n") == std::string::npos && steadyMs() < deadline) {
            pollfd q{c, POLLIN, 0};
            if (::poll(&q, 1, 200) <= 0)
                continue;
            ssize_t n = ::recv(c, buf, sizeof(buf), 0);
            if (n <= 0)
                break;
            req.append(buf, static_cast<size_t>(n));
        }
        if (req.find("\r\n\r\n") != std::string::npos) {
            std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                               std::to_string(name_.size()) + "\r\nConnection: close\r\n\r\n" +
                               name_;
            [[maybe_unused]] auto n = ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
            served_++;
        }
        ::shutdown(c, SHUT_WR);
        ::close(c);
    }
}

std::string httpGet(int port, const std::string& path, int* status, int timeoutMs,
                    std::string* why) {
    if (status)
        *status = 0;
    auto start = std::chrono::steady_clock::now();
    auto fail = [&](const std::string& what) {
        if (why) {
            auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - start)
                          .count();
            *why = what + " after " + std::to_string(ms) + " ms";
        }
        return std::string();
    };
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(port);
    timeval tv{timeoutMs / 1000, (timeoutMs % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        std::string e = std::strerror(errno);
        ::close(fd);
        return fail("connect: " + e);
    }
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    [[maybe_unused]] auto w = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string resp, recvError;
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n < 0)
            recvError = errno == EAGAIN || errno == EWOULDBLOCK ? std::string("receive timeout")
                                                                : std::strerror(errno);
        if (n <= 0)
            break;
        resp.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    int code = 0;
    if (resp.rfind("HTTP/1.", 0) == 0 && resp.size() > 12)
        code = std::atoi(resp.c_str() + 9);
    if (status)
        *status = code;
    auto body = resp.find("\r\n\r\n");
    if (code != 200 || body == std::string::npos) {
        if (!recvError.empty())
            return fail(recvError + " with " + std::to_string(resp.size()) + " bytes read");
        if (resp.empty())
            return fail("connection closed without an answer");
        return fail("answer '" + resp.substr(0, resp.find("\r\n")) + "'");
    }
    return resp.substr(body + 4);
}

std::map<std::string, int> spread(int port, int n, const std::string& path) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i)
        out[httpGet(port, path)]++;
    return out;
}

bool Child::start(const std::vector<std::string>& argv, const std::string& logFile) {
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int log = ::open(logFile.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid = ::fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        ::setpgid(0, 0);
        int devnull = ::open("/dev/null", O_RDONLY);
        ::dup2(devnull, 0);
        if (log >= 0) {
            ::dup2(log, 1);
            ::dup2(log, 2);
        }
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    if (log >= 0)
        ::close(log);
    pid_ = pid;
    return true;
}

bool Child::running() {
    if (pid_ <= 0)
        return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        pid_ = -1;
        return false;
    }
    return true;
}

void Child::stop() {
    if (pid_ <= 0)
        return;
    ::kill(-pid_, SIGTERM);
    ::kill(pid_, SIGTERM);
    long long deadline = steadyMs() + 5000;
    int st = 0;
    while (steadyMs() < deadline) {
        if (::waitpid(pid_, &st, WNOHANG) == pid_) {
            ::kill(-pid_, SIGKILL); // stray children of the group, if any
            pid_ = -1;
            return;
        }
        ::usleep(10'000);
    }
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
}

bool waitUntil(const std::function<bool()>& cond, int timeoutMs) {
    long long deadline = steadyMs() + timeoutMs;
    for (;;) {
        if (cond())
            return true;
        if (steadyMs() >= deadline)
            return false;
        ::usleep(20'000);
    }
}

std::string rawSocket(const std::string& path, const std::string& payload) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(fd);
        return {};
    }
    [[maybe_unused]] auto w = ::send(fd, payload.data(), payload.size(), MSG_NOSIGNAL);
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
}

} // namespace pcloud::referee::test
