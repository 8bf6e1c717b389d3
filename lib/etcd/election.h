#pragma once
// Leader election with a fencing epoch, from Txn + lease + watch (not etcd's Election or
// Lock services: etcd#11051, #19597, #14641). docs/ha.md has the whole story.
//
// - Each candidate grants a lease (TTL ~2 s), creates PREFIX<lease-id> = node name with it
//   (a Txn that requires the key to be new) and keeps the lease alive on a stream.
// - The leader is the key with the lowest create_revision under PREFIX; the epoch is that
//   create_revision, so every new leadership has a strictly higher epoch.
// - After every wake-up (keep-alive reply, watch event, timer) the candidate re-reads the
//   prefix; policy::Leadership decides, with the local deadline counted from when the
//   keep-alive was sent. A term that ends (deadline passed, lease gone, key gone) is
//   never resumed: the lease is revoked and a new campaign starts with a new key.
// - guardedTxn() adds CreateRevision(own key) == epoch to a Txn: etcd applies a leader's
//   write only while that very key, hence that leadership, still exists.
//
// The loop runs on its own thread; state(), isLeader() and guardedTxn() may be called from
// any thread, and each evaluates the deadline at the moment it is called.

#include "common/clock.h"
#include "common/result.h"
#include "etcd/client.h"
#include "policy/leadership.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace pcloud::etcd {

struct ElectionOptions {
    std::string prefix = "/pcloud/leader/";
    std::string node_name;
    std::int64_t ttl_s = 2;
    // 0 = derived from the granted TTL: margin TTL/4, renewal every TTL/4.
    Millis margin_ms = 0;
    Millis renew_every_ms = 0;
    Millis retry_ms = 200; // pause after a failed campaign step (etcd unreachable, ...)
};

struct LeaderState {
    bool leader = false;
    std::int64_t epoch = 0;  // while leader
    std::string leader_name; // the leading node when known ("" = none known)
    std::string own_key;     // this term's candidate key ("" between terms)
    std::string reason;      // why not leader
    // While leader: ms from now until no newer leader can have acted (the lease's surest
    // end, policy::LeadershipDecision::lease_end); 0 otherwise.
    Millis valid_for_ms = 0;
};

// Error messages of guardedTxn() start with one of these, so callers can map them.
inline constexpr const char* kNotLeader = "not-leader";
inline constexpr const char* kStaleEpoch = "stale-epoch";

class Election {
public:
    Election(Client& client, ElectionOptions options, const Clock& clock);
    ~Election();

    void start();
    // Ends the loop; with `resign` the lease is revoked so another candidate leads at once.
    void stop(bool resign = true);

    LeaderState state();
    bool isLeader() { return state().leader; }

    // `txn` with CreateRevision(own key) == epoch prepended. Refused locally with kNotLeader
    // when not leader now; kStaleEpoch when etcd found the guard false (leadership lost).
    // A failure of the caller's own compares is a success with succeeded == false.
    Result<TxnResult> guardedTxn(Txn txn, std::int64_t* epoch_used = nullptr);
    // The same guard with an explicit key and epoch: a write sent again within the term
    // that first sent it (cped's retryUnansweredWrite); tests: an old leader's write.
    Result<TxnResult> guardedTxnAs(const std::string& key, std::int64_t epoch, Txn txn);

    // Called on the loop thread when leader/epoch/leader_name change.
    void onChange(std::function<void(const LeaderState&)> cb);

private:
    void loop();
    bool campaign();
    void endTerm(const std::string& reason);
    bool readView();
    void publish(const LeaderState& s);
    void wake();
    LeaderState evaluateLocked(Millis now);

    Client& client_;
    ElectionOptions o_;
    const Clock& clock_;

    std::mutex mutex_; // guards leadership_, own_key_, lease_, last_
    policy::Leadership leadership_;
    std::string own_key_;
    std::int64_t lease_ = 0;
    LeaderState last_;
    std::function<void(const LeaderState&)> on_change_;

    std::mutex wake_mutex_;
    std::condition_variable wake_cv_;
    bool woken_ = false;
    std::atomic<bool> stopping_{false};
    std::thread thread_;

    // Loop-thread only.
    std::unique_ptr<KeepAliveStream> keepalive_;
    std::unique_ptr<WatchStream> watch_;
    std::deque<Millis> sent_; // send times of unanswered keep-alives, in order
    Millis next_renew_ = 0;
    std::int64_t watch_from_ = 0;
};

} // namespace pcloud::etcd
