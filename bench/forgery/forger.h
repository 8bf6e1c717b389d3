#pragma once
// The forger of bench/forgery (and of tests/bus/forgery_flood_test.cc): a compromised guest
// or peer that holds one valid, untrusted bus identity (agent:SELF) and floods the hub with
// forged, replayed, malformed and oversized traffic as fast as the hub takes it, plus
// connection attempts from an unauthenticated TCP peer. docs/bench-forgery.md says what it
// sends and why. It is a bare Proton peer (not bus::Client): it must be able to send what
// pcloud's own client never would, and to see exactly what the hub refuses.
//
// What it sends, interleaved (each counts as one forged message):
//  - on SELF's own report address (pcloud.reports.SELF, allowed by authz): hellos claiming to
//    be VICTIM or SELF with a forged boot id, heartbeats, a "failed" service report, replies
//    to guessed command ids, garbage bytes, JSON of another version or type, exact replays,
//    a map body, and now and then a string or list body over the hub's 1 MiB cap;
//  - attaches to guessed reply queues pcloud.reply.1..N, to put forged replies there
//    (refused: agents may not answer requests);
//  - link attaches to every address the identity may not use (commands to VICTIM's and
//    SELF's agent addresses, VICTIM's reports, the command API, the dped's address, the
//    journal, the events topic, a node's addresses, and receivers competing for those
//    queues), each carrying an unsigned or wrongly signed command if the hub ever gave
//    credit;
//  - TCP connections without TLS (garbage, or a plain AMQP header) and TLS connections
//    without a client certificate.
// It also receives on pcloud.agent.SELF (its own command queue, allowed) and counts what it
// steals there.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>

namespace pcloud::forgery {

struct ForgerOptions {
    std::string host = "127.0.0.1";
    int port = 0;                                // the hub's amqps:// port
    std::string caFile, certFile, keyFile;       // the identity the forger holds
    std::string self;                            // the assembly that identity names
    std::string victim;                          // another assembly, of the same dped
    std::string victimUuid;                      // its uuid ("" = none)
    std::string deployable;                      // the dped both belong to
    std::string node = "h1";                     // a host name for pcloud.node(s).H
    std::uint64_t total = 0;                     // stop after this many; 0 = until stop()
    int replyQueues = 8;                         // attaches to pcloud.reply.1..N
    int deniedInFlight = 16;                     // refused attaches kept in flight
    bool unauthenticatedPeers = true;            // the raw TCP and no-certificate peers
    std::uint64_t oversizedEvery = 20'000;       // every Nth report is over the cap
    std::string marker = "forged";               // in every forged id, boot id and reason
    std::string wrongSignerKey, wrongSignerCert; // signs the forged commands ("" = unsigned)
};

// What the forger did, from its own side (the bench compares with the hub's and dped's).
struct ForgerStats {
    std::uint64_t total = 0;               // forged messages: sent + attaches + connection attempts
    std::uint64_t sent = 0;                // messages transferred on allowed links
    std::uint64_t accepted = 0;            // ... that the hub accepted
    std::uint64_t rejected = 0;            // ... that the hub rejected (oversized, undecodable)
    std::uint64_t released = 0;            // ... released or modified
    std::uint64_t attaches = 0;            // attaches to addresses the identity may not use
    std::uint64_t refusedUnauthorized = 0; // ... closed with amqp:unauthorized-access
    std::uint64_t refusedOther = 0;        // ... closed with another condition
    std::uint64_t lostWithConnection = 0;  // ... in flight when the hub closed the connection
    std::uint64_t creditOnDenied = 0;      // credit granted on a link that should be refused (bad)
    std::uint64_t receivedOnDenied = 0;    // messages received on such a link (bad)
    std::uint64_t stolen = 0;              // messages received on pcloud.agent.SELF
    std::uint64_t tcpAttempts = 0;         // plain TCP peers (garbage / plain AMQP header)
    std::uint64_t tcpOpened = 0;           // ... that got an AMQP open back (bad)
    std::uint64_t noCertAttempts = 0;      // TLS peers without a client certificate
    std::uint64_t noCertOpened = 0;        // ... whose connection opened (bad)
    std::uint64_t reconnects = 0;          // the forger's own connection lost and made again
    std::uint64_t closedByHub = 0;         // ... of those, closed by the hub as unauthorized
    std::map<std::string, std::uint64_t> kinds;    // per kind of forged message
    std::map<std::string, std::uint64_t> refusals; // refused attaches per "dir address"
    double seconds = 0;
    bool connected = false;
    std::string lastError;
    std::string tcpSample; // the hub's first answer to a plain TCP peer, escaped
    std::string toJson() const;
};

class Forger {
public:
    explicit Forger(ForgerOptions options);
    ~Forger(); // stop()
    Forger(const Forger&) = delete;
    Forger& operator=(const Forger&) = delete;

    void start();
    void stop();       // ends the flood; idempotent
    bool done() const; // total reached (or stopped)
    ForgerStats stats() const;

    struct Impl;

private:
    std::shared_ptr<Impl> impl_;
};

} // namespace pcloud::forgery
