#pragma once
// Who may send what, by the AMQP user-id the broker vouches for (docs/security.md,
// "Senders"): RabbitMQ refuses a message whose user-id is not the sender's login (the CN of
// its certificate), and the TLS hub does the same and stamps the peer's identity on a message
// without one. A receiver that acts on what a message says checks its sender here: reports
// only from their agent, journal submissions only from the dped of their deployable, and so on.
//
// On a plain bus (--insecure-listen, tests, benches) nobody proves who they are: the gate
// is open and lets everything through, as before.

#include "bus/message.h"

#include <cstdint>
#include <mutex>
#include <set>
#include <string>

namespace pcloud::bus {

// Whether `userId` is `identity` (ASCII case ignored: pcloud's addresses and names are
// compared that way, e.g. dped's report keys).
bool sameIdentity(const std::string& userId, const std::string& identity);

// Who answers requests sent to `address`: "cped:*" for the command API pcloud.cped and the
// journal pcloud.journal (any cped: in a zone the leader may be any of them), "dped:D" for
// pcloud.dped.D, "node:H" for pcloud.node.H; "" when pcloud does not know (then any sender is
// taken).
std::string serverOf(const std::string& address);
// Whether `userId` is `pattern`: an identity, or "kind:*" for any identity of that kind.
bool senderMatches(const std::string& pattern, const std::string& userId);

// Counts and logs the messages whose sender may not send them. Thread-safe.
class SenderGate {
public:
    // `enforce` = the bus authenticates its peers (amqps://). `what` names the messages in
    // the log ("agent report", "journal submission").
    SenderGate(bool enforce, std::string what);

    bool enforced() const { return enforce_; }
    // True when `m` may be acted on: the gate is open, or `allowed`. Otherwise the refusal is
    // counted and logged with `expected` (the identities that may send it): once per
    // sender, for the first kLoggedSenders senders, then every kLogEvery-th refusal.
    bool admit(const Message& m, bool allowed, const std::string& expected);
    // admit() for a message that only `identity` may send.
    bool admitFrom(const Message& m, const std::string& identity) {
        return admit(m, sameIdentity(m.userId, identity), identity);
    }
    std::uint64_t refused() const;

    static constexpr std::size_t kLoggedSenders = 256;
    static constexpr std::uint64_t kLogEvery = 1000;

private:
    const bool enforce_;
    const std::string what_;
    mutable std::mutex mutex_;
    std::set<std::string> logged_; // senders whose refusal was logged
    std::uint64_t refused_ = 0;
};

} // namespace pcloud::bus
