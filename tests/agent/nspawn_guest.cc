#include "nspawn_guest.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace pcloud::testing {
namespace {

bool executable(const std::string& p) {
    return ::access(p.c_str(), X_OK) == 0;
}

std::string findTool(const char* name) {
    for (const char* dir : {"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"}) {
        std::string p = std::string(dir) + name;
        if (executable(p))
            return p;
    }
    return {};
}

pid_t childOf(pid_t parent, const std::string& comm) {
    DIR* d = ::opendir("/proc");
    if (!d)
        return -1;
    pid_t found = -1;
    while (dirent* e = ::readdir(d)) {
        pid_t pid = std::atoi(e->d_name);
        if (pid <= 0)
            continue;
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        std::getline(stat, line);
        auto rp = line.rfind(')');
        if (rp == std::string::npos)
            continue;
        std::istringstream rest(line.substr(rp + 2));
        char state;
        pid_t ppid = 0;
        rest >> state >> ppid;
        std::string name = line.substr(line.find('(') + 1, rp - line.find('(') - 1);
        if (ppid == parent && name == comm) {
            found = pid;
            break;
        }
    }
    ::closedir(d);
    return found;
}

std::string nsLink(pid_t pid) {
    char buf[128];
    ssize_t n =
        ::readlink(("/proc/" + std::to_string(pid) + "/ns/pid").c_str(), buf, sizeof buf - 1);
    if (n <= 0)
        return {};
    return std::string(buf, static_cast<std::size_t>(n));
}

} // namespace

pid_t NspawnGuest::childPid(pid_t parent, const std::string& comm) {
    return childOf(parent, comm);
}

std::string NspawnGuest::rootDir() {
    const char* env = std::getenv("PCLOUD_NSPAWN_ROOT");
    return env && *env ? env : "/var/cache/pcloud/nspawn-root";
}

std::string NspawnGuest::unavailableReason() {
    if (::geteuid() != 0)
        return "needs root to run systemd-nspawn";
    if (findTool("systemd-nspawn").empty())
        return "systemd-nspawn is not installed (systemd-container)";
    if (findTool("nsenter").empty())
        return "nsenter is not installed (util-linux)";
    std::string root = rootDir();
    if (::access((root + "/.pcloud-root-v1").c_str(), F_OK) != 0)
        return "guest root " + root + " is missing or incomplete; run scripts/setup-nspawn-root.sh";
    return {};
}

NspawnGuest::NspawnGuest(std::string machine,
                         std::vector<std::pair<std::string, std::string>> binds)
    : machine_(std::move(machine)), binds_(std::move(binds)) {}

NspawnGuest::~NspawnGuest() {
    teardown();
}

Status NspawnGuest::boot(int timeoutMs) {
    log_ = "/tmp/" + machine_ + ".nspawn.log";
    std::vector<std::string> args = {findTool("systemd-nspawn"),
                                     "-q",
                                     "-D",
                                     rootDir(),
                                     "--boot",
                                     "--register=no",
                                     "--keep-unit",
                                     "-M",
                                     machine_,
                                     "--volatile=overlay"};
    for (const auto& [host, guest] : binds_)
        args.push_back("--bind-ro=" + host + ":" + guest);
    pid_t parent = ::getpid();
    nspawn_ = ::fork();
    if (nspawn_ < 0)
        return makeError("fork failed");
    if (nspawn_ == 0) {
        // If the test dies, nspawn hears SIGTERM and shuts the container down.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent)
            _exit(1);
        ::setpgid(0, 0);
        int in = ::open("/dev/null", O_RDONLY);
        int out = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(out, 2);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(nspawn_, nullptr, WNOHANG) == nspawn_) {
            nspawn_ = -1;
            return makeError("systemd-nspawn exited during boot; see " + log_);
        }
        if (leader_ <= 0)
            leader_ = childOf(nspawn_, "systemd");
        if (leader_ > 0) {
            std::string state;
            run("systemctl is-system-running 2>/dev/null", &state);
            if (state.rfind("running", 0) == 0 || state.rfind("degraded", 0) == 0)
                return {};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100)); // polling a deadline
    }
    return makeError("guest did not finish booting in time; see " + log_);
}

void NspawnGuest::teardown() {
    if (nspawn_ <= 0)
        return;
    if (leader_ > 0)
        ::kill(leader_, SIGKILL); // ends every process in the guest
    for (int i = 0; i < 100; ++i) {
        if (::waitpid(nspawn_, nullptr, WNOHANG) == nspawn_) {
            nspawn_ = -1;
            leader_ = -1;
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(-nspawn_, SIGKILL);
    ::waitpid(nspawn_, nullptr, 0);
    nspawn_ = -1;
    leader_ = -1;
}

int NspawnGuest::run(const std::string& command, std::string* out) const {
    std::string cmd = findTool("nsenter") + " -t " + std::to_string(leader_) +
                      " -m -u -i -n -p -r -w /bin/sh -c '" + command + "' 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p)
        return -1;
    std::string text;
    char buf[512];
    while (std::fgets(buf, sizeof buf, p))
        text += buf;
    int status = ::pclose(p);
    if (out)
        *out = text;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

pid_t NspawnGuest::spawn(const std::vector<std::string>& argv,
                         const std::string& hostLogPath) const {
    std::vector<std::string> args = {findTool("nsenter"),
                                     "-t",
                                     std::to_string(leader_),
                                     "-m",
                                     "-u",
                                     "-i",
                                     "-n",
                                     "-p",
                                     "-r",
                                     "-w"};
    args.insert(args.end(), argv.begin(), argv.end());
    pid_t pid = ::fork();
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int out = ::open(hostLogPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(out, 1);
        ::dup2(out, 2);
        std::vector<char*> cargv;
        for (auto& a : args)
            cargv.push_back(a.data());
        cargv.push_back(nullptr);
        ::execv(cargv[0], cargv.data());
        _exit(127);
    }
    return pid;
}

pid_t NspawnGuest::hostPid(pid_t nsPid) const {
    std::string guestNs = nsLink(leader_);
    if (guestNs.empty())
        return -1;
    DIR* d = ::opendir("/proc");
    if (!d)
        return -1;
    pid_t found = -1;
    while (dirent* e = ::readdir(d)) {
        pid_t pid = std::atoi(e->d_name);
        if (pid <= 0 || nsLink(pid) != guestNs)
            continue;
        std::ifstream status("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        while (std::getline(status, line)) {
            if (line.rfind("NSpid:", 0) != 0)
                continue;
            std::istringstream in(line.substr(6));
            pid_t v = 0, last = 0;
            while (in >> v)
                last = v;
            if (last == nsPid)
                found = pid;
            break;
        }
        if (found > 0)
            break;
    }
    ::closedir(d);
    return found;
}

} // namespace pcloud::testing
