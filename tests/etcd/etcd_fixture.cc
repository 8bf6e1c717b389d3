#include "etcd/etcd_fixture.h"

#include "support/netns.h"
#include "support/test_support.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pcloud::etcdtest {

std::string EtcdCluster::revokeLeaseOf(const std::string& node) const {
    auto r = testsupport::runCommand(etcdctl() + " get --prefix /pcloud/leader/ 2>&1");
    std::istringstream in(r.out);
    std::string key, value;
    while (std::getline(in, key) && std::getline(in, value)) {
        if (value != node)
            continue;
        char hex[32];
        std::snprintf(hex, sizeof hex, "%llx", std::stoull(key.substr(key.rfind('/') + 1)));
        auto rv = testsupport::runCommand(etcdctl() + " lease revoke " + hex + " 2>&1");
        return rv.rc == 0 ? "" : rv.out;
    }
    return "no leader key of " + node + " in: " + r.out;
}

std::string tail(const std::string& path, size_t bytes) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

EtcdCluster::EtcdCluster(int members, std::vector<std::string> extraArgs, std::string netns)
    : extra_(std::move(extraArgs)), netns_(std::move(netns)) {
    char tmpl[] = "/tmp/pcloud-etcd-XXXXXX";
    dir_ = ::mkdtemp(tmpl) ? tmpl : "/tmp/pcloud-etcd-fallback";
    for (int i = 0; i < members; ++i) {
        Member m;
        m.name = "m" + std::to_string(i);
        m.client_port = testsupport::freePort();
        m.peer_port = testsupport::freePort();
        m.data_dir = dir_ + "/" + m.name;
        m.log = dir_ + "/" + m.name + ".log";
        members_.push_back(m);
    }
}

EtcdCluster::~EtcdCluster() {
    for (int i = 0; i < size(); ++i)
        kill(i);
    if (dir_.rfind("/tmp/pcloud-etcd-", 0) == 0)
        testsupport::runCommand("rm -rf '" + dir_ + "'");
}

std::string makeTlsPki(const std::string& dir, TlsPki& out) {
    if (auto r = testsupport::runCommand("mkdir -p '" + dir + "' 2>&1"); r.rc != 0)
        return r.out;
    out = TlsPki{dir + "/ca.crt",     dir + "/ca.key",     dir + "/server.crt",
                 dir + "/server.key", dir + "/client.crt", dir + "/client.key"};
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    auto leaf = [&](const std::string& stem, const std::string& cn, const std::string& ext) {
        const std::string p = dir + "/" + stem;
        return "openssl req" + ec + " -keyout " + p + ".key -out " + p + ".csr -subj '/CN=" + cn +
               "' && printf '" + ext + "\n' > " + p + ".ext && openssl x509 -req -in " + p +
               ".csr -CA " + out.ca + " -CAkey " + out.ca_key +
               " -CAcreateserial -days 2 -extfile " + p + ".ext -out " + p + ".crt";
    };
    const std::string cmd =
        "set -e; openssl req -x509" + ec + " -keyout " + out.ca_key + " -out " + out.ca +
        " -days 2 -subj '/CN=pcloud test etcd CA'; " +
        leaf("server", "etcd", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth") + "; " +
        leaf("client", "cped", "extendedKeyUsage=clientAuth") + "; chmod 0600 " + dir + "/*.key";
    auto r = testsupport::runCommand("bash -c \"" + cmd + "\" 2>&1");
    return r.rc == 0 ? "" : "making the etcd test PKI failed: " + r.out;
}

std::string EtcdCluster::url() const {
    std::string u = tls_ ? "etcds://" : "etcd://";
    for (size_t i = 0; i < members_.size(); ++i)
        u += (i ? "," : "") + members_[i].endpoint();
    return u;
}

std::vector<std::string> EtcdCluster::endpoints() const {
    std::vector<std::string> out;
    for (const auto& m : members_)
        out.push_back(m.endpoint());
    return out;
}

std::string EtcdCluster::spawn(int i) {
    if (::access("/usr/bin/etcd", X_OK) != 0)
        return "/usr/bin/etcd is not installed: run scripts/install-deps.sh (etcd-server)";
    auto& m = members_[static_cast<size_t>(i)];
    std::string cluster = m.initial_cluster;
    for (size_t k = 0; k < members_.size() && m.initial_cluster.empty(); ++k)
        if (members_[k].initial_cluster.empty())
            cluster +=
                (cluster.empty() ? "" : ",") + members_[k].name + "=" + members_[k].peerUrl();
    std::vector<std::string> args = {
        "/usr/bin/etcd",
        "--name",
        m.name,
        "--data-dir",
        m.data_dir,
        "--listen-client-urls",
        clientScheme() + m.endpoint(),
        "--advertise-client-urls",
        clientScheme() + m.endpoint(),
        "--listen-peer-urls",
        m.peerUrl(),
        "--initial-advertise-peer-urls",
        m.peerUrl(),
        "--initial-cluster",
        cluster,
        "--initial-cluster-state",
        m.initial_cluster.empty() ? "new" : "existing",
        "--initial-cluster-token",
        "pcloud-test",
    };
    if (tls_)
        args.insert(args.end(), {"--cert-file", tls_->server_cert, "--key-file", tls_->server_key,
                                 "--trusted-ca-file", tls_->ca, "--client-cert-auth"});
    for (const auto& e : extra_)
        args.push_back(e);
    pid_t pid = ::fork();
    if (pid < 0)
        return "fork failed";
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open(m.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        if (const std::string& ns = m.netns.empty() ? netns_ : m.netns; !ns.empty()) {
            if (auto err = testsupport::enterNetns(ns); !err.empty()) {
                std::fprintf(stderr, "%s\n", err.c_str());
                ::_exit(126);
            }
        }
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    m.pid = pid;
    return "";
}

bool EtcdCluster::healthy(int i) {
    auto r = testsupport::runCommand(etcdctl(i) + " --command-timeout=1s endpoint health 2>&1");
    return r.rc == 0;
}

std::string EtcdCluster::start() {
    for (int i = 0; i < size(); ++i)
        if (auto e = spawn(i); !e.empty())
            return e;
    for (int i = 0; i < size(); ++i) {
        if (!testsupport::waitFor([&] { return healthy(i); }, std::chrono::seconds(20),
                                  std::chrono::milliseconds(100)))
            return "etcd member " + members_[static_cast<size_t>(i)].name +
                   " did not become healthy within 20 s; its log ends:\n" +
                   tail(members_[static_cast<size_t>(i)].log);
    }
    return "";
}

void EtcdCluster::kill(int i) {
    auto& m = members_[static_cast<size_t>(i)];
    if (m.pid <= 0)
        return;
    ::kill(m.pid, SIGKILL);
    int st = 0;
    ::waitpid(m.pid, &st, 0);
    m.pid = -1;
}

void EtcdCluster::signal(int i, int sig) {
    auto& m = members_[static_cast<size_t>(i)];
    if (m.pid > 0)
        ::kill(m.pid, sig);
}

std::string EtcdCluster::restart(int i) {
    kill(i);
    auto& m = members_[static_cast<size_t>(i)];
    if (auto e = spawn(i); !e.empty())
        return e;
    (void)m;
    return "";
}

void EtcdCluster::place(int i, std::string netns, std::string host) {
    auto& m = members_[static_cast<size_t>(i)];
    m.netns = std::move(netns);
    m.host = std::move(host);
}

std::string EtcdCluster::etcdctl(int i) const {
    const auto& m = members_[static_cast<size_t>(i)];
    const std::string& ns = m.netns.empty() ? netns_ : m.netns;
    return "ETCDCTL_API=3 " + (ns.empty() ? std::string() : "ip netns exec " + ns + " ") +
           "/usr/bin/etcdctl --endpoints=" + clientScheme() + m.endpoint() +
           (tls_ ? " --cacert=" + tls_->ca + " --cert=" + tls_->client_cert +
                       " --key=" + tls_->client_key
                 : std::string());
}

int EtcdCluster::addMember() {
    Member m;
    m.name = "m" + std::to_string(members_.size());
    m.client_port = testsupport::freePort();
    m.peer_port = testsupport::freePort();
    m.data_dir = dir_ + "/" + m.name;
    m.log = dir_ + "/" + m.name + ".log";
    members_.push_back(m);
    return size() - 1;
}

std::string EtcdCluster::peerUrl(int i) const {
    return members_[static_cast<size_t>(i)].peerUrl();
}

std::string EtcdCluster::startJoining(int i, const std::string& initialCluster) {
    auto& m = members_[static_cast<size_t>(i)];
    m.initial_cluster = initialCluster;
    if (auto e = spawn(i); !e.empty())
        return e;
    // A learner serves no reads (endpoint health reads a key): it answers Status instead.
    auto learnerAnswers = [&] {
        auto r = testsupport::runCommand(etcdctl(i) +
                                         " --command-timeout=1s endpoint status -w json 2>&1");
        return r.rc == 0 && r.out.find("\"isLearner\":true") != std::string::npos;
    };
    if (!testsupport::waitFor([&] { return healthy(i) || learnerAnswers(); },
                              std::chrono::seconds(20), std::chrono::milliseconds(100)))
        return "etcd member " + m.name + " did not become healthy within 20 s; its log ends:\n" +
               tail(m.log);
    return "";
}

int EtcdCluster::leaderIndex() {
    for (int i = 0; i < size(); ++i) {
        if (members_[static_cast<size_t>(i)].pid <= 0)
            continue;
        auto r = testsupport::runCommand(
            etcdctl(i) + " --command-timeout=1s endpoint status -w json 2>/dev/null");
        if (r.rc != 0)
            continue;
        // {"Status":{"header":{"member_id":A,...},"leader":B,...}}: leader when A == B.
        auto mid = r.out.find("\"member_id\":");
        auto lid = r.out.find("\"leader\":");
        if (mid == std::string::npos || lid == std::string::npos)
            continue;
        auto num = [&](size_t at) {
            at = r.out.find(':', at) + 1;
            size_t end = r.out.find_first_not_of("0123456789", at);
            return r.out.substr(at, end - at);
        };
        if (num(mid) == num(lid))
            return i;
    }
    return -1;
}

} // namespace pcloud::etcdtest
