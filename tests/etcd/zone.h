#pragma once
// A zone of three hypervisor-less hosts for the HA tests and bench/failover-cp (docs/ha.md
// "The zone harness"): h1..h3, each a network namespace with one etcd member and one cped
// (the real dped under it), joined by a bridge in a fourth namespace, and a client
// namespace; addresses only inside those namespaces (10.77.0.0/24). The bus is amqps://
// (one PKI: cped.h1..h3, operator.alice); the floating address 10.77.0.100/24 follows the
// leader; deployable `web` has one assembly on libvirt's test driver.
//
// start() makes the model through h1 alone, then starts h2 and h3 with empty state dirs: they
// know the model only from the zone's snapshot in etcd. Needs root. Processes are spawned by the
// calling thread (PR_SET_PDEATHSIG follows it): call start() and startCped() from one long-lived
// thread. Nothing here asserts; callers do.
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pcloud::testsupport {
class TestTls;
}

namespace pcloud::etcdtest {

struct ZoneOptions {
    std::vector<std::string> etcd_args; // to every member (e.g. tuned timers)
    std::vector<std::string> cped_args; // to every cped (e.g. --lease-ttl 1)
};

struct ZoneHost {
    std::string name; // h1..h3: its cped's node name and cped.NAME identity
    std::string ns;
    std::string addr; // 10.77.0.N
    std::string port; // its port on the bridge, in the switch namespace (v0..v2)
    std::string dir;  // state dir, pcloud.conf, cped.log (with its dpeds' output)
    pid_t cped = -1;
    std::string log() const;
};

class Zone {
public:
    static constexpr int kHosts = 3;
    static constexpr int kHubPort = 5671;
    static inline const std::string kFloating = "10.77.0.100/24";
    static inline const std::string kFloatingIp = "10.77.0.100";

    explicit Zone(ZoneOptions o = {});
    ~Zone(); // kills everything it started, deletes the namespaces and the temp dir
    Zone(const Zone&) = delete;
    Zone& operator=(const Zone&) = delete;

    // Namespaces, etcd, PKI, the model, the three cpeds; "" or what went wrong.
    std::string start();

    ZoneHost& host(int i) { return hosts_[static_cast<size_t>(i)]; }
    EtcdCluster& etcd() { return *etcd_; }
    const std::string& switchNs() const { return sw_; }
    const std::string& clientNs() const { return client_; }

    // cped on host i; its own etcd member first in its list, as an operator sets it: a
    // host cut off from the others then fails its calls at once (no raft leader) rather
    // than timing out on an unreachable address.
    void startCped(int i);
    // Signals cped i; SIGKILL also reaps it.
    void signalCped(int i, int sig);
    // Host i's port on the bridge down (cut off) or up; "" or what went wrong.
    std::string setLink(int i, bool up);

    // pcloudsh in the client namespace, through the floating address (or `addr`).
    testsupport::CommandResult shell(const std::string& words,
                                     const std::string& addr = kFloatingIp) const;
    // `pcloudsh --json events --follow` in the client namespace through the floating
    // address, all along: its event lines (and any error it prints) appended to `path`.
    // Stop it with SIGINT (it ends cleanly) and reap it.
    pid_t follow(const std::string& path) const;
    // deployable_status web answered, with the dped's own state (the leader asked it).
    bool dpedAnswers() const;
    // The host whose cped leads, from its own cluster_status through the floating address;
    // -1 when none answers.
    int leader() const;
    bool holds(int i) const; // host i has the floating address on eth0
    std::string mac(int i) const;
    // The MAC the client's ARP entry gives the floating address ("" when none).
    std::string clientArp() const;
    // A TCP connection from the client namespace to the floating address's hub port is
    // accepted within `timeout` (the address answers, from whichever host).
    bool hubAnswers(std::chrono::milliseconds timeout) const;

private:
    ZoneOptions o_;
    std::string sw_, client_, root_;
    std::vector<ZoneHost> hosts_;
    std::unique_ptr<EtcdCluster> etcd_;
    std::unique_ptr<testsupport::TestTls> tls_;
};

// Wall-clock ms since 1970, the time base of cped's log lines (parseLogTime).
std::int64_t wallMs();

} // namespace pcloud::etcdtest
