#pragma once
// Zone membership rules (docs/ha.md "Zone membership"): whether cluster_add and
// cluster_remove may change the zone's etcd cluster, decided on an observation of it and
// nothing else. Pure: no I/O, no clock, no throw. cped observes the zone (etcd's MemberList
// and, per started member, Maintenance.Status on its client URL), calls these, and only then
// drives etcd's member API.
//
// The rules are etcd's own strict reconfiguration checks, made before etcd is asked, on
// what the operator can see (healthy = answered Status, no alarm, knows a leader), so a
// refusal names the members that are down instead of etcd's "not enough started members":
// - Every change needs a quorum of healthy voting members now (it is a raft entry), and a
//   raft leader that answers (members go on naming a dead leader until they elect another).
// - Remove: the voting members left must keep a quorum of healthy ones; the last voting
//   member is never removed. A learner is removed without the quorum rule (etcd's too).
// - Add: one unstarted member at a time (etcd's rule), and the healthy members must be a
//   quorum of the grown cluster (a one-member zone may grow to two: etcd's exception, with
//   a warning, since it has no quorum until the new member starts).
// - Even voting counts are warned about: 4 members tolerate one failure, like 3.
// - A learner (added with --learner) does not vote: adding one needs only the quorum now,
//   and etcd 3.4 takes one at a time; promoting it needs it healthy and the grown voting
//   set to keep a healthy quorum.

#include "common/result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::policy {

// One member as observed. Health fields come from Maintenance.Status on its client URL.
struct ZoneMember {
    std::uint64_t id = 0;
    std::string name; // "" until the member has started (etcd's rule)
    std::vector<std::string> peer_urls;
    std::vector<std::string> client_urls; // empty until started
    bool learner = false;
    bool answered = false; // Status answered
    std::string error;     // why Status did not answer ("" when it did)
    std::string version;
    std::int64_t db_size = 0;
    std::int64_t db_size_in_use = 0;
    std::uint64_t leader = 0; // the member it believes leads, 0 = none
    std::uint64_t raft_index = 0;
    std::uint64_t raft_term = 0;
    std::uint64_t raft_applied_index = 0;
    std::vector<std::string> errors; // Status errors (alarms)

    bool started() const { return !name.empty(); }
    bool healthy() const { return answered && errors.empty() && leader != 0; }
    // The name, or "(unstarted <hex id>)" for a member that has none yet.
    std::string label() const;
    // Why it is not healthy, in words ("" when healthy).
    std::string unhealthyReason() const;
};

struct ZoneView {
    std::vector<ZoneMember> members; // as MemberList returned them
};

// etcd prints member ids as 16 hex digits; so do we.
std::string memberIdHex(std::uint64_t id);

inline int quorumOf(int voters) {
    return voters / 2 + 1;
}

struct ZoneHealth {
    int voters = 0;         // voting members (learners excluded)
    int healthy_voters = 0; // of which healthy
    int quorum = 0;         // of the voters
    bool has_quorum = false;
    std::uint64_t leader = 0;         // the raft leader most healthy members name, 0 = none
    std::uint64_t leader_applied = 0; // its raft applied index, when it answered
    bool leader_answered = false;
    // The members still name a leader that does not answer (it just died: they elect a new
    // one within an election timeout); nothing can be committed meanwhile.
    bool leader_gone = false;
};
ZoneHealth zoneHealth(const ZoneView& view);

// How far the member's raft applied index is behind the leader's; nullopt unless both answered.
std::optional<std::uint64_t> lagOf(const ZoneView& view, const ZoneMember& member);

// A member name as etcd's --name and --initial-cluster take it: 1-64 printable ASCII
// characters without spaces, '=' or ',' (they separate --initial-cluster's entries).
// Errors name the argument and the value.
Status checkMemberName(const std::string& name);
// http://HOST:PORT or https://HOST:PORT, port 1-65535, no path.
Status checkPeerUrl(const std::string& url);

struct ZoneVerdict {
    bool allowed = false;
    std::string refusal;               // what is wrong, when refused
    std::vector<std::string> warnings; // allowed, but worth saying
    int target = -1;                   // checkRemove: the index of the member to remove
};

// `learner`: a member that replicates the log without voting (etcd 3.4 allows one), so the
// voters' quorum is all that matters; cluster_promote makes it vote (checkPromote).
ZoneVerdict checkAdd(const ZoneView& view, const std::string& name, const std::string& peer_url,
                     bool learner = false);
// `who` is a member's name, its id in hex, or (for a member that has not started and so has
// no name) one of its peer URLs.
ZoneVerdict checkRemove(const ZoneView& view, const std::string& who);
// A learner becomes a voting member: it must have started and be healthy, and the grown
// voting set must have a quorum of healthy members (the learner counts). etcd itself also
// wants its log in sync with the leader's, and says so when it is not.
ZoneVerdict checkPromote(const ZoneView& view, const std::string& who);

// Whether a zone's leader may run a dped for a deployable on libvirt URI `uri`: "" when it
// may, else why not. Leadership moves between hosts, so a URI that names no host
// (qemu:///system), or names this one (localhost, 127.0.0.0/8, ::1), means whichever host
// leads: the next leader would start the same domains again on its own host, and a VM would
// run twice. A URI naming the hypervisor (qemu+tls://hv1/system) is the same libvirt from any
// leader. libvirt's test driver (test:///...) holds no real domain and is allowed (tests).
std::string zoneDpedRefusal(const std::string& uri);

// The --initial-cluster value the new member starts with: every started member's
// name=peer URL pairs, in MemberList order, then NAME=PEER_URL.
std::string initialCluster(const ZoneView& view, const std::string& name,
                           const std::string& peer_url);

} // namespace pcloud::policy
