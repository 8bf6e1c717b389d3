// Times the nginx driver against a real nginx 1.22: apply() of 1000 membership changes
// (render, atomic write, `nginx -t`, `nginx -s reload`), and the pure render/parse of a
// 1000-member file. Prints median and p99; asserts nothing.
// Usage: referee_nginx_bench [runs]   (bench/referee/run.sh builds and runs it)
#include "common/fs.h"
#include "referee/nginx_referee.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace pcloud;
using namespace pcloud::referee;

namespace {

constexpr int kMembers = 1000;

double nowMs() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

void row(const char* what, std::vector<double> v) {
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
        return v[std::min(i, v.size() - 1)];
    };
    std::printf("%-58s %5zu %9.2f %9.2f %9.2f %9.2f\n", what, v.size(), at(0.5), at(0.99),
                v.front(), v.back());
}

std::vector<Member> members(MemberState state) {
    std::vector<Member> out;
    for (int i = 0; i < kMembers; ++i) {
        char name[16];
        std::snprintf(name, sizeof(name), "m%04d", i);
        // Nobody listens there: nginx only connects when a request comes.
        out.push_back({name, "127.0.0.1:" + std::to_string(20'000 + i), state});
    }
    return out;
}

// A loopback port nobody listens on right now (nginx will not take port 0).
int freePort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

} // namespace

int main(int argc, char** argv) {
    const int runs = argc > 1 ? std::atoi(argv[1]) : 20;
    if (std::system("command -v nginx >/dev/null 2>&1") != 0) {
        std::printf("nginx is not installed; skipping the nginx benchmark\n");
        return 0;
    }
    char tmpl[] = "/tmp/pcloud-nginx-bench-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    const std::string managed = dir + "/pcloud-web.conf";
    std::filesystem::create_directories(dir + "/tmp");
    {
        std::ofstream cfg(dir + "/nginx.conf");
        if (::getuid() == 0)
            cfg << "user nobody nogroup;\n";
        cfg << "worker_processes 1;\nmaster_process on;\ndaemon off;\n"
            << "pid " << dir << "/nginx.pid;\nerror_log " << dir << "/error.log warn;\n"
            << "events { worker_connections 64; }\nhttp {\n    access_log off;\n";
        for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
            cfg << "    " << t << "_temp_path " << dir << "/tmp/" << t << ";\n";
        cfg << "    include " << managed << ";\n"
            << "    server {\n        listen 127.0.0.1:" << freePort() << ";\n"
            << "        location / { proxy_pass http://web; }\n    }\n}\n";
    }
    if (!fs::writeAtomic(managed, renderNginxConfig("web", {})).ok())
        return 1;
    pid_t pid = ::fork();
    if (pid == 0) {
        ::setpgid(0, 0);
        ::execlp("nginx", "nginx", "-p", dir.c_str(), "-c", (dir + "/nginx.conf").c_str(), "-e",
                 (dir + "/error.log").c_str(), nullptr);
        ::_exit(127);
    }
    auto cleanup = [&] {
        ::kill(-pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
        std::filesystem::remove_all(dir);
    };
    for (int i = 0; i < 500 && !fs::exists(dir + "/nginx.pid"); ++i)
        ::usleep(10'000);

    NginxReferee::Settings s;
    s.config_file = managed;
    s.upstream = "web";
    s.nginx = "nginx -p " + dir + " -c " + dir + "/nginx.conf -e " + dir + "/error.log";
    NginxReferee referee(s);

    const auto ready = members(MemberState::Ready), out = members(MemberState::Out);
    std::vector<double> render, parse, apply;
    for (int r = 0; r < runs; ++r) {
        double t0 = nowMs();
        std::string text = renderNginxConfig("web", r % 2 ? out : ready);
        double t1 = nowMs();
        auto parsed = parseNginxConfig(text, "web", managed);
        double t2 = nowMs();
        if (!parsed || parsed->size() != kMembers) {
            std::fprintf(stderr, "parse failed\n");
            cleanup();
            return 1;
        }
        render.push_back(t1 - t0);
        parse.push_back(t2 - t1);
        // Every member changes state on every run: 1000 changes in one apply().
        double a0 = nowMs();
        auto st = referee.apply(r % 2 ? out : ready);
        double a1 = nowMs();
        if (!st) {
            std::fprintf(stderr, "apply failed: %s\n", st.error().describe().c_str());
            cleanup();
            return 1;
        }
        apply.push_back(a1 - a0);
    }
    std::printf("%-58s %5s %9s %9s %9s %9s\n", "nginx, 1000 members (ms)", "runs", "median", "p99",
                "min", "max");
    row("render 1000 members (pure)", render);
    row("parse 1000 members (pure)", parse);
    row("apply(): 1000 changes (write, nginx -t, nginx -s reload)", apply);
    cleanup();
    return 0;
}
