#include "bus/hub.h"

#include "bus/address.h"
#include "bus/proton_util.h"
#include "common/log.h"
#include "pki/identity.h"

#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/listen_handler.hpp>
#include <proton/listener.hpp>
#include <proton/message.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/source.hpp>
#include <proton/source_options.hpp>
#include <proton/ssl.hpp>
#include <proton/target.hpp>
#include <proton/target_options.hpp>
#include <proton/transport.hpp>
#include <proton/work_queue.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unistd.h>

namespace pcloud::bus {

namespace {

// 128 random bits in hex for a reply queue's name: only a peer that was sent a request
// carrying it (in reply_to) knows where to answer, so replies cannot be forged by guessing.
std::string unguessableSuffix() {
    std::random_device rd; // getrandom(2) on Linux
    static const char* const kHex = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < 4; ++i) {
        auto v = static_cast<std::uint32_t>(rd());
        for (int n = 0; n < 8; ++n, v >>= 4)
            out.push_back(kHex[v & 0xf]);
    }
    return out;
}

// A queued message and its coalesce key (read once, on arrival).
struct Entry {
    proton::message message;
    std::string key;
};

// Replaces an entry with the same non-empty key, else appends. Returns true if replaced.
bool enqueue(std::deque<Entry>& q, Entry e) {
    if (!e.key.empty()) {
        for (auto& old : q) {
            if (old.key == e.key) {
                old = std::move(e);
                return true;
            }
        }
    }
    q.push_back(std::move(e));
    return false;
}

struct Subscriber {
    proton::sender link;
    std::deque<Entry> buffer;
};

// One address: a queue (messages + competing consumers) or a topic (subscribers).
struct Node {
    bool topic = false;
    bool dynamic = false;
    std::deque<Entry> messages;            // queues
    std::vector<proton::sender> consumers; // queues
    std::size_t next = 0;                  // round-robin cursor over consumers
    std::vector<Subscriber> subscribers;   // topics
    std::vector<proton::receiver> producers;
    AddressCounters counters;
    bool logged_reject = false; // the first rejected message is logged, the rest counted
    std::string owner;          // the identity whose attach created it (the queue cap)
};

struct LinkInfo {
    std::string address;
    proton::connection connection;
};

// An accepted connection: who it proved to be.
struct ConnPeer {
    authz::Peer peer;
    std::string serial;  // its certificate's (TLS only)
    std::string address; // host:port, for log lines
    std::string name() const { return peer.insecure ? "insecure" : peer.identity.text(); }
    int deniedAttaches = 0;
    bool closedForDenials = false;
};
// Refused attaches are logged per identity: the first 10, then every 1000th; connections
// closed for them (below) the first 5, then every 100th. All are counted.
constexpr std::uint64_t kLoggedDenialsPerIdentity = 10;
constexpr std::uint64_t kDenialLogEvery = 1000;
constexpr std::uint64_t kLoggedClosuresPerIdentity = 5;
constexpr std::uint64_t kClosureLogEvery = 100;
// A connection that keeps attaching where its identity may not is closed after this many
// refusals (it may connect again). Proton keeps every refused link of a connection until
// the connection ends, and ending one with tens of thousands of them held the hub's thread
// for seconds (the forgery bench: other clients' idle timeouts expired).
constexpr int kMaxDeniedAttachesPerConnection = 100;
// Refused connections cost an unauthenticated peer one TCP connect each, so their warnings
// are bounded: the first kLoggedRefusals are logged, then every kRefusalLogEvery-th (with the
// total); all are counted. A reason (Proton quotes the bytes it could not read) is cut to
// kMaxReasonChars. (A flood of garbage connections made ~2 KB of log per connection.)
constexpr std::uint64_t kLoggedRefusals = 20;
constexpr std::uint64_t kRefusalLogEvery = 1000;
constexpr std::size_t kMaxReasonChars = 200;

} // namespace

struct Hub::Impl : proton::messaging_handler, proton::listen_handler {
    static constexpr std::uint32_t kMaxFrameSize = 1024 * 1024;
    explicit Impl(const HubOptions& o) : options(o) {
        if (options.topics.empty())
            options.topics = defaultTopicPatterns();
    }

    bool tlsMode = false;
    std::optional<proton::ssl_server_options> sslOptions;
    std::set<std::string> denied; // revoked serials
    std::map<proton::connection, ConnPeer> peers;
    std::map<std::string, std::size_t> queuesByOwner;
    std::map<std::string, std::uint64_t> deniedByIdentity; // refused attaches, for log bounds
    std::map<std::string, std::uint64_t> closedByIdentity; // connections closed for them
    std::map<std::string, std::uint64_t> forgedByIdentity; // messages with another's user-id
    SecurityCounters security;

    HubOptions options;
    mutable std::mutex mutex; // guards everything below (handlers run on the hub thread)
    std::map<std::string, Node> nodes;
    std::map<proton::sender, LinkInfo> senders;
    std::map<proton::receiver, LinkInfo> receivers;
    std::uint64_t dynamicCounter = 0;
    int port = 0;
    std::promise<std::string> opened; // "" on success, else the error
    bool openedSet = false;

    // Connections whose links this handler call touched (sends, credit). Proton writes a
    // connection's frames only when that connection itself has an event, so each one that
    // is not the connection being handled gets a no-op wake (work_queue add) afterwards;
    // otherwise a fanned-out message would sit in memory until the receiver's next heartbeat.
    std::set<proton::connection> touched;
    void touch(const proton::link& l) { touched.insert(l.connection()); }
    void wakeTouched() {
        for (auto c : touched) {
            if (c.active())
                c.work_queue().add([] {});
        }
        touched.clear();
    }
    // Entry points lock the state and wake the touched connections on the way out.
    struct Guard {
        Impl& impl;
        std::unique_lock<std::mutex> lock;
        explicit Guard(Impl& i) : impl(i), lock(i.mutex) {}
        ~Guard() { impl.wakeTouched(); }
    };

    std::unique_ptr<proton::container> container;
    std::unique_ptr<proton::work_queue> work;
    std::thread thread;

    // ---- listener ----
    void on_open(proton::listener& l) override {
        std::lock_guard lock(mutex);
        port = l.port();
        if (!openedSet) {
            openedSet = true;
            opened.set_value("");
        }
    }
    void on_error(proton::listener&, const std::string& what) override {
        std::lock_guard lock(mutex);
        if (!openedSet) {
            openedSet = true;
            opened.set_value(what);
        }
        PCLOUD_LOG(Error, "Hub listener failed", {{"error", what}});
    }
    proton::connection_options on_accept(proton::listener&) override {
        // A bounded frame size (messages still span frames) makes a protocol header in the
        // middle of a connection a framing error at once: "AMQP" read as a frame size is
        // ~1 GiB. That is what a restarted in-guest agent sends through its virtio-serial
        // relay, whose hub connection still carries the killed agent's session; without a
        // bound the hub would wait for a 1 GiB frame and never see the new agent.
        auto opts = proton::connection_options()
                        .handler(*this)
                        .container_id(options.containerId)
                        .max_frame_size(kMaxFrameSize);
        if (tlsMode)
            opts.ssl_server_options(*sslOptions).sasl_enabled(true).sasl_allowed_mechs("EXTERNAL");
        return opts;
    }

    // ---- authentication ----
    // The warning for a refused connection (security.refusedConnections already counts it).
    // `subject` is "" for a peer that never got as far as a certificate.
    void logRefusal(const std::string& peer, const std::string& subject, std::string reason) {
        const std::uint64_t n = security.refusedConnections;
        if (n > kLoggedRefusals && n % kRefusalLogEvery != 0)
            return;
        if (reason.size() > kMaxReasonChars)
            reason = reason.substr(0, kMaxReasonChars) + "...";
        const std::string what =
            n == kLoggedRefusals ? "Hub refused a connection (further refusals are logged every " +
                                       std::to_string(kRefusalLogEvery) +
                                       "th; all are counted: status bus.refused_connections)"
                                 : "Hub refused a connection";
        if (subject.empty())
            PCLOUD_LOG(Warning, what,
                       {{"peer", peer.empty() ? "-" : peer},
                        {"reason", reason},
                        {"refused_total", std::to_string(n)}});
        else
            PCLOUD_LOG(Warning, what,
                       {{"peer", peer.empty() ? "-" : peer},
                        {"subject", subject},
                        {"reason", reason},
                        {"refused_total", std::to_string(n)}});
    }

    void refuseConnection(proton::connection& c, const std::string& peer,
                          const std::string& subject, const std::string& reason) {
        ++security.refusedConnections;
        logRefusal(peer, subject.empty() ? "-" : subject, reason);
        c.close(proton::error_condition("amqp:unauthorized-access", reason));
    }

    void on_connection_open(proton::connection& c) override {
        Guard guard(*this);
        ConnPeer cp;
        cp.address = detail::peerAddress(c.transport());
        if (!tlsMode) {
            cp.peer.insecure = true;
            peers[c] = cp;
            c.open();
            return;
        }
        std::string subject = c.transport().ssl().remote_subject();
        if (subject.empty()) {
            refuseConnection(c, cp.address, subject, "no client certificate");
            return;
        }
        auto parsed = pki::parseSubject(subject);
        if (!parsed) {
            refuseConnection(c, cp.address, subject, parsed.error().message);
            return;
        }
        if (denied.count(parsed->serial)) {
            refuseConnection(c, cp.address, subject,
                             "certificate serial " + parsed->serial + " is revoked");
            return;
        }
        cp.peer.identity = parsed->identity;
        cp.serial = parsed->serial;
        PCLOUD_LOG(Info, "Hub peer authenticated",
                   {{"peer", cp.address.empty() ? "-" : cp.address},
                    {"identity", cp.peer.identity.text()},
                    {"serial", cp.serial}});
        peers[c] = cp;
        c.open();
    }

    // Closes every connection whose certificate is in `denied` now.
    void closeRevoked() {
        for (auto& [c, cp] : peers) {
            if (cp.peer.insecure || !denied.count(cp.serial))
                continue;
            ++security.refusedConnections;
            PCLOUD_LOG(Warning, "Hub closed a connection whose certificate was revoked",
                       {{"peer", cp.address.empty() ? "-" : cp.address},
                        {"identity", cp.peer.identity.text()},
                        {"serial", cp.serial}});
            proton::connection conn = c;
            conn.close(proton::error_condition("amqp:unauthorized-access",
                                               "certificate serial " + cp.serial + " was revoked"));
            touched.insert(conn);
        }
    }

    // ---- authorization (mutex held) ----
    // Whether link `l` of a known peer may attach to `address`; if not it is closed, logged
    // (the first few per connection) and counted; the queue cap applies to attaches that
    // would make a new node.
    bool admit(proton::link l, authz::Direction dir, const std::string& address, bool dynamic) {
        auto it = peers.find(l.connection());
        std::string why;
        std::string condition = "amqp:unauthorized-access";
        ConnPeer* cp = it == peers.end() ? nullptr : &it->second;
        if (!cp) {
            why = "the connection is not authenticated";
        } else {
            auto d = authz::authorize(cp->peer, dir, address, dynamic, options.authz);
            if (!d.allow) {
                why = d.reason;
            } else if (!cp->peer.insecure && (dynamic || !nodes.count(address)) &&
                       queuesByOwner[cp->name()] >= options.maxQueuesPerIdentity) {
                condition = "amqp:resource-limit-exceeded";
                why = "identity " + cp->name() + " has created " +
                      std::to_string(options.maxQueuesPerIdentity) + " queues already (the cap)";
            }
        }
        if (why.empty())
            return true;
        if (condition == "amqp:unauthorized-access")
            ++security.deniedLinks;
        else
            ++security.queueCapRefusals;
        const bool tooMany =
            cp && ++cp->deniedAttaches > kMaxDeniedAttachesPerConnection && !cp->closedForDenials;
        std::string shown = dynamic ? "a dynamic reply queue" : address;
        std::string who = cp ? cp->name() : "-";
        // Logged per identity (a peer that is closed for its refusals connects again): the
        // first few, then every kDenialLogEvery-th with the identity's total.
        const std::uint64_t mine = ++deniedByIdentity[who];
        if (mine <= kLoggedDenialsPerIdentity || mine % kDenialLogEvery == 0)
            PCLOUD_LOG(Warning, "Hub refused a link",
                       {{"identity", who},
                        {"peer", cp && !cp->address.empty() ? cp->address : "-"},
                        {"direction", authz::toString(dir)},
                        {"address", shown},
                        {"reason", why},
                        {"refused_total", std::to_string(mine)}});
        l.close(proton::error_condition(condition,
                                        who + " may not " + authz::toString(dir) +
                                            (dir == authz::Direction::Send ? " to " : " from ") +
                                            shown + ": " + why));
        if (tooMany) {
            cp->closedForDenials = true;
            ++security.closedForDenials;
            const std::uint64_t closed = ++closedByIdentity[who];
            if (closed <= kLoggedClosuresPerIdentity || closed % kClosureLogEvery == 0)
                PCLOUD_LOG(Warning, "Hub closed a connection that kept attaching where it may not",
                           {{"identity", who},
                            {"peer", cp->address.empty() ? "-" : cp->address},
                            {"refused_attaches", std::to_string(cp->deniedAttaches - 1)},
                            {"closed_total", std::to_string(closed)}});
            l.connection().close(proton::error_condition(
                "amqp:unauthorized-access", "more than " +
                                                std::to_string(kMaxDeniedAttachesPerConnection) +
                                                " refused attaches on one connection"));
        }
        return false;
    }
    // Marks a node just made by `l`'s attach as owned by its peer (the per-identity cap).
    void own(Node& n, const proton::link& l) {
        if (!n.owner.empty())
            return;
        auto it = peers.find(l.connection());
        if (it == peers.end() || it->second.peer.insecure)
            return;
        n.owner = it->second.name();
        ++queuesByOwner[n.owner];
    }

    // ---- helpers (mutex held) ----
    Node& node(const std::string& address) {
        auto it = nodes.find(address);
        if (it != nodes.end())
            return it->second;
        Node& n = nodes[address];
        n.topic = matchesTopic(address, options.topics);
        n.counters.topic = n.topic;
        return n;
    }

    std::string logical(const std::string& wire) const {
        return stripPrefix(wire, options.stripPrefixes);
    }

    void refillCredit(Node& n) {
        const auto window = static_cast<long>(options.producerCreditWindow);
        if (n.topic) {
            for (auto& p : n.producers) {
                long have = p.credit();
                if (have < window) {
                    p.add_credit(static_cast<std::uint32_t>(window - have));
                    touch(p);
                }
            }
            return;
        }
        long room = static_cast<long>(options.maxQueueDepth) - static_cast<long>(n.messages.size());
        for (auto& p : n.producers)
            room -= p.credit();
        for (auto& p : n.producers) {
            if (room <= 0)
                break;
            long give = std::min(window - static_cast<long>(p.credit()), room);
            if (give > 0) {
                p.add_credit(static_cast<std::uint32_t>(give));
                touch(p);
                room -= give;
            }
        }
    }

    void pumpQueue(Node& n) {
        while (!n.messages.empty() && !n.consumers.empty()) {
            std::size_t count = n.consumers.size();
            bool sent = false;
            for (std::size_t i = 0; i < count; ++i) {
                std::size_t idx = (n.next + i) % count;
                proton::sender& s = n.consumers[idx];
                if (s.active() && s.credit() > 0) {
                    s.send(n.messages.front().message);
                    touch(s);
                    n.messages.pop_front();
                    ++n.counters.out;
                    n.next = (idx + 1) % count;
                    sent = true;
                    break;
                }
            }
            if (!sent)
                break;
        }
        n.counters.depth = n.messages.size();
        refillCredit(n);
    }

    void pumpSubscriber(Node& n, Subscriber& sub) {
        while (!sub.buffer.empty() && sub.link.active() && sub.link.credit() > 0) {
            sub.link.send(sub.buffer.front().message);
            touch(sub.link);
            sub.buffer.pop_front();
            ++n.counters.out;
        }
    }

    void updateTopicDepth(Node& n) {
        std::size_t d = 0;
        for (auto& s : n.subscribers)
            d += s.buffer.size();
        n.counters.depth = d;
    }

    void route(Node& n, proton::message& m) {
        Entry e{m, detail::stringProperty(m, std::string(kCoalesceKey))};
        ++n.counters.in;
        if (n.topic) {
            for (auto& sub : n.subscribers) {
                bool replaced = enqueue(sub.buffer, e);
                if (replaced)
                    ++n.counters.coalesced;
                while (sub.buffer.size() > options.maxSubscriberBuffer) {
                    sub.buffer.pop_front();
                    ++n.counters.dropped;
                }
                pumpSubscriber(n, sub);
            }
            updateTopicDepth(n);
            return;
        }
        if (enqueue(n.messages, std::move(e)))
            ++n.counters.coalesced;
        pumpQueue(n);
    }

    // Forgets every link of `c` (or just `only` when given) and tidies their nodes.
    void dropLinks(const proton::connection* c, const proton::link* only) {
        std::vector<std::string> touched;
        for (auto it = senders.begin(); it != senders.end();) {
            bool match = only ? (proton::link(it->first) == *only) : (it->second.connection == *c);
            if (!match) {
                ++it;
                continue;
            }
            auto nit = nodes.find(it->second.address);
            if (nit != nodes.end()) {
                Node& n = nit->second;
                auto& cs = n.consumers;
                cs.erase(std::remove(cs.begin(), cs.end(), it->first), cs.end());
                if (n.next >= cs.size())
                    n.next = 0;
                auto& ss = n.subscribers;
                ss.erase(std::remove_if(ss.begin(), ss.end(),
                                        [&](const Subscriber& s) { return s.link == it->first; }),
                         ss.end());
                touched.push_back(it->second.address);
            }
            it = senders.erase(it);
        }
        for (auto it = receivers.begin(); it != receivers.end();) {
            bool match = only ? (proton::link(it->first) == *only) : (it->second.connection == *c);
            if (!match) {
                ++it;
                continue;
            }
            auto nit = nodes.find(it->second.address);
            if (nit != nodes.end()) {
                auto& ps = nit->second.producers;
                ps.erase(std::remove(ps.begin(), ps.end(), it->first), ps.end());
                touched.push_back(it->second.address);
            }
            it = receivers.erase(it);
        }
        for (const auto& a : touched) {
            auto nit = nodes.find(a);
            if (nit == nodes.end())
                continue;
            Node& n = nit->second;
            n.counters.receivers = n.topic ? n.subscribers.size() : n.consumers.size();
            n.counters.producers = n.producers.size();
            if (n.topic)
                updateTopicDepth(n);
            // A reply address lives as long as the link that asked for it.
            if (n.dynamic && n.consumers.empty()) {
                if (!n.owner.empty()) {
                    auto oit = queuesByOwner.find(n.owner);
                    if (oit != queuesByOwner.end() && oit->second > 0 && --oit->second == 0)
                        queuesByOwner.erase(oit);
                }
                nodes.erase(nit);
            }
        }
    }

    // ---- links ----
    void on_receiver_open(proton::receiver& r) override {
        Guard guard(*this);
        std::string wire = r.target().address();
        std::string address = logical(wire);
        if (address.empty()) {
            r.close(proton::error_condition(
                "amqp:not-implemented",
                "the pcloud hub has no anonymous relay: open the sender with a target address"));
            return;
        }
        if (!admit(r, authz::Direction::Send, address, false))
            return;
        r.open(proton::receiver_options().credit_window(0).auto_accept(false).target(
            proton::target_options().address(wire)));
        receivers[r] = LinkInfo{address, r.connection()};
        Node& n = node(address);
        own(n, r);
        n.producers.push_back(r);
        n.counters.producers = n.producers.size();
        refillCredit(n);
    }

    void on_sender_open(proton::sender& s) override {
        Guard guard(*this);
        std::string wire;
        std::string address;
        bool dynamic = s.source().dynamic();
        if (!admit(s, authz::Direction::Receive, logical(s.source().address()), dynamic))
            return;
        if (dynamic) {
            address = std::string(kDynamicPrefix) + std::to_string(++dynamicCounter) + "." +
                      unguessableSuffix();
            wire = address;
        } else {
            wire = s.source().address();
            address = logical(wire);
        }
        if (address.empty()) {
            s.close(proton::error_condition("amqp:invalid-field",
                                            "a receiver needs a source address or dynamic=true"));
            return;
        }
        s.open(proton::sender_options().source(proton::source_options().address(wire)));
        senders[s] = LinkInfo{address, s.connection()};
        Node& n = node(address);
        own(n, s);
        if (dynamic)
            n.dynamic = true;
        if (n.topic) {
            n.subscribers.push_back(Subscriber{s, {}});
            n.counters.receivers = n.subscribers.size();
        } else {
            n.consumers.push_back(s);
            n.counters.receivers = n.consumers.size();
            pumpQueue(n);
        }
    }

    void on_sendable(proton::sender& s) override {
        Guard guard(*this);
        auto it = senders.find(s);
        if (it == senders.end())
            return;
        auto nit = nodes.find(it->second.address);
        if (nit == nodes.end())
            return;
        Node& n = nit->second;
        if (n.topic) {
            for (auto& sub : n.subscribers)
                if (sub.link == s)
                    pumpSubscriber(n, sub);
            updateTopicDepth(n);
        } else {
            pumpQueue(n);
        }
    }

    // mutex held. On a TLS listener, the user-id is the sender's identity, as RabbitMQ makes
    // it: a message naming another identity is refused (false; counted and logged per
    // identity, the first few then every kDenialLogEvery-th), one without gets the peer's.
    // Plain peers proved nothing: their user-id is left as sent.
    bool stampSender(proton::delivery& d, proton::message& m, const std::string& address) {
        auto pit = peers.find(d.connection());
        if (pit == peers.end() || pit->second.peer.insecure)
            return true;
        const ConnPeer& cp = pit->second;
        const std::string who = cp.peer.identity.text();
        const std::string claimed = m.user();
        if (claimed.empty() || claimed == who) {
            m.user(who);
            return true;
        }
        ++security.forgedUserIds;
        const std::uint64_t mine = ++forgedByIdentity[who];
        if (mine <= kLoggedDenialsPerIdentity || mine % kDenialLogEvery == 0)
            PCLOUD_LOG(Warning, "Hub rejected a message whose user-id is not its sender's identity",
                       {{"identity", who},
                        {"peer", cp.address.empty() ? "-" : cp.address},
                        {"address", address},
                        {"user_id", claimed.substr(0, kMaxReasonChars)},
                        {"refused_total", std::to_string(mine)}});
        return false;
    }

    void on_message(proton::delivery& d, proton::message& m) override {
        Guard guard(*this);
        auto it = receivers.find(d.receiver());
        if (it == receivers.end()) {
            d.reject();
            return;
        }
        Node& n = node(it->second.address);
        // One cap for every body type, checked on the encoded size before anything is
        // converted; then everything a reader looks at must decode. Either failure rejects
        // this message only: nothing from a peer may end the hub's thread.
        std::string why;
        auto size = detail::messageSize(m);
        if (size && *size > options.maxMessageBytes)
            why = "oversized";
        else if (auto reason = detail::undecodableReason(m); !reason.empty())
            why = "undecodable: " + reason;
        else if (!size)
            why = "undecodable: cannot be re-encoded";
        if (why.empty() && !stampSender(d, m, it->second.address)) {
            d.reject();
            refillCredit(n);
            return;
        }
        if (why.empty()) {
            try {
                route(n, m);
                d.accept();
                refillCredit(n);
                return;
            } catch (const std::exception& e) {
                why = std::string("undecodable: ") + e.what();
            }
        }
        ++n.counters.rejected;
        // Logged once per address: a peer can send these as fast as it likes.
        if (!n.logged_reject) {
            n.logged_reject = true;
            PCLOUD_LOG(Warning,
                       "Hub rejected a message (further ones on this address are only counted)",
                       {{"address", it->second.address},
                        {"reason", why},
                        {"bytes", size ? std::to_string(*size) : "?"},
                        {"limit", std::to_string(options.maxMessageBytes)}});
        }
        d.reject();
        refillCredit(n);
    }

    void on_sender_close(proton::sender& s) override {
        Guard guard(*this);
        proton::link l = s;
        dropLinks(nullptr, &l);
    }
    void on_receiver_close(proton::receiver& r) override {
        Guard guard(*this);
        proton::link l = r;
        dropLinks(nullptr, &l);
    }
    void on_sender_detach(proton::sender& s) override { on_sender_close(s); }
    void on_receiver_detach(proton::receiver& r) override { on_receiver_close(r); }
    void on_connection_close(proton::connection& c) override {
        Guard guard(*this);
        dropLinks(&c, nullptr);
    }
    void on_transport_close(proton::transport& t) override {
        Guard guard(*this);
        proton::connection c = t.connection();
        dropLinks(&c, nullptr);
        peers.erase(c);
    }
    // A clean AMQP close logs nothing. A peer that just went away is worth an info line; one
    // that sent something other than AMQP 1.0 is a warning, with its address to find it by.
    void on_transport_error(proton::transport& t) override {
        proton::error_condition e = t.error();
        auto failure = detail::classifyTransportFailure(e.name(), e.description());
        std::string peer = detail::peerAddress(t);
        std::string container;
        if (proton::connection c = t.connection())
            container = c.container_id();
        if (peer.empty())
            peer = "-";
        if (container.empty())
            container = "-";
        bool authenticated = false;
        {
            std::lock_guard lock(mutex);
            authenticated = t.connection() && peers.count(t.connection());
            // A TLS peer that failed before it was authenticated: no certificate, one from
            // another CA, no TLS at all, or a failed SASL exchange. (A port probe that sends
            // nothing stays an info line below.)
            if (tlsMode && !authenticated &&
                (failure.protocolError ||
                 failure.reason != "the peer left before sending anything")) {
                ++security.refusedConnections;
                logRefusal(peer, "", failure.reason);
                return;
            }
        }
        if (failure.protocolError)
            PCLOUD_LOG(Warning, "Hub dropped a peer that broke the AMQP 1.0 protocol",
                       {{"peer", peer}, {"container", container}, {"error", failure.reason}});
        else
            PCLOUD_LOG(Info, "Hub peer disconnected without closing its connection",
                       {{"peer", peer}, {"container", container}, {"reason", failure.reason}});
    }
    void on_error(const proton::error_condition& e) override {
        PCLOUD_LOG(Warning, "Hub protocol error", {{"error", e.what()}});
    }
};

Hub::Hub(HubOptions options) : options_(std::move(options)) {}

Hub::~Hub() {
    stop();
}

Status Hub::start(const std::string& url) {
    if (impl_)
        return makeError("the hub is already running on port " + std::to_string(boundPort()));
    detail::ParsedUrl parsed;
    std::string err;
    if (!detail::parseUrl(url, parsed, err))
        return makeError(err);
    auto impl = std::make_unique<Impl>(options_);
    const auto& tls = options_.tls;
    if (parsed.tls) {
        if (tls.caFile.empty() || tls.certFile.empty() || tls.keyFile.empty())
            return makeError("cannot listen on " + url +
                             ": amqps:// needs the CA, the hub's certificate and its key");
        for (const auto& f : {tls.caFile, tls.certFile, tls.keyFile})
            if (::access(f.c_str(), R_OK) != 0)
                return makeError(std::string("cannot read it: ") + std::strerror(errno), f);
        if (!tls.denyListFile.empty()) {
            auto denied = pki::loadDenyList(tls.denyListFile);
            if (!denied)
                return denied.error();
            impl->denied = std::move(*denied);
        }
        try {
            impl->sslOptions.emplace(proton::ssl_certificate(tls.certFile, tls.keyFile), tls.caFile,
                                     tls.caFile, proton::ssl::VERIFY_PEER);
        } catch (const std::exception& e) {
            return makeError("cannot listen on " + url + ": the TLS setup failed: " + e.what() +
                             " (cert " + tls.certFile + ", key " + tls.keyFile + ", CA " +
                             tls.caFile + ")");
        }
        impl->tlsMode = true;
    } else if (!options_.allowInsecure) {
        return makeError("refusing plain AMQP on " + url +
                         ": listen on amqps:// with certificates (docs/security.md), or allow "
                         "unauthenticated peers explicitly (cped --insecure-listen)");
    }
    auto opened = impl->opened.get_future();
    impl->container = std::make_unique<proton::container>(*impl, options_.containerId);
    try {
        impl->container->listen(parsed.hostPort(), *impl);
    } catch (const std::exception& e) {
        return makeError("cannot listen on " + url + ": " + e.what());
    }
    impl->work = std::make_unique<proton::work_queue>(*impl->container);
    Impl* raw = impl.get();
    impl->thread = std::thread([raw] {
        try {
            raw->container->run();
        } catch (const std::exception& e) {
            PCLOUD_LOG(Error, "Hub thread stopped on an exception", {{"error", e.what()}});
        }
    });
    std::string error = opened.get();
    impl_ = std::move(impl);
    if (!error.empty()) {
        stop();
        return makeError("cannot listen on " + url + ": " + error +
                         " (is another process bound to that port?)");
    }
    PCLOUD_LOG(Notice, "Hub listening",
               {{"url", url},
                {"port", std::to_string(boundPort())},
                {"tls", parsed.tls ? "mutual, SASL EXTERNAL" : "off"}});
    if (!parsed.tls)
        PCLOUD_LOG(Warning,
                   "Hub listens on plain AMQP: every local user and guest relay may send and "
                   "receive on any address (insecure listen)",
                   {{"url", url}});
    return Status::success();
}

void Hub::stop() {
    if (!impl_)
        return;
    // Stop from the hub's own thread. (The hub schedules no container timers, which would
    // hold container::run() until they fire; see Client::close().)
    Impl* raw = impl_.get();
    if (!impl_->work || !impl_->work->add([raw] { raw->container->stop(); }))
        impl_->container->stop();
    if (impl_->thread.joinable())
        impl_->thread.join();
    impl_->work.reset();
    impl_.reset();
}

bool Hub::running() const {
    return impl_ != nullptr;
}

int Hub::boundPort() const {
    if (!impl_)
        return 0;
    std::lock_guard lock(impl_->mutex);
    return impl_->port;
}

std::map<std::string, AddressCounters> Hub::counters() const {
    std::map<std::string, AddressCounters> out;
    if (!impl_)
        return out;
    std::lock_guard lock(impl_->mutex);
    for (const auto& [address, n] : impl_->nodes)
        out[address] = n.counters;
    return out;
}

SecurityCounters Hub::security() const {
    if (!impl_)
        return {};
    std::lock_guard lock(impl_->mutex);
    return impl_->security;
}

std::string Hub::securityJson() const {
    auto c = security();
    return nlohmann::json{{"refused_connections", c.refusedConnections},
                          {"denied_links", c.deniedLinks},
                          {"queue_cap_refusals", c.queueCapRefusals},
                          {"closed_for_denials", c.closedForDenials},
                          {"forged_user_ids", c.forgedUserIds}}
        .dump();
}

Status Hub::reloadDenyList() {
    if (!impl_)
        return makeError("the hub is not running");
    const std::string& path = options_.tls.denyListFile;
    if (path.empty() || !impl_->tlsMode)
        return Status::success();
    auto denied = pki::loadDenyList(path);
    if (!denied)
        return denied.error();
    Impl* raw = impl_.get();
    auto done = std::make_shared<std::promise<void>>();
    auto applied = done->get_future();
    auto apply = [raw, list = *denied, done] {
        Impl::Guard guard(*raw);
        raw->denied = list;
        raw->closeRevoked();
        done->set_value();
    };
    if (!impl_->work->add(apply))
        return makeError("the hub is stopping");
    if (applied.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
        return makeError("the hub thread did not apply the deny list within 10 s");
    PCLOUD_LOG(Notice, "Hub reloaded the deny list",
               {{"file", path}, {"revoked", std::to_string(denied->size())}});
    return Status::success();
}

std::string Hub::countersJson() const {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [address, c] : counters()) {
        j[address] = {{"topic", c.topic},
                      {"in", c.in},
                      {"out", c.out},
                      {"dropped", c.dropped},
                      {"coalesced", c.coalesced},
                      {"rejected", c.rejected},
                      {"depth", c.depth},
                      {"receivers", c.receivers},
                      {"producers", c.producers}};
    }
    return j.dump();
}

} // namespace pcloud::bus
