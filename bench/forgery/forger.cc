#include "forger.h"

#include "envelope/envelope.h"
#include "proto/agent_messages.h"

#include <nlohmann/json.hpp>

#include <proton/codec/map.hpp>
#include <proton/codec/vector.hpp>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/source_options.hpp>
#include <proton/ssl.hpp>
#include <proton/target_options.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>
#include <proton/work_queue.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace pcloud::forgery {

std::string ForgerStats::toJson() const {
    nlohmann::json j{{"total", total},
                     {"sent", sent},
                     {"accepted", accepted},
                     {"rejected", rejected},
                     {"released", released},
                     {"attaches", attaches},
                     {"refused_unauthorized", refusedUnauthorized},
                     {"refused_other", refusedOther},
                     {"lost_with_connection", lostWithConnection},
                     {"credit_on_denied", creditOnDenied},
                     {"received_on_denied", receivedOnDenied},
                     {"stolen", stolen},
                     {"tcp_attempts", tcpAttempts},
                     {"tcp_opened", tcpOpened},
                     {"nocert_attempts", noCertAttempts},
                     {"nocert_opened", noCertOpened},
                     {"reconnects", reconnects},
                     {"closed_by_hub", closedByHub},
                     {"kinds", kinds},
                     {"refusals", refusals},
                     {"seconds", seconds},
                     {"connected", connected},
                     {"last_error", lastError},
                     {"tcp_sample", tcpSample}};
    return j.dump();
}

namespace {

struct Denied {
    bool send; // true: we send to it (the hub's receiver); false: we receive from it
    std::string address;
    std::string label() const { return std::string(send ? "send " : "receive ") + address; }
};

std::int64_t wallMs() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// The performative code of the AMQP frame at `at` (0x10 open, 0x18 close), or -1.
int performative(const std::string& in, std::size_t at, std::size_t* next) {
    if (at + 8 > in.size())
        return -1;
    auto u = [&](std::size_t i) { return static_cast<unsigned char>(in[i]); };
    std::size_t size =
        (std::size_t(u(at)) << 24) | (u(at + 1) << 16) | (u(at + 2) << 8) | u(at + 3);
    std::size_t body = at + std::size_t(u(at + 4)) * 4;
    *next = at + size;
    if (size < 8 || body + 3 > in.size() || u(body) != 0 || u(body + 1) != 0x53)
        return -1;
    return u(body + 2);
}

// Whether `in` is a plain AMQP header (protocol id 0) and an open performative that is not
// followed at once by a close: a hub that let an unauthenticated peer's connection open.
// (Proton answers bytes it cannot read with an empty open and a close carrying the error:
// that is a refusal.)
bool opensPlainAmqp(const std::string& in) {
    if (in.size() < 8 || in.compare(0, 4, "AMQP") != 0 || in[4] != 0)
        return false;
    std::size_t next = 0;
    if (performative(in, 8, &next) != 0x10)
        return false;
    std::size_t after = 0;
    return performative(in, next, &after) != 0x18;
}

} // namespace

struct Forger::Impl : proton::messaging_handler, std::enable_shared_from_this<Impl> {
    explicit Impl(ForgerOptions o) : opt(std::move(o)) {
        std::string B = opt.victim, A = opt.self;
        auto upper = [](std::string s) {
            for (auto& c : s)
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return s;
        };
        for (const std::string& a : std::vector<std::string>{
                 "pcloud.agent." + B, "pcloud.agent." + A, "pcloud.reports." + B,
                 "/queue/pcloud.reports." + B, "pcloud.reports." + upper(B), "pcloud.cped",
                 "pcloud.dped." + opt.deployable, "pcloud.journal", "pcloud.events",
                 "pcloud.events.x", "pcloud.node." + opt.node, "pcloud.nodes." + opt.node})
            denied.push_back({true, a});
        if (!opt.victimUuid.empty()) {
            denied.push_back({true, "pcloud.reports." + opt.victimUuid});
            denied.push_back({true, "pcloud.agent." + opt.victimUuid});
        }
        for (const std::string& a : std::vector<std::string>{
                 "pcloud.agent." + B, "pcloud.reports." + A, "pcloud.reports." + B, "pcloud.cped",
                 "pcloud.dped." + opt.deployable, "pcloud.journal", "pcloud.events",
                 "pcloud.reply.1", "pcloud.node." + opt.node, "pcloud.nodes." + opt.node})
            denied.push_back({false, a});
        // Forged replies to guessed reply queues: agents may not answer requests at all
        // (and the hub's reply queue names end in 128 random bits).
        for (int i = 1; i <= opt.replyQueues; ++i)
            denied.push_back({true, "pcloud.reply." + std::to_string(i)});
        if (!opt.wrongSignerKey.empty()) {
            auto s = envelope::Signer::load(opt.wrongSignerKey, opt.wrongSignerCert);
            if (s)
                signer = std::make_shared<envelope::Signer>(std::move(*s));
        }
    }

    ForgerOptions opt;
    std::vector<Denied> denied;
    std::shared_ptr<envelope::Signer> signer;
    std::unique_ptr<proton::container> container;
    std::thread thread, tcpThread;
    std::atomic<bool> stopping{false};
    std::chrono::steady_clock::time_point started;

    mutable std::mutex mu;
    ForgerStats st;

    // container thread only
    proton::connection main;
    std::map<proton::sender, std::string> allowed; // sender -> address
    std::map<proton::sender, Denied> deniedSenders;
    std::map<proton::receiver, Denied> deniedReceivers;
    std::map<proton::connection, bool> noCert;
    std::size_t nextDenied = 0;
    std::uint64_t seq = 0;
    std::string lastReplay;

    bool budgetLeft() {
        std::lock_guard lock(mu);
        return !stopping && (opt.total == 0 || st.total < opt.total);
    }
    void count(const std::string& kind, std::uint64_t ForgerStats::*field) {
        std::lock_guard lock(mu);
        ++(st.*field);
        ++st.total;
        ++st.kinds[kind];
    }

    proton::connection_options tlsOptions(bool withCert) {
        proton::connection_options co;
        if (withCert)
            co.ssl_client_options(
                proton::ssl_client_options(proton::ssl_certificate(opt.certFile, opt.keyFile),
                                           opt.caFile, proton::ssl::VERIFY_PEER));
        else
            co.ssl_client_options(proton::ssl_client_options(opt.caFile, proton::ssl::VERIFY_PEER));
        co.sasl_enabled(true);
        co.sasl_allowed_mechs("EXTERNAL");
        co.idle_timeout(proton::duration(10'000));
        return co;
    }
    std::string url() const { return opt.host + ":" + std::to_string(opt.port); }

    // A command for `target`, unsigned or signed by the wrong identity.
    std::string forgedCommand(const std::string& target) {
        proto::Command c;
        c.type = seq % 2 ? proto::CommandType::Stop : proto::CommandType::Restart;
        c.unit = "web";
        c.id = opt.marker + "-cmd-" + std::to_string(seq);
        std::string body = proto::encodeCommand(c);
        if (!signer || seq % 3 == 0)
            return body;
        envelope::Fields f;
        f.target = "agent:" + target;
        f.action = proto::toString(c.type);
        f.msgtime = wallMs();
        auto signed_ = signer->sign(f, body);
        return signed_ ? *signed_ : body;
    }

    // The next forged message for pcloud.reports.SELF, and its kind.
    proton::message nextReport(std::string& kind) {
        ++seq;
        proton::message m;
        const std::string id = opt.marker + "-" + std::to_string(seq);
        if (opt.oversizedEvery && seq % opt.oversizedEvery == 0) {
            kind = "oversized-string";
            m.body(std::string(1536 * 1024, 'x'));
            return m;
        }
        if (opt.oversizedEvery && seq % opt.oversizedEvery == opt.oversizedEvery / 2) {
            kind = "oversized-list";
            m.body(std::vector<std::string>(24, std::string(64 * 1024, 'y')));
            return m;
        }
        switch (seq % 12) {
        case 0: {
            proto::Hello h;
            h.assembly = opt.victim;
            h.boot_id = id;
            h.backend = "process";
            h.agent_version = opt.marker;
            h.sent_at = wallMs();
            proto::UnitState u;
            u.unit = "web";
            u.active_state = "active";
            u.sub_state = "running";
            u.main_pid = 1;
            h.units.push_back(u);
            kind = "hello-for-victim";
            lastReplay = proto::encodeHello(h);
            m.body(lastReplay);
            break;
        }
        case 1: {
            proto::Hello h;
            h.assembly = opt.self;
            h.boot_id = id;
            h.backend = "process";
            h.agent_version = opt.marker;
            h.sent_at = wallMs();
            kind = "hello-for-self-new-boot";
            m.body(proto::encodeHello(h));
            break;
        }
        case 2: {
            proto::Heartbeat hb;
            hb.seq = seq;
            hb.boot_id = id;
            hb.uptime = 1;
            hb.sent_at = wallMs();
            kind = "heartbeat";
            m.body(proto::encodeHeartbeat(hb));
            break;
        }
        case 3: {
            proto::UnitState u;
            u.unit = "web";
            u.active_state = "failed";
            u.sub_state = "failed";
            u.result = "signal";
            u.exit_code = 137;
            u.changed_at = wallMs();
            kind = "service-failed";
            m.body(proto::encodeService(u));
            break;
        }
        case 4: {
            proto::Reply r;
            r.id = std::to_string(seq % 64); // a guess at dped's command ids
            r.ok = seq % 2;
            if (!r.ok)
                r.error = proto::ErrorInfo{"job-failed", opt.marker};
            kind = "reply-guessed-id";
            m.body(proto::encodeReply(r));
            break;
        }
        case 5: {
            std::string g(64 + seq % 200, '\0');
            for (std::size_t i = 0; i < g.size(); ++i)
                g[i] = static_cast<char>((seq * 131 + i * 7) & 0xff);
            kind = "garbage";
            m.body(proton::binary(g.begin(), g.end()));
            break;
        }
        case 6:
            kind = "wrong-version-or-type";
            m.body(std::string(
                seq % 2 ? R"({"v":99,"type":"hello","assembly":")" + opt.victim + R"("})"
                        : R"({"v":1,"type":"command","command":"stop","id":")" + id + R"("})"));
            break;
        case 7:
            kind = "replay";
            m.body(lastReplay.empty() ? std::string("{}") : lastReplay);
            break;
        case 8:
            kind = "map-body";
            m.body(std::map<std::string, std::string>{
                {"v", "1"}, {"type", "hello"}, {"assembly", opt.victim}, {"boot_id", id}});
            break;
        case 9:
            kind = "truncated-json";
            m.body(std::string(R"({"v":1,"type":"hello","assembly":")") + opt.victim);
            break;
        case 10:
            kind = "command-on-report-address";
            m.body(forgedCommand(opt.victim));
            break;
        default:
            kind = "empty";
            m.body(std::string());
            break;
        }
        m.properties().put("coalesce-key", seq % 5 == 0 ? std::string("hb") : id);
        return m;
    }
    void openDenied(proton::connection& c) {
        // Not on a connection the hub is closing (it closes one after 100 refusals).
        if (!budgetLeft() || denied.empty() || c.closed() || c.error())
            return;
        const Denied d = denied[nextDenied++ % denied.size()];
        {
            std::lock_guard lock(mu);
            ++st.attaches;
            ++st.total;
            ++st.kinds[d.send ? "attach-send-denied" : "attach-receive-denied"];
        }
        if (d.send) {
            auto s = c.open_sender(d.address);
            deniedSenders[s] = d;
        } else {
            auto r = c.open_receiver(d.address, proton::receiver_options().credit_window(10));
            deniedReceivers[r] = d;
        }
    }

    void openAll(proton::connection& c) {
        allowed.clear();
        deniedSenders.clear();
        deniedReceivers.clear();
        allowed[c.open_sender("pcloud.reports." + opt.self)] = "pcloud.reports." + opt.self;
        c.open_receiver("pcloud.agent." + opt.self, proton::receiver_options().credit_window(100));
        for (int i = 0; i < opt.deniedInFlight; ++i)
            openDenied(c);
    }

    void finishIfDone() {
        if (!budgetLeft())
            stopNow();
    }
    void stopNow() {
        stopping = true;
        if (container)
            container->stop();
    }

    // ---- proton callbacks (container thread) ----
    void on_container_start(proton::container& c) override {
        main = c.connect(url(), tlsOptions(true));
        if (opt.unauthenticatedPeers)
            connectNoCert(c);
    }
    void connectNoCert(proton::container& c) {
        if (!budgetLeft())
            return;
        count("tls-without-certificate", &ForgerStats::noCertAttempts);
        auto conn = c.connect(url(), tlsOptions(false));
        noCert[conn] = true;
    }
    void on_connection_open(proton::connection& c) override {
        if (noCert.count(c)) {
            std::lock_guard lock(mu);
            ++st.noCertOpened;
            c.close();
            return;
        }
        {
            std::lock_guard lock(mu);
            st.connected = true;
        }
        openAll(c);
    }
    void on_transport_close(proton::transport& t) override {
        proton::connection c = t.connection();
        if (noCert.erase(c)) {
            if (!stopping)
                connectNoCert(c.container());
            return;
        }
        if (stopping)
            return;
        {
            std::lock_guard lock(mu);
            st.connected = false;
            ++st.reconnects;
            st.lostWithConnection += deniedSenders.size() + deniedReceivers.size();
            if (t.error())
                st.lastError = t.error().what();
            if (c.error().name() == "amqp:unauthorized-access" ||
                t.error().name() == "amqp:unauthorized-access")
                ++st.closedByHub;
        }
        deniedSenders.clear();
        deniedReceivers.clear();
        main = c.container().connect(url(), tlsOptions(true));
    }
    void on_transport_error(proton::transport& t) override {
        if (noCert.count(t.connection()))
            return;
        std::lock_guard lock(mu);
        st.lastError = t.error().what();
    }
    void on_connection_error(proton::connection& c) override {
        if (noCert.count(c))
            return;
        std::lock_guard lock(mu);
        st.lastError = c.error().what();
    }

    void on_sendable(proton::sender& s) override {
        if (deniedSenders.count(s)) {
            std::lock_guard lock(mu);
            ++st.creditOnDenied; // the hub gave credit where it must refuse the link
            return;
        }
        auto it = allowed.find(s);
        if (it == allowed.end())
            return;
        while (s.credit() > 0 && budgetLeft()) {
            std::string kind;
            proton::message m = nextReport(kind);
            s.send(m);
            std::lock_guard lock(mu);
            ++st.sent;
            ++st.total;
            ++st.kinds[kind];
        }
        finishIfDone();
    }
    void on_tracker_accept(proton::tracker&) override {
        std::lock_guard lock(mu);
        ++st.accepted;
    }
    void on_tracker_reject(proton::tracker&) override {
        std::lock_guard lock(mu);
        ++st.rejected;
    }
    void on_tracker_release(proton::tracker&) override {
        std::lock_guard lock(mu);
        ++st.released;
    }

    void refused(const Denied& d, const proton::error_condition& e) {
        std::lock_guard lock(mu);
        if (e.name() == "amqp:unauthorized-access")
            ++st.refusedUnauthorized;
        else
            ++st.refusedOther;
        ++st.refusals[d.label() + (e.name() == "amqp:unauthorized-access" ? "" : " " + e.name())];
    }
    void on_sender_close(proton::sender& s) override {
        auto it = deniedSenders.find(s);
        if (it == deniedSenders.end())
            return;
        refused(it->second, s.error());
        deniedSenders.erase(it);
        auto c = s.connection();
        openDenied(c);
        finishIfDone();
    }
    void on_receiver_close(proton::receiver& r) override {
        auto it = deniedReceivers.find(r);
        if (it == deniedReceivers.end())
            return;
        refused(it->second, r.error());
        deniedReceivers.erase(it);
        auto c = r.connection();
        openDenied(c);
        finishIfDone();
    }
    void on_sender_error(proton::sender&) override {}     // counted in on_sender_close
    void on_receiver_error(proton::receiver&) override {} // counted in on_receiver_close

    void on_message(proton::delivery& d, proton::message&) override {
        std::lock_guard lock(mu);
        if (deniedReceivers.count(d.receiver()))
            ++st.receivedOnDenied;
        else
            ++st.stolen;
    }

    // ---- the unauthenticated TCP peer (its own thread) ----
    void tcpLoop() {
        const std::string amqpHeader("AMQP\0\1\0\0", 8);
        std::uint64_t n = 0;
        while (budgetLeft()) {
            {
                // At most 5% of the flood: a refused TCP connect is the cheapest message
                // there is, and must not make up the count.
                std::unique_lock lock(mu);
                if (st.tcpAttempts * 20 > st.total) {
                    lock.unlock();
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                    continue;
                }
            }
            int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                return;
            sockaddr_in sa{};
            sa.sin_family = AF_INET;
            sa.sin_port = htons(static_cast<std::uint16_t>(opt.port));
            ::inet_pton(AF_INET, opt.host.c_str(), &sa.sin_addr);
            if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
                ::close(fd);
                continue;
            }
            ++n;
            std::string out = n % 2 ? amqpHeader : std::string(512, static_cast<char>(n & 0xff));
            (void)!::write(fd, out.data(), out.size());
            // Read what the hub says until it closes (or 2 s): an AMQP open frame from it
            // would mean an unauthenticated peer got a connection.
            std::string in;
            char buf[4096];
            pollfd p{fd, POLLIN, 0};
            while (::poll(&p, 1, 2000) > 0) {
                auto r = ::read(fd, buf, sizeof buf);
                if (r <= 0)
                    break;
                in.append(buf, static_cast<std::size_t>(r));
                if (in.size() > 65536)
                    break;
            }
            ::close(fd);
            std::lock_guard lock(mu);
            ++st.tcpAttempts;
            ++st.total;
            ++st.kinds[n % 2 ? "tcp-plain-amqp-header" : "tcp-garbage"];
            if (opensPlainAmqp(in))
                ++st.tcpOpened;
            if (st.tcpSample.empty() && !in.empty()) {
                static const char* hex = "0123456789abcdef";
                for (std::size_t i = 0; i < std::min<std::size_t>(in.size(), 96); ++i) {
                    auto c = static_cast<unsigned char>(in[i]);
                    st.tcpSample += std::isprint(c)
                                        ? std::string(1, static_cast<char>(c))
                                        : std::string("\\x") + hex[c >> 4] + hex[c & 15];
                }
            }
        }
    }
};

Forger::Forger(ForgerOptions options) : impl_(std::make_shared<Impl>(std::move(options))) {}
Forger::~Forger() {
    stop();
}

void Forger::start() {
    auto impl = impl_;
    impl->started = std::chrono::steady_clock::now();
    impl->container = std::make_unique<proton::container>(*impl, "pcloud-forger");
    impl->thread = std::thread([impl] {
        try {
            impl->container->run();
        } catch (const std::exception& e) {
            std::lock_guard lock(impl->mu);
            impl->st.lastError = e.what();
        }
        impl->stopping = true;
        std::lock_guard lock(impl->mu);
        impl->st.seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - impl->started).count();
    });
    if (impl->opt.unauthenticatedPeers)
        impl->tcpThread = std::thread([impl] { impl->tcpLoop(); });
}

void Forger::stop() {
    auto& impl = *impl_;
    impl.stopping = true;
    if (impl.container)
        impl.container->stop();
    if (impl.thread.joinable())
        impl.thread.join();
    if (impl.tcpThread.joinable())
        impl.tcpThread.join();
}

bool Forger::done() const {
    return !impl_->budgetLeft();
}

ForgerStats Forger::stats() const {
    std::lock_guard lock(impl_->mu);
    ForgerStats s = impl_->st;
    if (s.seconds == 0)
        s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - impl_->started)
                        .count();
    return s;
}

} // namespace pcloud::forgery
