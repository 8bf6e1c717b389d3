#include "support/test_support.h"

#include "common/fs.h"

#include <arpa/inet.h>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pcloud::testsupport {

// A port the kernel never hands out for outgoing connections (ip_local_port_range is
// 32768-60999 on Debian), so a port released here cannot be taken by some client's
// connect() before the test's server binds it — the race CI hit with an ephemeral port.
// Probing from a per-process random start keeps parallel test processes apart.
int freePort() {
    constexpr int kFirst = 20000, kCount = 12000;
    static std::atomic<int> next = [] {
        struct timeval tv {};
        ::gettimeofday(&tv, nullptr);
        return static_cast<int>(
            (static_cast<unsigned>(::getpid()) * 7919u + static_cast<unsigned>(tv.tv_usec)) %
            kCount);
    }();
    for (int tries = 0; tries < kCount; ++tries) {
        int port = kFirst + (next++ % kCount);
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ::close(fd);
        if (free)
            return port;
    }
    std::fprintf(stderr, "freePort: no free loopback port in %d-%d\n", kFirst, kFirst + kCount);
    std::abort();
}

int connectLoopback(int port, std::string* localAddress) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        int saved = errno;
        ::close(fd);
        errno = saved;
        return -1;
    }
    if (localAddress) {
        socklen_t len = sizeof a;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
        *localAddress = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    }
    return fd;
}

HttpReply httpRequest(int port, const std::string& path, std::chrono::seconds timeout) {
    HttpReply r;
    int fd = connectLoopback(port);
    if (fd >= 0) {
        timeval tv{static_cast<time_t>(timeout.count()), 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        r.connected = true;
        std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        (void)!::write(fd, req.data(), req.size());
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0)
            r.text.append(buf, static_cast<size_t>(n));
        ::close(fd);
    } else {
        r.error = errno;
    }
    return r;
}

std::string httpGet(int port) {
    return httpRequest(port, "/", std::chrono::seconds(3)).text;
}

CommandResult runCommand(const std::string& cmd) {
    CommandResult r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p)
        return r;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
        r.out.append(buf, n);
    int st = ::pclose(p);
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return r;
}

std::string runCapture(const std::string& cmd) {
    return runCommand(cmd).out;
}

GuestDirResult buildTinyGuest(const std::string& srcDir, const std::string& agentBinary) {
    std::string out = runCapture(srcDir + "/scripts/build-guest.sh " + agentBinary + " 2>&1");
    auto pos = out.rfind("GUEST_DIR=");
    if (pos == std::string::npos)
        return {{},
                "could not build the tiny guest: " +
                    out.substr(out.size() > 400 ? out.size() - 400 : 0)};
    std::string dir = out.substr(pos + 10);
    while (!dir.empty() && std::isspace(static_cast<unsigned char>(dir.back())))
        dir.pop_back();
    return {dir, {}};
}

void sweepStaleDomains(const std::string& prefix) {
    std::string names = runCapture("virsh -c qemu:///system list --all --name 2>/dev/null");
    std::size_t pos = 0;
    while (pos < names.size()) {
        auto end = names.find('\n', pos);
        std::string n = names.substr(pos, end == std::string::npos ? end : end - pos);
        pos = end == std::string::npos ? names.size() : end + 1;
        if (n.rfind(prefix, 0) != 0)
            continue;
        pid_t owner = static_cast<pid_t>(std::atol(n.c_str() + prefix.size()));
        if (owner > 0 && (::kill(owner, 0) == 0 || errno != ESRCH))
            continue;
        std::fprintf(stderr, "removing stale domain %s of a dead test run\n", n.c_str());
        (void)runCommand("virsh -c qemu:///system destroy " + n + " >/dev/null 2>&1");
        (void)runCommand("virsh -c qemu:///system undefine " + n + " >/dev/null 2>&1");
    }
}

pid_t qemuPidOf(const std::string& domain) {
    auto text = fs::readFile("/run/libvirt/qemu/" + domain + ".pid");
    if (!text)
        return 0;
    try {
        return std::stoi(*text);
    } catch (...) {
        return 0;
    }
}

pid_t spawnLogged(const std::string& path, std::vector<std::string> args,
                  const std::string& logPath) {
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 2);
        ::dup2(fd, 1);
        ::execv(path.c_str(), argv.data());
        _exit(127);
    }
    return pid;
}

pid_t spawnDped(const std::string& dpedPath, const std::string& deployable,
                const std::string& stateDir, int brokerPort, const std::string& logPath,
                const std::vector<std::string>& extraArgs) {
    return spawnDped(dpedPath, deployable, stateDir,
                     "amqp://127.0.0.1:" + std::to_string(brokerPort), logPath, extraArgs);
}

pid_t spawnDped(const std::string& dpedPath, const std::string& deployable,
                const std::string& stateDir, const std::string& brokerUrl,
                const std::string& logPath, const std::vector<std::string>& extraArgs) {
    std::vector<std::string> args = {"dped",        "--deployable", deployable,
                                     "--state-dir", stateDir,       "--broker",
                                     brokerUrl,     "--log-level",  "info"};
    args.insert(args.end(), extraArgs.begin(), extraArgs.end());
    return spawnLogged(dpedPath, std::move(args), logPath);
}

std::string writeTinyGuestHostConfig(const std::string& dir, const std::string& extra) {
    const std::string path = dir + "/pcloud.conf";
    (void)fs::writeAtomic(path,
                          "# The tiny guest's user-mode network is passed to QEMU with\n"
                          "# <qemu:commandline>; allow exactly that (docs/security.md).\n"
                          "qemu_commandline = netdev-user\n" +
                              extra,
                          {}, 0644);
    return path;
}

} // namespace pcloud::testsupport
