#pragma once
// The embedded AMQP 1.0 message hub that cped hosts, so pcloud needs no separate broker
// (Pacemaker Cloud's cped doubled as its broker the same way). Semantics are in
// docs/protocol/bus.md; in short:
//   - any address that is not a topic is a bounded point-to-point queue: each message goes
//     to one receiver (round robin) and waits while none is attached;
//   - topics (default "pcloud.events" and "pcloud.events.*") fan out to every current
//     subscriber and store nothing; a slow subscriber loses its oldest events (counted);
//   - a receiver link asking for a dynamic source gets a fresh "pcloud.reply.N" queue;
//   - flow control is AMQP credit both ways: producers get credit only while their queue
//     has room (back-pressure, commands are never dropped), receivers' credit is respected;
//   - messages with the application property "coalesce-key" replace an older queued one
//     with the same key on the same queue (heartbeats);
//   - on amqps:// every message carries its sender's identity as the AMQP user-id, as on
//     RabbitMQ: one that names another identity is rejected (counted, forgedUserIds), one
//     without a user-id gets the peer's stamped. Plain listeners leave the user-id as sent.
// All AMQP work runs on the hub's own thread; the public methods are thread-safe.

#include "bus/authz.h"
#include "common/result.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pcloud::bus {

struct HubOptions {
    // Patterns of topic addresses (see address.h); everything else is a queue.
    std::vector<std::string> topics; // empty = defaultTopicPatterns()
    // Prefixes stripped from link addresses, so clients using RabbitMQ naming also work.
    std::vector<std::string> stripPrefixes{"/queue/", "/topic/"};
    std::size_t maxQueueDepth = 1000;         // per queue; producers get no credit beyond it
    std::size_t maxSubscriberBuffer = 1000;   // per topic subscriber; oldest dropped beyond it
    std::uint32_t producerCreditWindow = 100; // most credit one producer link holds at once
    std::size_t maxMessageBytes = 1 << 20;    // larger messages (encoded) are rejected, counted
    std::string containerId = "pcloud-hub";

    // amqps:// listeners (docs/security.md): mutual TLS, then SASL EXTERNAL. A client must
    // present a certificate that chains to `caFile` and is not in the deny list; its
    // identity (pki::parseSubject) decides what its links may attach to (authz.h).
    struct Tls {
        std::string caFile;       // the CA client certificates must chain to
        std::string certFile;     // the hub's own certificate (a cped:HOST identity)
        std::string keyFile;      // its key
        std::string denyListFile; // revoked serials, one per line; "" = none
    } tls;
    // A plain amqp:// listener is refused unless this is set (cped --insecure-listen): its
    // peers prove nothing, so they are let through unrestricted; start() warns.
    bool allowInsecure = false;
    authz::Context authz;                    // what authorization needs to know (cped's model)
    std::size_t maxQueuesPerIdentity = 1000; // queues one identity may create, replies included
};

// Options for a plain amqp:// hub whose peers are all trusted (tests and benches).
inline HubOptions insecureHubOptions() {
    HubOptions o;
    o.allowInsecure = true;
    return o;
}

// Connection and link refusals, for the status command.
struct SecurityCounters {
    std::uint64_t refusedConnections = 0; // TLS/SASL failed, unknown subject or revoked
    std::uint64_t deniedLinks = 0;        // attaches refused by authz::authorize
    std::uint64_t queueCapRefusals = 0;   // attaches refused by maxQueuesPerIdentity
    std::uint64_t closedForDenials = 0;   // connections closed after 100 refused attaches
    std::uint64_t forgedUserIds = 0;      // messages whose user-id was not the sender's identity
};

// Per-address counters, for the status command.
struct AddressCounters {
    bool topic = false;
    std::uint64_t in = 0;        // messages accepted from producers
    std::uint64_t out = 0;       // messages handed to receivers
    std::uint64_t dropped = 0;   // events dropped for slow subscribers (topics only)
    std::uint64_t coalesced = 0; // queued messages replaced by a newer one with the same key
    std::uint64_t rejected = 0;  // messages refused (oversized or undecodable)
    std::size_t depth = 0;       // queued now (queue) or buffered over all subscribers (topic)
    std::size_t receivers = 0;   // attached receiver links
    std::size_t producers = 0;   // attached sender links
};

class Hub {
public:
    explicit Hub(HubOptions options = {});
    ~Hub(); // stops the hub
    Hub(const Hub&) = delete;
    Hub& operator=(const Hub&) = delete;

    // Listens on `url` (e.g. "amqp://127.0.0.1:5672"; port 0 picks a free port) and starts
    // the hub's thread. Returns once the listener is open, or the error if it is not.
    Status start(const std::string& url);
    // Closes every connection and joins the thread. Queued messages are lost (the hub keeps
    // nothing on disk: events are in the journal, commands are re-sent by their owners).
    void stop();
    bool running() const;
    // The port the listener is bound to (the real one when started with port 0); 0 if stopped.
    int boundPort() const;

    std::map<std::string, AddressCounters> counters() const;
    // The counters as a JSON object {"address": {"in": ..}, ...} for the status command.
    std::string countersJson() const;
    SecurityCounters security() const;
    // {"refused_connections": N, "denied_links": N, "queue_cap_refusals": N,
    //  "closed_for_denials": N, "forged_user_ids": N}
    std::string securityJson() const;

    // Re-reads tls.denyListFile (cped calls it on SIGHUP) and closes every connection whose
    // certificate is now revoked. On an error the old list stays in force.
    Status reloadDenyList();

    struct Impl;

private:
    HubOptions options_;
    std::unique_ptr<Impl> impl_;
};

} // namespace pcloud::bus
