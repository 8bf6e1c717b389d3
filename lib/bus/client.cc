#include "bus/client.h"

#include "bus/address.h"
#include "bus/proton_util.h"
#include "bus/sender.h"
#include "common/log.h"
#include "pki/pki.h"

#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/duration.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/session.hpp>
#include <proton/source.hpp>
#include <proton/source_options.hpp>
#include <proton/ssl.hpp>
#include <proton/target.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>
#include <proton/work_queue.hpp>

#include <algorithm>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unistd.h>

namespace pcloud::bus {

namespace {

struct Outgoing {
    proton::message message;
    std::string requestId; // non-empty: reply_to is filled in when written
    bool reply = false;    // addressed to someone's reply address
};

struct Subscription {
    std::string logical;
    std::string wire;
    MessageCallback callback;
    RequestHandler handler; // set for serve()
    bool ready = false;     // the peer has opened the receiver link
};

struct PendingRequest {
    ReplyCallback callback;
    std::string wire;
    std::string server; // who may answer (serverOf), with checkReplySenders
    bool written = false;
    std::chrono::steady_clock::time_point deadline;
    std::string timeoutMessage;
};

proton::duration toDuration(std::chrono::milliseconds ms) {
    return proton::duration(static_cast<proton::duration::numeric_type>(ms.count()));
}

constexpr const char* kClosedMessage = "the bus client was closed";
// How long close() lets the peer answer the AMQP close before cutting the connection.
constexpr std::chrono::milliseconds kCloseGrace{1000};

// Runs work on the client's thread at a later time. Proton 0.37's container::schedule() cannot
// be cancelled, and container::run() does not return after stop() until every task scheduled
// on it has fired: one request with a 30 s timeout, even answered, kept close() waiting 30 s,
// and a pending reconnect up to reconnectMax. So the waiting happens here, on a small thread of
// the client's own that stop() simply drops, and the container only ever gets due work, with no
// delay, which leaves no timer behind.
class Alarms {
public:
    using Clock = std::chrono::steady_clock;
    using Work = std::function<void()>;

    ~Alarms() { stop(); }

    // `dispatch` hands due work to the client's thread; it is called on the alarm thread.
    void start(std::function<void(Work)> dispatch) {
        dispatch_ = std::move(dispatch);
        thread_ = std::thread([this] { loop(); });
    }
    // Ignored once stopped.
    void at(Clock::time_point when, Work work) {
        {
            std::lock_guard lock(mutex_);
            if (stopped_)
                return;
            due_.emplace(when, std::move(work));
        }
        wake_.notify_one();
    }
    // Drops what is still waiting; once it returns, nothing more is dispatched.
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopped_ = true;
            due_.clear();
        }
        wake_.notify_one();
        if (thread_.joinable())
            thread_.join();
    }

private:
    void loop() {
        std::unique_lock lock(mutex_);
        while (!stopped_) {
            if (due_.empty()) {
                wake_.wait(lock);
                continue;
            }
            auto first = due_.begin();
            if (const Clock::time_point when = first->first; when > Clock::now()) {
                wake_.wait_until(lock, when); // a copy: the entry may be gone when it wakes
                continue;
            }
            Work work = std::move(first->second);
            due_.erase(first);
            lock.unlock();
            dispatch_(std::move(work));
            lock.lock();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::multimap<Clock::time_point, Work> due_;
    std::function<void(Work)> dispatch_;
    bool stopped_ = false;
    std::thread thread_;
};

} // namespace

struct Client::Impl : proton::messaging_handler {
    ClientOptions options;
    detail::ParsedUrl url;
    std::string userId; // set on every message sent (ClientOptions::userId)
    std::string queuePrefix;
    std::string topicPrefix;

    // ---- shared with user threads, under mutex ----
    mutable std::mutex mutex;
    mutable std::condition_variable changed;
    std::map<std::string, std::deque<Outgoing>> outgoing; // by wire address, in order
    std::size_t pending = 0;
    std::map<std::uint64_t, Subscription> subs;
    std::map<std::string, PendingRequest> requests;
    bool isConnected = false;
    bool replyReady = false;
    bool closing = false;  // close() has begun: no new work is accepted
    bool finished = false; // the client's thread has left container::run()
    Stats stats;
    std::uint64_t nextId = 0;
    std::string idPrefix;

    // ---- client thread only ----
    // The open connection's work queue, under mutex: the way user threads hand work to the
    // client thread. (Proton 0.37's container-level work_queue does not wake the proactor
    // until its next timer, which cost seconds per call.) Null while disconnected: then
    // everything waits in outgoing/subs and is picked up by on_connection_open.
    proton::work_queue* connWork = nullptr;
    std::unique_ptr<proton::container> container;
    std::thread thread;
    Alarms alarms; // every delayed task (request deadlines, reconnects) goes through here
    std::atomic<std::thread::id> threadId{};
    proton::connection conn;
    bool open = false;                             // conn is usable
    std::map<std::string, proton::sender> senders; // by wire address
    std::map<std::uint64_t, proton::receiver> subLinks;
    std::map<proton::receiver, std::uint64_t> linkToSub;
    proton::receiver replyReceiver;
    std::string replyAddress;
    // RabbitMQ 3.10 refuses dynamic sources; then the reply address is a private topic
    // subscription (an auto-deleted queue there). Remembered across reconnects.
    bool dynamicRefused = false;
    std::string replyFallback;
    std::chrono::milliseconds backoff{0};

    bool closed() const {
        std::lock_guard lock(mutex);
        return closing;
    }

    std::string wireAddress(const std::string& logical) const {
        return (matchesTopic(logical, options.topics) ? topicPrefix : queuePrefix) + logical;
    }

    void post(std::function<void()> fn) {
        std::lock_guard lock(mutex);
        if (connWork)
            connWork->add(std::move(fn));
    }

    // Request deadlines: one sweep is armed for the earliest deadline (under mutex, from any
    // thread); it fails what has expired (client thread) and arms the next one.
    std::chrono::steady_clock::time_point sweepAt = std::chrono::steady_clock::time_point::max();
    // mutex held
    void armSweepLocked(std::chrono::steady_clock::time_point deadline) {
        if (deadline >= sweepAt)
            return;
        sweepAt = deadline;
        alarms.at(deadline, [this] { sweep(); });
    }
    void sweep() {
        auto now = std::chrono::steady_clock::now();
        std::vector<std::pair<ReplyCallback, std::string>> expired;
        {
            std::lock_guard lock(mutex);
            sweepAt = std::chrono::steady_clock::time_point::max();
            auto next = std::chrono::steady_clock::time_point::max();
            for (auto it = requests.begin(); it != requests.end();) {
                if (it->second.deadline <= now) {
                    expired.emplace_back(std::move(it->second.callback), it->second.timeoutMessage);
                    dropQueuedRequest(it->second.wire, it->first);
                    it = requests.erase(it);
                } else {
                    next = std::min(next, it->second.deadline);
                    ++it;
                }
            }
            if (next != std::chrono::steady_clock::time_point::max())
                armSweepLocked(next);
        }
        changed.notify_all();
        // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
        for (auto& e : expired)
            invoke([&] { e.first(makeError(e.second)); });
    }
    // Fails every waiting request with `text`, written or not (client thread, or the closing
    // thread once the client's thread has ended).
    void failAll(const std::string& text) {
        std::vector<ReplyCallback> failed;
        {
            std::lock_guard lock(mutex);
            for (auto& [id, r] : requests) {
                failed.push_back(std::move(r.callback));
                dropQueuedRequest(r.wire, id);
            }
            requests.clear();
        }
        changed.notify_all();
        for (auto& cb : failed)
            invoke([&] { cb(makeError(text)); });
    }
    // mutex held: takes back a request not yet written, nobody waits for its reply any more.
    void dropQueuedRequest(const std::string& wire, const std::string& id) {
        auto qit = outgoing.find(wire);
        if (qit == outgoing.end())
            return;
        auto& q = qit->second;
        for (auto o = q.begin(); o != q.end(); ++o) {
            if (o->requestId == id) {
                q.erase(o);
                --pending;
                break;
            }
        }
        if (q.empty())
            outgoing.erase(qit);
    }

    // ---- connection management (client thread) ----
    void connectNow() {
        {
            std::lock_guard lock(mutex);
            if (closing)
                return;
        }
        proton::connection_options co;
        co.idle_timeout(toDuration(options.idleTimeout));
        if (url.tls) {
            try {
                co.ssl_client_options(proton::ssl_client_options(
                    proton::ssl_certificate(options.certFile, options.keyFile), options.caFile,
                    proton::ssl::VERIFY_PEER));
            } catch (const std::exception& e) {
                PCLOUD_LOG(Error, "Bus TLS setup failed",
                           {{"url", url.hostPort()},
                            {"cert", options.certFile},
                            {"key", options.keyFile},
                            {"ca", options.caFile},
                            {"error", e.what()}});
                scheduleReconnect();
                return;
            }
            co.sasl_enabled(true);
            if (url.user.empty())
                co.sasl_allowed_mechs("EXTERNAL");
        }
        if (!url.user.empty()) {
            co.user(url.user).password(url.password).sasl_allowed_mechs("PLAIN");
            // PLAIN sends the password in clear: allowed only on loopback (or inside TLS).
            co.sasl_allow_insecure_mechs(url.loopback() || url.tls);
        }
        try {
            container->connect(url.hostPort(), co);
        } catch (const std::exception& e) {
            PCLOUD_LOG(Warning, "Bus connect failed",
                       {{"url", url.hostPort()}, {"error", e.what()}});
            scheduleReconnect();
        }
    }

    void scheduleReconnect() {
        {
            std::lock_guard lock(mutex);
            if (closing)
                return;
        }
        backoff = backoff.count() == 0 ? options.reconnectMin
                                       : std::min(backoff * 2, options.reconnectMax);
        alarms.at(std::chrono::steady_clock::now() + backoff, [this] { connectNow(); });
    }

    // close(), on the client's thread: every waiting request fails now, what the peer has
    // credit for is written, and the connection is closed the AMQP way (the peer then sees a
    // normal close, not an aborted transport); lost() stops the container once it is closed.
    void shutdown() {
        failAll(kClosedMessage);
        if (open) {
            flushAll();
            conn.close();
        } else {
            container->stop();
        }
    }

    void openSubscription(std::uint64_t id, const std::string& wire) {
        if (!open || subLinks.count(id))
            return;
        proton::receiver r = conn.open_receiver(
            wire,
            proton::receiver_options().credit_window(static_cast<int>(options.receiverCredit)));
        subLinks[id] = r;
        linkToSub[r] = id;
    }

    void on_connection_open(proton::connection& c) override {
        conn = c;
        open = true;
        backoff = std::chrono::milliseconds(0);
        openReplyReceiver();
        std::vector<std::pair<std::uint64_t, std::string>> toOpen;
        {
            std::lock_guard lock(mutex);
            connWork = &c.work_queue();
            isConnected = true;
            ++stats.connects;
            for (const auto& [id, s] : subs)
                toOpen.emplace_back(id, s.wire);
        }
        for (const auto& [id, wire] : toOpen)
            openSubscription(id, wire);
        PCLOUD_LOG(Info, "Bus connected", {{"url", url.hostPort()}});
        if (options.onConnectionChange)
            invoke([&] { options.onConnectionChange(true); });
        flushAll();
    }

    void openReplyReceiver() {
        auto ro =
            proton::receiver_options().credit_window(static_cast<int>(options.receiverCredit));
        if (!dynamicRefused) {
            replyReceiver =
                conn.open_receiver("", ro.source(proton::source_options().dynamic(true)));
        } else {
            replyFallback = topicPrefix + std::string(kDynamicPrefix) + idPrefix +
                            std::to_string(++fallbackCounter);
            replyReceiver = conn.open_receiver(replyFallback, ro);
        }
    }
    std::uint64_t fallbackCounter = 0;

    void on_receiver_open(proton::receiver& r) override {
        if (auto it = linkToSub.find(r); it != linkToSub.end()) {
            {
                std::lock_guard lock(mutex);
                if (auto sit = subs.find(it->second); sit != subs.end())
                    sit->second.ready = true;
            }
            changed.notify_all();
            return;
        }
        if (r != replyReceiver)
            return;
        replyAddress = dynamicRefused ? replyFallback : r.source().address();
        {
            std::lock_guard lock(mutex);
            replyReady = !replyAddress.empty();
        }
        changed.notify_all();
        if (replyAddress.empty())
            PCLOUD_LOG(Warning, "Bus peer gave no dynamic reply address; requests will time out",
                       {{"url", url.hostPort()}});
        flushAll();
    }

    void on_transport_error(proton::transport& t) override {
        PCLOUD_LOG(Info, "Bus connection failed",
                   {{"url", url.hostPort()}, {"error", t.error().what()}});
    }

    void on_transport_close(proton::transport&) override { lost(); }

    void on_connection_error(proton::connection& c) override {
        PCLOUD_LOG(Warning, "Bus peer closed the connection",
                   {{"url", url.hostPort()}, {"error", c.error().what()}});
    }
    void on_receiver_error(proton::receiver& r) override {
        if (r == replyReceiver && !dynamicRefused && open && !topicPrefix.empty()) {
            dynamicRefused = true;
            PCLOUD_LOG(Info, "Bus peer refused a dynamic reply address; using a private topic",
                       {{"url", url.hostPort()}, {"error", r.error().what()}});
            openReplyReceiver();
            return;
        }
        PCLOUD_LOG(Warning, "Bus peer refused a receiver",
                   {{"address", r.source().address()}, {"error", r.error().what()}});
        countRefusedLink(r.error());
    }
    void on_sender_error(proton::sender& s) override {
        PCLOUD_LOG(Warning, "Bus peer refused a sender",
                   {{"address", s.target().address()}, {"error", s.error().what()}});
        countRefusedLink(s.error());
    }
    void countRefusedLink(const proton::error_condition& e) {
        std::lock_guard lock(mutex);
        ++stats.linksRefused;
        stats.lastLinkError = e.name() + ": " + e.description();
    }
    // Errors the handlers above do not cover: logged, never thrown (the default throws,
    // which would end the client's thread).
    void on_error(const proton::error_condition& e) override {
        PCLOUD_LOG(Warning, "Bus protocol error", {{"url", url.hostPort()}, {"error", e.what()}});
    }
    void on_session_error(proton::session& s) override {
        if (replyAddress.empty() && !dynamicRefused && !topicPrefix.empty()) {
            // RabbitMQ ends the whole session when it refuses a dynamic source: start over
            // with a private-topic reply address.
            dynamicRefused = true;
            PCLOUD_LOG(
                Info, "Bus peer refused a dynamic reply address; reconnecting with a private topic",
                {{"url", url.hostPort()}, {"error", s.error().what()}});
            if (open)
                conn.close();
            return;
        }
        PCLOUD_LOG(Warning, "Bus peer closed a session",
                   {{"url", url.hostPort()}, {"error", s.error().what()}});
        // RabbitMQ refuses a link its permissions forbid by ending the whole session
        // (amqp:unauthorized-access): count it where a refused link shows.
        if (!s.error().name().empty())
            countRefusedLink(s.error());
    }

    void on_sender_close(proton::sender& s) override {
        // The peer closed it (e.g. a reply address that went away): forget it; the next send
        // to that address opens a new one.
        for (auto it = senders.begin(); it != senders.end(); ++it) {
            if (it->second == s) {
                senders.erase(it);
                break;
            }
        }
    }

    void lost() {
        bool wasOpen = open;
        bool stopping;
        {
            std::lock_guard lock(mutex);
            stopping = closing;
        }
        open = false;
        conn = proton::connection();
        senders.clear();
        subLinks.clear();
        linkToSub.clear();
        replyReceiver = proton::receiver();
        replyAddress.clear();
        std::vector<ReplyCallback> failed;
        {
            std::lock_guard lock(mutex);
            connWork = nullptr;
            isConnected = false;
            replyReady = false;
            for (auto& [id, sub] : subs)
                sub.ready = false;
            // Replies to requests already written would go to the old reply address.
            for (auto it = requests.begin(); it != requests.end();) {
                if (it->second.written && !stopping) {
                    failed.push_back(std::move(it->second.callback));
                    it = requests.erase(it);
                } else {
                    ++it;
                }
            }
        }
        changed.notify_all();
        for (auto& cb : failed)
            invoke([&] {
                cb(makeError("connection to " + url.hostPort() + " lost before the reply came"));
            });
        if (stopping) {
            failAll(kClosedMessage);
            container->stop();
            return;
        }
        if (wasOpen) {
            PCLOUD_LOG(Notice, "Bus connection lost; reconnecting", {{"url", url.hostPort()}});
            if (options.onConnectionChange)
                invoke([&] { options.onConnectionChange(false); });
        }
        scheduleReconnect();
    }

    // ---- sending (client thread) ----
    void flushAll() {
        std::vector<std::string> addresses;
        {
            std::lock_guard lock(mutex);
            for (const auto& [a, q] : outgoing)
                addresses.push_back(a);
        }
        for (const auto& a : addresses)
            flush(a);
    }

    void flush(const std::string& wire) {
        if (!open)
            return;
        std::unique_lock lock(mutex);
        auto qit = outgoing.find(wire);
        if (qit == outgoing.end())
            return;
        auto& q = qit->second;
        while (!q.empty()) {
            Outgoing& o = q.front();
            if (!o.requestId.empty()) {
                if (replyAddress.empty())
                    break;
                o.message.reply_to(replyAddress);
            }
            auto sit = senders.find(wire);
            if (sit == senders.end()) {
                if (senders.size() > 256)
                    closeIdleReplySenders();
                senders[wire] = conn.open_sender(wire);
                break; // credit comes with on_sendable
            }
            proton::sender& s = sit->second;
            if (!s.active() || s.credit() <= 0)
                break;
            if (!userId.empty())
                o.message.user(userId);
            s.send(o.message);
            ++stats.sent;
            if (!o.requestId.empty()) {
                auto rit = requests.find(o.requestId);
                if (rit != requests.end())
                    rit->second.written = true;
            }
            q.pop_front();
            --pending;
        }
        if (q.empty())
            outgoing.erase(qit);
        lock.unlock();
        changed.notify_all();
    }

    // mutex held
    void closeIdleReplySenders() {
        for (auto it = senders.begin(); it != senders.end();) {
            if (!outgoing.count(it->first) && it->first.rfind(kDynamicPrefix, 0) == 0) {
                it->second.close();
                it = senders.erase(it);
            } else {
                ++it;
            }
        }
    }

    void on_sendable(proton::sender& s) override { flush(s.target().address()); }

    void on_tracker_reject(proton::tracker& t) override {
        {
            std::lock_guard lock(mutex);
            ++stats.rejected;
        }
        PCLOUD_LOG(Warning, "Bus peer rejected a message",
                   {{"address", t.sender().target().address()}});
    }

    // ---- receiving (client thread) ----
    template <typename F> void invoke(F&& f) {
        try {
            f();
        } catch (const std::exception& e) {
            PCLOUD_LOG(Error, "Bus callback threw; message dropped", {{"error", e.what()}});
        }
    }

    // The first refused message is logged, the rest only counted (a peer can send them as
    // fast as it likes).
    void refuse(proton::delivery& d, const std::string& why, std::optional<std::size_t> size) {
        bool first = false;
        {
            std::lock_guard lock(mutex);
            first = stats.refused++ == 0;
        }
        if (first)
            PCLOUD_LOG(Warning, "Bus client refused a message (further ones are only counted)",
                       {{"address", d.receiver().source().address()},
                        {"reason", why},
                        {"bytes", size ? std::to_string(*size) : "?"},
                        {"limit", std::to_string(options.maxMessageBytes)}});
        d.reject();
    }

    void on_message(proton::delivery& d, proton::message& m) override {
        proton::receiver r = d.receiver();
        // The size cap first, on the encoded size, whatever the body type; then the decode,
        // which throws on a malformed message: that must reject this message, not end the
        // client's thread.
        auto size = detail::messageSize(m);
        if (size && *size > options.maxMessageBytes) {
            refuse(d, "oversized", size);
            return;
        }
        Message msg;
        std::string bad = detail::undecodableReason(m);
        if (bad.empty()) {
            try {
                msg = detail::fromProton(m);
            } catch (const std::exception& e) {
                bad = e.what();
            }
        }
        if (!bad.empty()) {
            refuse(d, "undecodable: " + bad, size);
            return;
        }
        if (r == replyReceiver) {
            ReplyCallback cb;
            std::string forgedFor;
            bool logForged = false;
            {
                std::lock_guard lock(mutex);
                ++stats.received;
                auto it = requests.find(msg.correlationId);
                if (it != requests.end() && !it->second.server.empty() &&
                    !senderMatches(it->second.server, msg.userId)) {
                    // Someone who learnt the reply address; the real answer may still come.
                    forgedFor = it->second.server;
                    logForged = stats.forgedReplies++ == 0;
                } else if (it != requests.end()) {
                    cb = std::move(it->second.callback);
                    requests.erase(it);
                }
            }
            if (logForged)
                PCLOUD_LOG(Warning,
                           "Bus client dropped a reply from a sender it did not ask (further "
                           "ones are only counted)",
                           {{"id", msg.correlationId},
                            {"user_id", msg.userId.empty() ? "-" : msg.userId.substr(0, 200)},
                            {"expected", forgedFor}});
            if (cb)
                invoke([&] { cb(std::move(msg)); });
            // else: a late reply to a request that timed out; nothing waits for it.
            return;
        }
        auto lit = linkToSub.find(r);
        if (lit == linkToSub.end())
            return;
        MessageCallback callback;
        RequestHandler handler;
        {
            std::lock_guard lock(mutex);
            ++stats.received;
            auto sit = subs.find(lit->second);
            if (sit == subs.end())
                return;
            msg.address = sit->second.logical;
            callback = sit->second.callback;
            handler = sit->second.handler;
        }
        if (callback)
            invoke([&] { callback(msg); });
        if (!handler)
            return;
        std::optional<std::string> reply;
        invoke([&] { reply = handler(msg); });
        if (!reply)
            return;
        if (msg.replyTo.empty()) {
            PCLOUD_LOG(Warning, "Bus request has no reply_to; reply dropped",
                       {{"address", msg.address}, {"id", msg.correlationId}});
            return;
        }
        proton::message out = detail::toProton(msg.replyTo, *reply, {});
        out.correlation_id(msg.correlationId);
        {
            std::lock_guard lock(mutex);
            outgoing[msg.replyTo].push_back(Outgoing{std::move(out), {}, true});
            ++pending;
        }
        flush(msg.replyTo);
    }
};

Client::Client() = default;

Client::~Client() {
    close();
}

Status Client::connect(const std::string& url, const std::string& addressPrefix) {
    ClientOptions o;
    o.url = url;
    o.addressPrefix = addressPrefix;
    return connect(std::move(o));
}

Status Client::connect(ClientOptions options) {
    if (impl_ && !impl_->closed())
        return makeError("the bus client is already connected to " + impl_->options.url);
    auto impl = std::make_shared<Impl>();
    std::string err;
    if (!detail::parseUrl(options.url, impl->url, err))
        return makeError(err);
    if (impl->url.tls) {
        if (options.caFile.empty() || options.certFile.empty() || options.keyFile.empty())
            return makeError(options.url +
                             " needs the CA certificate, this client's certificate and its key "
                             "(bus_ca, bus_cert, bus_key in /etc/pcloud/pcloud.conf, or the "
                             "--bus-ca, --bus-cert, --bus-key options)");
        for (const auto& f : {options.caFile, options.certFile, options.keyFile})
            if (::access(f.c_str(), R_OK) != 0)
                return makeError(std::string("cannot read it: ") + std::strerror(errno), f);
    }
    if (options.userId) {
        impl->userId = *options.userId;
    } else if (!impl->url.user.empty()) {
        impl->userId = impl->url.user;
    } else if (impl->url.tls) {
        auto cn = pki::commonName(options.certFile);
        if (!cn)
            return makeError("cannot read the identity to send as: " + cn.error().describe());
        impl->userId = *cn;
    }
    if (options.topics.empty())
        options.topics = defaultTopicPatterns();
    impl->queuePrefix = options.addressPrefix;
    impl->topicPrefix = options.topicPrefix                  ? *options.topicPrefix
                        : options.addressPrefix == "/queue/" ? std::string("/topic/")
                                                             : options.addressPrefix;
    std::random_device rd;
    impl->idPrefix = std::to_string(rd()) + "-";
    impl->options = std::move(options);
    impl->container = impl->options.containerId.empty()
                          ? std::make_unique<proton::container>(*impl)
                          : std::make_unique<proton::container>(*impl, impl->options.containerId);
    impl->container->auto_stop(false);
    Impl* raw = impl.get();
    // Due work is handed over as a zero-delay task: that wakes the proactor at once from any
    // thread, connected or not, and leaves no timer pending.
    impl->alarms.start([raw](Alarms::Work work) {
        raw->container->schedule(proton::duration(0), [work = std::move(work)] { work(); });
    });
    // The first connect runs as soon as the container starts.
    impl->container->schedule(proton::duration(0), [raw] { raw->connectNow(); });
    impl->thread = std::thread([raw] {
        raw->threadId = std::this_thread::get_id();
        try {
            raw->container->run();
        } catch (const std::exception& e) {
            PCLOUD_LOG(Error, "Bus client thread stopped on an exception", {{"error", e.what()}});
        }
        {
            std::lock_guard lock(raw->mutex);
            raw->finished = true;
        }
        raw->changed.notify_all();
    });
    impl_ = std::move(impl);
    return Status::success();
}

// The Impl outlives close() (until the Client is destroyed or connects again), so threads that
// are still inside request() or send() when another thread closes find a closed client, not
// freed memory.
void Client::close() {
    if (!impl_)
        return;
    Impl* raw = impl_.get();
    {
        std::lock_guard lock(raw->mutex);
        if (raw->closing)
            return;
        raw->closing = true;
    }
    // No more timers; nothing the container holds can delay its stop now.
    raw->alarms.stop();
    // The rest happens on the client's thread (shutdown()): the connection's own work queue
    // keeps it behind sends already handed over; without a connection, a zero-delay task.
    bool posted = false;
    {
        std::lock_guard lock(raw->mutex);
        if (raw->connWork)
            posted = raw->connWork->add([raw] { raw->shutdown(); });
    }
    if (!posted)
        raw->container->schedule(proton::duration(0), [raw] { raw->shutdown(); });
    {
        std::unique_lock lock(raw->mutex);
        if (!raw->changed.wait_for(lock, kCloseGrace, [&] { return raw->finished; })) {
            lock.unlock();
            // The peer did not answer the AMQP close: drop the connection without it.
            PCLOUD_LOG(Info, "Bus peer did not answer the close; disconnecting",
                       {{"url", raw->url.hostPort()}});
            raw->container->stop();
        }
    }
    if (raw->thread.joinable())
        raw->thread.join();
    // The client's thread has ended: whatever it did not fail, fails here.
    raw->failAll(kClosedMessage);
    {
        std::lock_guard lock(raw->mutex);
        raw->connWork = nullptr;
        raw->isConnected = false;
        raw->replyReady = false;
    }
    raw->changed.notify_all();
    raw->container.reset();
}

bool Client::connected() const {
    if (!impl_)
        return false;
    std::lock_guard lock(impl_->mutex);
    return impl_->isConnected && impl_->replyReady;
}

bool Client::waitConnected(std::chrono::milliseconds timeout) const {
    if (!impl_)
        return false;
    std::unique_lock lock(impl_->mutex);
    return impl_->changed.wait_for(lock, timeout,
                                   [&] { return impl_->isConnected && impl_->replyReady; });
}

bool Client::waitIdle(std::chrono::milliseconds timeout) const {
    if (!impl_)
        return false;
    std::unique_lock lock(impl_->mutex);
    return impl_->changed.wait_for(lock, timeout, [&] { return impl_->pending == 0; });
}

bool Client::waitSubscribed(std::uint64_t id, std::chrono::milliseconds timeout) const {
    if (!impl_)
        return false;
    std::unique_lock lock(impl_->mutex);
    return impl_->changed.wait_for(lock, timeout, [&] {
        auto it = impl_->subs.find(id);
        return it != impl_->subs.end() && it->second.ready;
    });
}

Status Client::send(const std::string& address, const std::string& body,
                    const Properties& properties) {
    if (!impl_)
        return makeError("the bus client is not connected; call connect() first");
    std::string wire = impl_->wireAddress(address);
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->closing)
            return makeError(kClosedMessage);
        if (impl_->pending >= impl_->options.maxPendingSends)
            return makeError(
                "bus outgoing queue is full (" + std::to_string(impl_->options.maxPendingSends) +
                " messages waiting); the peer is slow or unreachable: " + impl_->url.hostPort());
        impl_->outgoing[wire].push_back(
            Outgoing{detail::toProton(wire, body, properties), {}, false});
        ++impl_->pending;
    }
    Impl* raw = impl_.get();
    impl_->post([raw, wire] { raw->flush(wire); });
    return Status::success();
}

Status Client::reply(const std::string& replyTo, const std::string& correlationId,
                     const std::string& body) {
    if (!impl_)
        return makeError("the bus client is not connected; call connect() first");
    if (replyTo.empty())
        return makeError("the request has no reply_to; nowhere to send the reply");
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->closing)
            return makeError(kClosedMessage);
        if (impl_->pending >= impl_->options.maxPendingSends)
            return makeError(
                "bus outgoing queue is full (" + std::to_string(impl_->options.maxPendingSends) +
                " messages waiting); the peer is slow or unreachable: " + impl_->url.hostPort());
        proton::message out = detail::toProton(replyTo, body, {});
        out.correlation_id(correlationId);
        impl_->outgoing[replyTo].push_back(Outgoing{std::move(out), {}, true});
        ++impl_->pending;
    }
    Impl* raw = impl_.get();
    impl_->post([raw, replyTo] { raw->flush(replyTo); });
    return Status::success();
}

std::uint64_t Client::subscribe(const std::string& address, MessageCallback callback) {
    if (!impl_)
        return 0;
    std::string wire = impl_->wireAddress(address);
    std::uint64_t id;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->closing)
            return 0;
        id = ++impl_->nextId;
        impl_->subs[id] = Subscription{address, wire, std::move(callback), nullptr};
    }
    Impl* raw = impl_.get();
    impl_->post([raw, id, wire] { raw->openSubscription(id, wire); });
    return id;
}

std::uint64_t Client::serve(const std::string& address, RequestHandler handler) {
    if (!impl_)
        return 0;
    std::string wire = impl_->wireAddress(address);
    std::uint64_t id;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->closing)
            return 0;
        id = ++impl_->nextId;
        impl_->subs[id] = Subscription{address, wire, nullptr, std::move(handler)};
    }
    Impl* raw = impl_.get();
    impl_->post([raw, id, wire] { raw->openSubscription(id, wire); });
    return id;
}

void Client::unsubscribe(std::uint64_t id) {
    if (!impl_)
        return;
    {
        std::lock_guard lock(impl_->mutex);
        impl_->subs.erase(id);
    }
    Impl* raw = impl_.get();
    impl_->post([raw, id] {
        auto it = raw->subLinks.find(id);
        if (it == raw->subLinks.end())
            return;
        raw->linkToSub.erase(it->second);
        it->second.close();
        raw->subLinks.erase(it);
    });
}

void Client::requestAsync(const std::string& address, const std::string& body,
                          std::chrono::milliseconds timeout, ReplyCallback callback,
                          const Properties& properties, const std::string& correlationId) {
    if (!impl_) {
        callback(makeError("the bus client is not connected; call connect() first"));
        return;
    }
    std::string wire = impl_->wireAddress(address);
    std::string id = correlationId;
    {
        std::unique_lock lock(impl_->mutex);
        if (impl_->closing) {
            lock.unlock();
            callback(makeError(kClosedMessage));
            return;
        }
        if (id.empty())
            id = impl_->idPrefix + std::to_string(++impl_->nextId);
        if (impl_->pending >= impl_->options.maxPendingSends) {
            lock.unlock();
            callback(makeError("bus outgoing queue is full; request to " + address + " not sent"));
            return;
        }
        proton::message m = detail::toProton(wire, body, properties);
        m.correlation_id(id);
        m.id(id);
        auto deadline = std::chrono::steady_clock::now() + timeout;
        impl_->requests[id] =
            PendingRequest{std::move(callback),
                           wire,
                           impl_->options.checkReplySenders ? serverOf(address) : std::string(),
                           false,
                           deadline,
                           "no reply from " + address + " within " +
                               std::to_string(timeout.count()) + " ms (request id " + id + ")"};
        impl_->outgoing[wire].push_back(Outgoing{std::move(m), id, false});
        ++impl_->pending;
        // Armed here, not on the client's thread: it fires even while disconnected.
        impl_->armSweepLocked(deadline);
    }
    Impl* raw = impl_.get();
    impl_->post([raw, wire] { raw->flush(wire); });
}

Result<Message> Client::request(const std::string& address, const std::string& body,
                                std::chrono::milliseconds timeout, const Properties& properties,
                                const std::string& correlationId) {
    if (!impl_)
        return makeError("the bus client is not connected; call connect() first");
    if (std::this_thread::get_id() == impl_->threadId.load())
        return makeError("request() called on the bus client's own thread would deadlock; "
                         "use requestAsync() in callbacks");
    auto promise = std::make_shared<std::promise<Result<Message>>>();
    auto future = promise->get_future();
    std::string id = correlationId;
    if (id.empty()) {
        std::lock_guard lock(impl_->mutex);
        id = impl_->idPrefix + std::to_string(++impl_->nextId);
    }
    requestAsync(
        address, body, timeout, [promise](Result<Message> r) { promise->set_value(std::move(r)); },
        properties, id);
    // The caller keeps its own deadline too, in case the client's thread is held up (a slow
    // callback) when the sweep is due.
    if (future.wait_for(timeout) != std::future_status::ready) {
        std::unique_lock lock(impl_->mutex);
        auto it = impl_->requests.find(id);
        if (it != impl_->requests.end()) {
            std::string text = it->second.timeoutMessage;
            impl_->dropQueuedRequest(it->second.wire, id);
            impl_->requests.erase(it);
            lock.unlock();
            impl_->changed.notify_all();
            return makeError(text);
        }
    }
    return future.get(); // answered, or its callback is running right now
}

Client::Stats Client::stats() const {
    if (!impl_)
        return {};
    std::lock_guard lock(impl_->mutex);
    Stats s = impl_->stats;
    s.pending = impl_->pending;
    return s;
}

} // namespace pcloud::bus
