#pragma once
// Who may act for the zone (docs/ha.md): cped asks its Coordinator whether it leads, with
// which epoch, and writes shared keys through it so that a write is applied only while
// the writer leads.
//
// - LocalCoordinator: the single-node default. Always the leader; the epoch is a counter
//   in STATE_DIR/epoch raised by one at every start (so a restarted cped has a higher
//   epoch than the one before); keys live in STATE_DIR/coordinator.json. Needs no etcd.
//   The model stays in today's XML store either way.
// - The etcd coordinator (makeEtcdCoordinator, lib/cped/etcd_coordinator.h): campaigns with
//   lib/etcd's election; keys live under /pcloud/ in etcd; every write is a Txn guarded by
//   CreateRevision(leader key) == epoch.
//
// Keys are relative to /pcloud/ ("model/web" is /pcloud/model/web): non-empty, printable,
// no "..", and not under "leader/" (the election's own prefix).

#include "common/clock.h"
#include "common/result.h"
#include "cped/zone_journal.h"
#include "policy/zone.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace pcloud::cped {

// How cped reaches its zone's etcd: `cped --cluster URL --node-name NAME` and, for
// etcds:// URLs, the TLS files named in pcloud.conf (etcd_ca, etcd_cert, etcd_key; "" = not
// set). docs/ha.md "TLS to etcd".
struct ClusterSettings {
    std::string url;
    std::string node_name;
    std::string etcd_ca;
    std::string etcd_cert;
    std::string etcd_key;
    // The leader lease's TTL asked of etcd (`--lease-ttl`). etcd grants at least its own
    // minimum (1.5 x election timeout, rounded up: 2 s with default timers, 1 s with
    // --heartbeat-interval=50 --election-timeout=500), and the election uses what it grants.
    std::int64_t lease_ttl_s = 2;
};

struct LeadershipInfo {
    bool leader = false;
    std::int64_t epoch = 0;  // while leader
    std::string node;        // this node's name
    std::string leader_name; // the leading node when known
    std::string reason;      // why not leader
    // While leader in a zone: how long a command signed now stays safe to act on (no newer
    // leader can act before); 0 = no bound (the single node, or not leader).
    Millis valid_for_ms = 0;
};

// The zone's etcd membership (docs/ha.md "Zone membership"): what cluster_status shows and
// what cluster_add / cluster_remove change. Only the etcd coordinator has one; the rules
// that decide whether a change may be made are policy::checkAdd / checkRemove.
class ZoneMembership {
public:
    virtual ~ZoneMembership() = default;
    // MemberList, then Maintenance.Status of every started member on its first client URL.
    virtual Result<policy::ZoneView> observe() = 0;
    struct Added {
        policy::ZoneMember member; // as etcd added it: id and peer URL, no name yet
        policy::ZoneView members;  // every member after the add (health not observed)
    };
    // MemberAdd of a voting member, or of a learner. Errors are etcd's refusals in words
    // ("etcd refused to add ...: unhealthy cluster (...)"); nothing was changed unless the
    // error says it may be.
    virtual Result<Added> add(const std::string& peer_url, bool learner = false) = 0;
    // MemberRemove; errors as for add().
    virtual Status remove(std::uint64_t id, const std::string& label) = 0;
    // MemberPromote of a learner to a voting member; errors as for add().
    virtual Status promote(std::uint64_t id, const std::string& label) = 0;
    // The etcd endpoints this cped was given (etcd://h1:2379,...).
    virtual std::string endpoints() const = 0;
    // Whether they are TLS (etcds://, or https:// elements: etcd::parseEndpoints).
    virtual bool tls() const = 0;
};

class Coordinator {
public:
    virtual ~Coordinator() = default;
    // Starts campaigning (returns at once; leadership comes through onLeadershipChange).
    virtual Status campaign() = 0;
    // Stops campaigning and gives leadership up so another node takes over at once.
    virtual void resign() = 0;
    // Evaluated at the moment of the call (a leader whose lease deadline passed is not).
    virtual LeadershipInfo leadership() = 0;
    bool isLeader() { return leadership().leader; }
    std::int64_t epoch() { return leadership().epoch; }

    // Guarded writes: refused with "not-leader: ..." when this node does not lead, and with
    // "stale-epoch: ..." when the store found the leadership gone.
    virtual Status put(const std::string& key, const std::string& value) = 0;
    virtual Status erase(const std::string& key) = 0;
    virtual Result<std::optional<std::string>> get(const std::string& key) = 0;

    // Called (from the coordinator's own thread) when leader, epoch or leader name change.
    virtual void onLeadershipChange(std::function<void(const LeadershipInfo&)> cb) = 0;
    // "local STATE_DIR" or "etcd://h1:2379,...", for logs.
    virtual std::string describe() const = 0;
    // The zone's membership; null for the single node (no etcd).
    virtual ZoneMembership* zone() { return nullptr; }
    // The zone's event journal (lib/cped/zone_journal.h); null for the single node.
    virtual ZoneJournalStore* journal() { return nullptr; }
};

// Checks a key relative to /pcloud/ and returns it in full ("/pcloud/KEY").
Result<std::string> coordinatorKey(const std::string& key);

// Whether a store error says only that the store did not answer (a timeout, or no etcd
// endpoint reachable), so the same write may be sent again; not a refusal (not-leader,
// stale-epoch, a bad key or value).
bool isUnansweredWrite(const Error& e);

// A guarded write that etcd did not answer is sent again, with the same epoch, while the
// writer's term lasts and for at most `budget_ms` (docs/ha.md "Writes through an etcd
// election"). etcd has no leader for up to two election timeouts after its leader died or
// left, longer than one call's deadline; a write sent again is the same write, and the
// guard still refuses it once the term is gone. `pause` waits between attempts (tests
// pass one that moves their clock).
struct WriteRetry {
    Millis budget_ms = 4000;
    Millis pause_ms = 100;
};
Status retryUnansweredWrite(const std::function<Status()>& attempt,
                            const std::function<bool()>& termLasts, const Clock& clock,
                            const std::function<void(Millis)>& pause, WriteRetry retry = {});

// The number in an epoch file (STATE_DIR/epoch, STATE_DIR/led-epoch): 0 when there is no
// file; an error naming the file, the line and the text, with `fix` (what the operator may
// do), when it is not one non-negative decimal.
Result<std::int64_t> readEpochFile(const std::string& path, const std::string& fix);

// The single-node coordinator on `state_dir`; fails when the epoch file is unreadable or
// cannot be written (it names the file).
Result<std::unique_ptr<Coordinator>> makeLocalCoordinator(const std::string& state_dir,
                                                          const std::string& node_name);

} // namespace pcloud::cped
