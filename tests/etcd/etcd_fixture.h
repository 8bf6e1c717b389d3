#pragma once
// Real etcd members for the tests: started by the test on free loopback ports with a
// temporary data dir each, SIGKILLed (and their dirs removed) at the end. A missing
// /usr/bin/etcd is a loud failure, not a skip (scripts/install-deps.sh installs it).
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pcloud::etcdtest {

struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    std::string data_dir;
    std::string log;
    pid_t pid = -1;
    // A member that joins a running cluster (addMember): its --initial-cluster as the
    // member API printed it, and --initial-cluster-state existing.
    std::string initial_cluster;
    // Where it runs (place()): its own network namespace and address; by default the
    // cluster's namespace (or none) and 127.0.0.1.
    std::string netns;
    std::string host = "127.0.0.1";
    std::string endpoint() const { return host + ":" + std::to_string(client_port); }
    std::string peerUrl() const { return "http://" + host + ":" + std::to_string(peer_port); }
};

// TLS for etcd's client port (peers stay plain on loopback): a CA, the members' server
// certificate (SAN IP:127.0.0.1) and a client certificate, made with the openssl command.
struct TlsPki {
    std::string ca, ca_key;
    std::string server_cert, server_key;
    std::string client_cert, client_key;
};
// Makes a fresh PKI in `dir` (created if missing); "" or what went wrong.
std::string makeTlsPki(const std::string& dir, TlsPki& out);

class EtcdCluster {
public:
    // `extraArgs` go to every member (e.g. --heartbeat-interval=50 --election-timeout=500).
    // With `netns`, the members run in that network namespace (support/netns.h) and the
    // fixture's etcdctl checks too; its loopback must be up.
    explicit EtcdCluster(int members = 1, std::vector<std::string> extraArgs = {},
                         std::string netns = {});
    ~EtcdCluster();

    // Before start(): the members serve clients over TLS with `pki` and require client
    // certificates (--client-cert-auth); url() is etcds://, etcdctl() presents the client
    // certificate.
    void useTls(TlsPki pki) { tls_ = std::move(pki); }
    // Before start(): member i runs in network namespace `netns` (made by the caller, its
    // loopback up) and serves clients and peers on `host` (an address there).
    void place(int i, std::string netns, std::string host);
    // Starts every member and waits until each answers; "" or what went wrong, with the
    // end of the member's log.
    std::string start();
    void kill(int i);            // SIGKILL member i and reap it
    void signal(int i, int sig); // e.g. SIGSTOP / SIGCONT
    std::string restart(int i);
    // A new member's name and free ports (not started): "m<N>". Its peer URL is
    // peerUrl(i); start it with startJoining() once the cluster has added it.
    int addMember();
    std::string peerUrl(int i) const;
    // Starts member i with --initial-cluster `initialCluster` --initial-cluster-state
    // existing and waits until it answers (healthy, or a learner answering Status); "" or
    // what went wrong.
    std::string startJoining(int i, const std::string& initialCluster);
    // "etcd://127.0.0.1:P1,127.0.0.1:P2,..."
    std::string url() const;
    std::vector<std::string> endpoints() const;
    Member& member(int i) { return members_[static_cast<size_t>(i)]; }
    int size() const { return static_cast<int>(members_.size()); }
    // The index of the member etcd reports as the raft leader, -1 if none answers.
    int leaderIndex();
    // "ETCDCTL_API=3 [ip netns exec NS] /usr/bin/etcdctl --endpoints=... " for a shell.
    std::string etcdctl(int i = 0) const;
    // Revokes the lease of the leader key that cped `node` holds under /pcloud/leader/: it
    // steps down at once (and campaigns again). "" or what went wrong.
    std::string revokeLeaseOf(const std::string& node) const;

private:
    std::string spawn(int i);
    bool healthy(int i);
    std::string dir_;
    std::vector<std::string> extra_;
    std::string netns_;
    std::vector<Member> members_;
    std::optional<TlsPki> tls_;
    std::string clientScheme() const { return tls_ ? "https://" : "http://"; }
};

std::string tail(const std::string& path, size_t bytes = 2000);

} // namespace pcloud::etcdtest
