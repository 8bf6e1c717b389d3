#include "support/netns.h"

#include "support/test_support.h"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace pcloud::testsupport {

std::string netnsName(const std::string& what) {
    return "pcloud-h-" + what + std::to_string(::getpid());
}

std::string runAll(const std::vector<std::string>& cmds) {
    for (const auto& cmd : cmds) {
        auto r = runCommand(cmd + " 2>&1");
        if (r.rc != 0)
            return cmd + ": " + r.out;
    }
    return "";
}

std::string enterNetns(const std::string& ns) {
    int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "cannot open /run/netns/" + ns + ": " + std::strerror(errno);
    int rc = ::setns(fd, CLONE_NEWNET);
    int err = errno;
    ::close(fd);
    return rc == 0 ? "" : "setns " + ns + ": " + std::strerror(err);
}

std::string inNetns(const std::string& ns, const std::function<void()>& fn) {
    std::string err;
    std::thread t([&] {
        err = enterNetns(ns);
        if (err.empty())
            fn();
    });
    t.join();
    return err;
}

namespace {

// The first two fields of `ip -br link show dev DEV` after the name.
std::pair<std::string, std::string> briefLink(const std::string& ns, const std::string& dev) {
    std::istringstream in(runCommand("ip -n " + ns + " -br link show dev " + dev).out);
    std::string name, state, mac;
    in >> name >> state >> mac;
    return {state, mac};
}

} // namespace

std::string linkState(const std::string& ns, const std::string& dev) {
    return briefLink(ns, dev).first;
}

std::string linkMac(const std::string& ns, const std::string& dev) {
    return briefLink(ns, dev).second;
}

bool hasIpv4(const std::string& ns, const std::string& dev, const std::string& cidr) {
    return runCommand("ip -n " + ns + " -4 addr show dev " + dev).out.find("inet " + cidr + " ") !=
           std::string::npos;
}

pid_t spawnInNetns(const std::string& ns, const std::vector<std::string>& argv,
                   const std::string& log) {
    pid_t pid = ::fork();
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        if (auto err = enterNetns(ns); !err.empty()) {
            std::fprintf(stderr, "%s\n", err.c_str());
            ::_exit(126);
        }
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    return pid;
}

ArpCapture::~ArpCapture() {
    if (fd_ >= 0)
        ::close(fd_);
}

std::string ArpCapture::open(const std::string& ns, const std::string& dev) {
    std::string err;
    auto entered = inNetns(ns, [&] {
        fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
        sockaddr_ll sll{};
        sll.sll_family = AF_PACKET;
        sll.sll_protocol = htons(ETH_P_ARP);
        sll.sll_ifindex = static_cast<int>(::if_nametoindex(dev.c_str()));
        if (fd_ < 0 || sll.sll_ifindex == 0 ||
            ::bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0)
            err = "cannot capture ARP on " + dev + ": " + std::strerror(errno);
    });
    return entered.empty() ? err : entered;
}

std::vector<std::vector<std::uint8_t>> ArpCapture::read(std::uint32_t ip, std::size_t want,
                                                        std::chrono::milliseconds timeout) {
    std::vector<std::vector<std::uint8_t>> out;
    auto end = std::chrono::steady_clock::now() + timeout;
    while (out.size() < want) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - std::chrono::steady_clock::now());
        pollfd p{fd_, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            break;
        std::vector<std::uint8_t> buf(1500);
        ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
        if (n < 42)
            continue;
        buf.resize(static_cast<std::size_t>(n));
        std::uint32_t spa = (std::uint32_t{buf[28]} << 24) | (std::uint32_t{buf[29]} << 16) |
                            (std::uint32_t{buf[30]} << 8) | buf[31];
        if (spa == ip)
            out.push_back(std::move(buf));
    }
    return out;
}

std::string arpSenderMac(const std::vector<std::uint8_t>& f) {
    char m[18];
    std::snprintf(m, sizeof m, "%02x:%02x:%02x:%02x:%02x:%02x", f[22], f[23], f[24], f[25], f[26],
                  f[27]);
    return m;
}

} // namespace pcloud::testsupport
