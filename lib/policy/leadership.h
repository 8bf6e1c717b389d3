#pragma once
// The leader's side of the election (docs/ha.md) as a pure, clock-injected unit: no I/O,
// no threads; the etcd election feeds it what it sent and saw, with the monotonic time,
// and asks it "am I the leader, with which epoch, until when?".
//
// A term is one lease and one candidate key /pcloud/leader/<lease>. The term's candidate
// leads when its key has the lowest create_revision under the prefix; the epoch is that
// create_revision. The local deadline is where this process stops trusting the lease:
//
//     deadline = (time the grant or keep-alive request was SENT) + TTL - margin
//
// Counting from the send, not from the reply, is what makes it conservative: etcd renewed
// the lease at some moment after the send, so the lease lives at least until send + TTL
// on etcd's clock; the margin covers the rate difference between the two clocks and the
// time to act on a step-down. A reply never moves the deadline back.
//
// The term ends, for good, when the deadline passes, when a keep-alive reply says the
// lease is gone, or when a read no longer finds the key: the next leadership needs a new
// lease, a new key and so a strictly higher epoch. A process that was stopped (SIGSTOP,
// a long pause) and resumes past its deadline is no longer the leader the moment it
// looks at the clock, whatever replies are still queued.

#include "common/clock.h"

#include <cstdint>
#include <string>

namespace pcloud::policy {

struct LeadershipTiming {
    Millis ttl_ms = 2000;        // the lease TTL etcd granted
    Millis margin_ms = 500;      // subtracted from the TTL for the local deadline
    Millis renew_every_ms = 500; // keep-alive period (about TTL / 4)
};

// What a read of the candidate prefix showed.
struct ElectionView {
    bool own_present = false;                // the term's key exists (with our lease)
    std::int64_t own_create_revision = 0;    // its create_revision
    std::int64_t lowest_create_revision = 0; // the lowest create_revision under the prefix
    std::string lowest_name;                 // that key's value (the node name)
};

enum class Role {
    Campaigning, // the term is open, the key is not (yet) known to be the lowest
    Leader,
    Ended, // the term is over: revoke what is left and campaign again with a new lease
};

const char* roleName(Role r);

struct LeadershipDecision {
    Role role = Role::Campaigning;
    std::int64_t epoch = 0; // the epoch while leader, 0 otherwise
    std::string leader;     // the leading node's name when known
    std::string reason;     // why the term ended (Ended), or why not leader
    Millis deadline = 0;    // the local lease deadline (monotonic ms), 0 before the grant
    // deadline + margin: the latest renewal's send time + TTL. etcd keeps the lease (and so
    // this epoch's key) at least until then, so no newer leader can act before it: a command
    // this leader signs now is safe to act on until then (monotonic ms; 0 before the grant).
    Millis lease_end = 0;
    Millis next_wakeup = 0; // when to look again at the latest (monotonic ms)
};

class Leadership {
public:
    explicit Leadership(LeadershipTiming t = {}) : t_(t) {}

    // A new term: grant requested at `sent_at`, etcd granted `ttl_ms`.
    void beginTerm(Millis sent_at, Millis ttl_ms);
    // A keep-alive request sent at `sent_at` was answered with `ttl_ms` (<= 0: lease gone).
    void renewed(Millis sent_at, Millis ttl_ms);
    // A read of the prefix, made at some point after the term began.
    void observed(const ElectionView& v);
    // The term ends now (the stream broke and the lease cannot be trusted, shutdown, ...).
    void end(std::string reason);
    // When the next keep-alive should go out after one sent at `sent_at`.
    Millis nextRenewal(Millis sent_at) const { return sent_at + t_.renew_every_ms; }

    // Evaluates at `now` (monotonic ms). A passed deadline ends the term for good.
    LeadershipDecision decide(Millis now);

    bool inTerm() const { return in_term_; }
    const LeadershipTiming& timing() const { return t_; }

private:
    LeadershipTiming t_;
    bool in_term_ = false;
    bool ended_ = false;
    std::string end_reason_;
    Millis deadline_ = 0;
    bool have_view_ = false;
    ElectionView view_;
};

} // namespace pcloud::policy
