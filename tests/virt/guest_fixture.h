#pragma once
// Real-QEMU helpers shared by tests/virt and bench/virt: a qemu:///system connection (or the
// reason it is missing), the cached tiny guest image (scripts/build-guest.sh), and a domain
// with a unique name that is always destroyed and undefined at scope exit.

#include "virt/channel.h"
#include "virt/guest_xml.h"
#include "virt/libvirt_hypervisor.h"
#include "virt/pid_watcher.h"

#include "test_util.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace pcloud::virt::testing {

inline std::int64_t monoUs() {
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

struct GuestImage {
    std::string kernel;
    std::string initrd;
};

class GuestEnv {
public:
    GuestEnv() {
        if (::geteuid() != 0) {
            skip_ = "needs root to use qemu:///system";
            return;
        }
        Status s = hv_.open("qemu:///system");
        if (!s.ok()) {
            skip_ =
                "libvirtd is not answering (run scripts/setup-libvirt.sh): " + s.error().message;
            return;
        }
        char tmpl[] = "/tmp/pcloud-virt-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) {
            skip_ = "cannot create a state dir in /tmp";
            return;
        }
        state_dir_ = tmpl;
    }
    ~GuestEnv() {
        if (!state_dir_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(state_dir_, ec);
        }
    }
    bool ready() const { return skip_.empty(); }
    const std::string& skipReason() const { return skip_; }
    LibvirtHypervisor& hv() { return hv_; }
    const std::string& stateDir() const { return state_dir_; }

    // The image for `agent` ("none" or a path to pcloud-agent). PCLOUD_GUEST_DIR overrides;
    // otherwise scripts/build-guest.sh builds it (cached in /var/cache/pcloud/guest).
    Result<GuestImage> image(const std::string& agent) {
        std::string dir;
        if (const char* env = std::getenv("PCLOUD_GUEST_DIR"); env != nullptr && *env) {
            dir = env;
        } else {
            const std::string cmd = "bash '" + std::string(PCLOUD_SOURCE_DIR) +
                                    "/scripts/build-guest.sh' '" + agent + "' 2>&1";
            FILE* p = ::popen(cmd.c_str(), "r");
            if (p == nullptr)
                return makeError("cannot run build-guest.sh");
            std::string out;
            char buf[512];
            while (std::fgets(buf, sizeof buf, p) != nullptr)
                out += buf;
            int rc = ::pclose(p);
            auto pos = out.rfind("GUEST_DIR=");
            if (rc != 0 || pos == std::string::npos) {
                return makeError("guest image missing and scripts/build-guest.sh failed: " + out);
            }
            dir = out.substr(pos + 10);
            while (!dir.empty() && (dir.back() == '\n' || dir.back() == '\r'))
                dir.pop_back();
        }
        GuestImage img{dir + "/vmlinuz", dir + "/initrd.img"};
        if (!std::filesystem::exists(img.kernel) || !std::filesystem::exists(img.initrd)) {
            return makeError("guest image missing in " + dir +
                             " (run scripts/build-guest.sh none)");
        }
        return img;
    }

private:
    LibvirtHypervisor hv_;
    std::string skip_;
    std::string state_dir_;
};

// One tiny guest, destroyed and undefined whatever happens.
class TinyDomain {
public:
    TinyDomain(GuestEnv& env, const GuestImage& img, const std::string& stem) : env_(env) {
        static std::atomic<int> counter{0};
        name_ = "pcloud-vt-" + std::to_string(::getpid()) + "-" + stem + "-" +
                std::to_string(++counter);
        guest_.name = name_;
        guest_.kernel = img.kernel;
        guest_.initrd = img.initrd;
        guest_.consoleLog = env.stateDir() + "/" + name_ + ".console.log";
        guest_.channelSocket = env.stateDir() + "/" + name_ + ".agent.sock";
    }
    ~TinyDomain() {
        (void)env_.hv().destroy(name_);
        (void)env_.hv().undefine(name_);
    }
    TinyDomain(const TinyDomain&) = delete;
    TinyDomain& operator=(const TinyDomain&) = delete;

    bool start() {
        guest_.httpPort = freePort();
        auto xml = renderTinyGuestXml(guest_);
        if (!xml.ok()) {
            error_ = xml.error().describe();
            return false;
        }
        auto r = env_.hv().defineAndStart(*xml);
        if (!r.ok()) {
            error_ = r.error().describe();
            return false;
        }
        return true;
    }
    const std::string& name() const { return name_; }
    const std::string& error() const { return error_; }
    int httpPort() const { return guest_.httpPort; }
    const std::string& channelSocket() const { return guest_.channelSocket; }
    std::string console() const {
        std::ifstream in(guest_.consoleLog);
        std::stringstream ss;
        ss << in.rdbuf();
        std::string s = ss.str();
        return s.size() > 3000 ? s.substr(s.size() - 3000) : s;
    }

private:
    GuestEnv& env_;
    std::string name_;
    std::string error_;
    TinyGuest guest_;
};

// GET / on 127.0.0.1:port with a short timeout; "" on any failure.
inline std::string httpGet(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        const std::string req = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
            char buf[4096];
            ssize_t n;
            while ((n = ::read(fd, buf, sizeof buf)) > 0)
                out.append(buf, static_cast<size_t>(n));
        }
    }
    ::close(fd);
    return out;
}

} // namespace pcloud::virt::testing
