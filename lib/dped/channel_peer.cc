#include "dped/channel_peer.h"

#include "common/log.h"
#include "proto/agent_messages.h"

#include <proton/connection_options.hpp>
#include <proton/delivery.h>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/link.h>
#include <proton/message.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender_options.hpp>
#include <proton/source.hpp>
#include <proton/source_options.hpp>
#include <proton/target.hpp>
#include <proton/target_options.hpp>
#include <proton/transport.hpp>
#include <proton/types.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

namespace pcloud::dped {

namespace {

constexpr const char* kUnauthorized = "amqp:unauthorized-access";
constexpr std::uint64_t kWakeTag = 1, kTimerTag = 2, kSockTag = 3;

// Proton C++ has no size limit for a delivery still being received, and no public way to
// reach the C link: this reads the wrapped pn_link_t (a protected member of the base).
struct LinkAccess : proton::receiver {
    static pn_link_t* get(const proton::receiver& r) {
        return static_cast<const LinkAccess&>(r).pn_object();
    }
};

// Where the protocol header of a new AMQP connection starts in `data`, or `n` if none does:
// "AMQP" then protocol id 3 (SASL: how the agent opens), version 1.0.0. The plain AMQP header
// (id 0) also follows SASL inside one connection, so it marks a new connection only when
// `plainToo` (the session was already open).
std::size_t findAmqpHeader(const char* data, std::size_t n, bool plainToo) {
    static const char kSasl[] = {'A', 'M', 'Q', 'P', 3, 1, 0, 0};
    static const char kPlain[] = {'A', 'M', 'Q', 'P', 0, 1, 0, 0};
    std::string_view in(data, n);
    std::size_t at = in.find(std::string_view(kSasl, sizeof kSasl));
    if (plainToo)
        at = std::min(at, in.find(std::string_view(kPlain, sizeof kPlain)));
    return at == std::string_view::npos ? n : at;
}

Millis monoMs() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}
std::int64_t monoUs() {
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string bodyOf(const proton::message& m) {
    const proton::value& v = m.body();
    if (v.type() == proton::STRING)
        return proton::get<std::string>(v);
    if (v.type() == proton::BINARY) {
        auto b = proton::get<proton::binary>(v);
        return std::string(b.begin(), b.end());
    }
    return {};
}

std::string lower(std::string s) {
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

} // namespace

// ---- AgentSession -----------------------------------------------------------------------

AgentSession::AgentSession(AgentSessionOptions options, Callbacks callbacks)
    : opt_(std::move(options)), cb_(std::move(callbacks)) {
    for (auto& k : opt_.keys)
        k = lower(k);
    driver_ = std::make_unique<proton::io::connection_driver>("dped-channel-" + opt_.assembly);
    proton::connection_options co;
    co.handler(*this);
    co.container_id("dped-channel-" + opt_.assembly);
    co.max_frame_size(opt_.max_frame);
    co.idle_timeout(proton::duration(opt_.idle_timeout));
    // The channel is the authentication: only this guest's QEMU can write to it.
    co.sasl_enabled(true);
    co.sasl_allowed_mechs("ANONYMOUS");
    driver_->accept(co);
}

AgentSession::~AgentSession() {
    reports_ = proton::receiver();
    commands_ = proton::sender();
    driver_.reset();
}

proton::io::mutable_buffer AgentSession::readBuffer() {
    return driver_->read_buffer();
}

void AgentSession::readDone(std::size_t n) {
    driver_->read_done(n);
    checkPartialDelivery();
}

void AgentSession::readClose() {
    driver_->read_close();
}

proton::io::const_buffer AgentSession::writeBuffer() {
    return driver_->write_buffer();
}

void AgentSession::writeDone(std::size_t n) {
    driver_->write_done(n);
}

Millis AgentSession::tick(Millis now) {
    auto next = driver_->tick(proton::timestamp(now));
    return next.milliseconds();
}

bool AgentSession::process() {
    for (int round = 0; round < 8; ++round) {
        if (!driver_->dispatch())
            return false;
        grantCredit();
        flushOutbox();
        if (!driver_->has_events())
            break;
    }
    return true;
}

void AgentSession::setCreditAllowed(bool allowed) {
    credit_allowed_ = allowed;
    grantCredit();
}

void AgentSession::grantCredit() {
    if (!reports_open_ || !credit_allowed_ || !reports_)
        return;
    int have = reports_.credit();
    if (have < static_cast<int>(opt_.credit / 2 + 1))
        reports_.add_credit(opt_.credit - static_cast<std::uint32_t>(std::max(have, 0)));
}

bool AgentSession::send(const std::string& body, const std::string& correlationId) {
    if (!commands_open_ || outbox_.size() >= opt_.max_outbox) {
        ++stats_.commands_dropped;
        return false;
    }
    outbox_.push_back({body, correlationId});
    flushOutbox();
    return true;
}

void AgentSession::flushOutbox() {
    while (commands_open_ && commands_ && !outbox_.empty() && commands_.credit() > 0) {
        proton::message m;
        m.body(std::move(outbox_.front().body));
        m.content_type("application/json");
        if (!outbox_.front().correlation_id.empty())
            m.correlation_id(outbox_.front().correlation_id);
        outbox_.pop_front();
        commands_.send(m);
        ++stats_.commands_sent;
    }
}

bool AgentSession::allowed(const std::string& address, const std::string& kind) const {
    std::string a = address;
    if (!opt_.address_prefix.empty() && a.rfind(opt_.address_prefix, 0) == 0)
        a = a.substr(opt_.address_prefix.size());
    std::string base = "pcloud." + kind + ".";
    if (a.rfind(base, 0) != 0)
        return false;
    std::string key = lower(a.substr(base.size()));
    return std::find(opt_.keys.begin(), opt_.keys.end(), key) != opt_.keys.end();
}

void AgentSession::refuse(proton::link& link, const std::string& address) {
    ++stats_.refused_links;
    PCLOUD_LOG(Warning, "Refusing a guest link to an address not its own",
               {{"assembly", opt_.assembly}, {"address", address}});
    link.close(proton::error_condition(kUnauthorized, "assembly " + opt_.assembly +
                                                          " may not use address '" + address +
                                                          "' on its channel"));
}

void AgentSession::notifyAttached() {
    bool now = attached();
    if (now != was_attached_) {
        was_attached_ = now;
        if (cb_.on_attached)
            cb_.on_attached(now);
    }
}

void AgentSession::fail(const std::string& why, bool misbehaved) {
    if (error_.empty())
        error_ = why;
    misbehaved_ = misbehaved_ || misbehaved;
}

void AgentSession::on_connection_open(proton::connection& c) {
    if (!c.active())
        c.open();
}

void AgentSession::on_receiver_open(proton::receiver& r) {
    std::string address = r.target().address();
    if (reports_open_ || !allowed(address, "reports")) {
        refuse(r, address);
        return;
    }
    r.open(proton::receiver_options().credit_window(0).auto_accept(true).target(
        proton::target_options().address(address)));
    if (pn_link_t* l = LinkAccess::get(r))
        pn_link_set_max_message_size(l, opt_.max_message);
    reports_ = r;
    reports_open_ = true;
    grantCredit();
    notifyAttached();
}

void AgentSession::on_sender_open(proton::sender& s) {
    std::string address = s.source().address();
    if (commands_open_ || !allowed(address, "agent")) {
        refuse(s, address);
        return;
    }
    s.open(proton::sender_options().source(proton::source_options().address(address)));
    commands_ = s;
    commands_open_ = true;
    notifyAttached();
}

void AgentSession::on_sendable(proton::sender&) {
    flushOutbox();
}

void AgentSession::checkPartialDelivery() {
    if (!reports_ || !error_.empty())
        return;
    pn_link_t* l = LinkAccess::get(reports_);
    if (!l)
        return;
    pn_delivery_t* d = pn_link_current(l);
    if (d && pn_delivery_partial(d) && pn_delivery_pending(d) > opt_.max_message) {
        fail("a report larger than " + std::to_string(opt_.max_message) + " bytes", true);
        driver_->connection().close(proton::error_condition(
            "amqp:link:message-size-exceeded",
            "message larger than " + std::to_string(opt_.max_message) + " bytes"));
    }
}

void AgentSession::on_message(proton::delivery&, proton::message& m) {
    std::string body = bodyOf(m);
    if (body.size() > opt_.max_message) {
        fail("a report larger than " + std::to_string(opt_.max_message) + " bytes", true);
        driver_->connection().close(proton::error_condition(
            "amqp:link:message-size-exceeded",
            "message larger than " + std::to_string(opt_.max_message) + " bytes"));
        return;
    }
    // Only hello names an assembly; the link address already pins every other report.
    if (body.find("\"hello\"") != std::string::npos) {
        auto rep = proto::decodeReport(body);
        if (rep) {
            if (auto* h = std::get_if<proto::Hello>(&rep->body)) {
                std::string named = lower(h->assembly);
                if (std::find(opt_.keys.begin(), opt_.keys.end(), named) == opt_.keys.end()) {
                    ++stats_.mismatched_hellos;
                    if (!hello_mismatch_logged_) {
                        hello_mismatch_logged_ = true;
                        PCLOUD_LOG(Warning,
                                   "Dropping a hello that names another assembly on this "
                                   "channel",
                                   {{"assembly", opt_.assembly}, {"hello_assembly", h->assembly}});
                    }
                    return;
                }
            }
        }
    }
    ++stats_.reports;
    if (cb_.on_report)
        cb_.on_report(std::move(body));
}

void AgentSession::on_receiver_close(proton::receiver& r) {
    if (r == reports_) {
        reports_open_ = false;
        reports_ = proton::receiver();
        notifyAttached();
    }
}

void AgentSession::on_sender_close(proton::sender& s) {
    if (s == commands_) {
        commands_open_ = false;
        commands_ = proton::sender();
        outbox_.clear();
        notifyAttached();
    }
}

void AgentSession::on_transport_error(proton::transport& t) {
    // A transport that ends without an AMQP close: a framing error, a frame over the limit,
    // something that is not AMQP at all. An idle timeout is a silent peer (a stopped VM,
    // which the heartbeat timeout deals with), not a misbehaving one.
    std::string what = t.error().what();
    fail(what, what.find("idle-timeout") == std::string::npos);
}

void AgentSession::on_connection_error(proton::connection& c) {
    fail(c.error().what(), false);
}

void AgentSession::on_error(const proton::error_condition& e) {
    fail(e.what(), true);
}

// ---- ChannelPeer ------------------------------------------------------------------------

ChannelPeer::ChannelPeer(ChannelPeerOptions options, ChannelPeerCallbacks callbacks)
    : opt_(std::move(options)), cb_(std::move(callbacks)) {}

ChannelPeer::~ChannelPeer() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    if (thread_.joinable()) {
        wake();
        thread_.join();
    }
    session_.reset();
    for (int fd : {fd_, timer_fd_, wake_fd_, epoll_fd_})
        if (fd >= 0)
            ::close(fd);
}

Status ChannelPeer::start() {
    const std::string& key = opt_.session.assembly;
    if (thread_.joinable())
        return makeError("channel " + key + ": already started");
    if (opt_.socket_path.size() >= sizeof(sockaddr_un{}.sun_path))
        return makeError("channel " + key + ": socket path too long: " + opt_.socket_path);
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (epoll_fd_ < 0 || wake_fd_ < 0 || timer_fd_ < 0)
        return makeError("channel " + key + ": " + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    ev.data.u64 = kTimerTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &ev);
    {
        std::lock_guard lock(mu_);
        want_reconnect_ = true;
    }
    thread_ = std::thread([this] { run(); });
    wake();
    return Status::success();
}

void ChannelPeer::wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void ChannelPeer::reconnect() {
    {
        std::lock_guard lock(mu_);
        want_reconnect_ = true;
    }
    wake();
}

Status ChannelPeer::send(const std::string& body, const std::string& correlationId) {
    {
        std::lock_guard lock(mu_);
        if (!attached_)
            return makeError("no agent is attached to the channel of " + opt_.session.assembly);
        if (to_send_.size() >= opt_.session.max_outbox)
            return makeError("the command queue of " + opt_.session.assembly +
                             "'s channel is full");
        to_send_.emplace_back(body, correlationId);
    }
    wake();
    return Status::success();
}

void ChannelPeer::reportDone(std::size_t bytes) {
    pending_reports_.fetch_sub(1);
    pending_bytes_.fetch_sub(bytes);
    if (!reading_) // racy read is fine: a spurious or missed wake is corrected below
        wake();
}

bool ChannelPeer::connected() const {
    std::lock_guard lock(mu_);
    return connected_;
}

bool ChannelPeer::agentAttached() const {
    std::lock_guard lock(mu_);
    return attached_;
}

ChannelPeer::Stats ChannelPeer::stats() const {
    std::lock_guard lock(mu_);
    Stats s = stats_;
    s.pending_reports = pending_reports_.load();
    s.pending_bytes = pending_bytes_.load();
    return s;
}

void ChannelPeer::emit(virt::ChannelEventKind kind, std::string detail) {
    if (!cb_.on_event)
        return;
    virt::ChannelEvent e;
    e.key = opt_.session.assembly;
    e.kind = kind;
    e.detail = std::move(detail);
    e.monotonicUs = monoUs();
    cb_.on_event(e);
}

void ChannelPeer::armTimer(Millis atMono) {
    Millis next = 0;
    for (Millis t : {retry_at_, tick_at_, atMono})
        if (t > 0 && (next == 0 || t < next))
            next = t;
    itimerspec its{};
    if (next > 0) {
        Millis delta = std::max<Millis>(1, next - monoMs());
        its.it_value.tv_sec = delta / 1000;
        its.it_value.tv_nsec = static_cast<long>(delta % 1000) * 1'000'000L;
    }
    timerfd_settime(timer_fd_, 0, &its, nullptr);
}

bool ChannelPeer::throttled() const {
    return pending_reports_.load() >= opt_.max_pending_reports ||
           pending_bytes_.load() >= opt_.max_pending_bytes;
}

void ChannelPeer::noteBurst(bool drop, const std::string& detail) {
    Millis now = monoMs();
    bool newBurst = now - last_burst_event_ > opt_.quiet_burst_ms;
    last_burst_event_ = now;
    if (!newBurst) {
        ++burst_suppressed_;
        return;
    }
    std::string before = std::to_string(burst_suppressed_);
    burst_suppressed_ = 0;
    if (drop)
        PCLOUD_LOG(Warning,
                   "Dropping the guest's channel connection: it broke the AMQP protocol or a "
                   "limit; reconnecting (logged once per burst)",
                   {{"assembly", opt_.session.assembly},
                    {"error", detail},
                    {"suppressed_before", before}});
    else
        PCLOUD_LOG(Warning,
                   "Guest channel floods dped; not reading it until its reports are processed "
                   "(logged once per burst)",
                   {{"assembly", opt_.session.assembly},
                    {"pending_reports", std::to_string(pending_reports_.load())},
                    {"pending_bytes", std::to_string(pending_bytes_.load())},
                    {"suppressed_before", before}});
}

void ChannelPeer::tryConnect() {
    if (fd_ >= 0)
        return;
    auto conn = virt::connectChannelSocket(opt_.socket_path);
    if (!conn) {
        if (!reported_connect_failure_) {
            reported_connect_failure_ = true;
            emit(virt::ChannelEventKind::ConnectFailed, conn.error().message);
        }
        retry_at_ = opt_.retry_ms > 0 ? monoMs() + opt_.retry_ms : 0;
        return;
    }
    fd_ = *conn;
    reported_connect_failure_ = false;
    retry_at_ = 0;
    reading_ = true;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = kSockTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd_, &ev);
    {
        std::lock_guard lock(mu_);
        connected_ = true;
    }
    newSession();
    emit(virt::ChannelEventKind::Connected, opt_.socket_path);
}

void ChannelPeer::newSession() {
    AgentSession::Callbacks scb;
    scb.on_report = [this](std::string body) {
        pending_reports_.fetch_add(1);
        pending_bytes_.fetch_add(body.size());
        if (cb_.on_report)
            cb_.on_report(std::move(body));
    };
    scb.on_attached = [this](bool up) {
        std::lock_guard lock(mu_);
        attached_ = up;
        if (!up)
            to_send_.clear();
    };
    session_ = std::make_unique<AgentSession>(opt_.session, std::move(scb));
    session_bytes_in_ = 0;
    tick_at_ = monoMs();
    std::lock_guard lock(mu_);
    ++stats_.sessions;
}

void ChannelPeer::restartSession() {
    // Logged at most once per quiet_burst_ms: a guest that sends nothing but new headers must
    // not flood dped's log (the count of the ones not logged goes with the next line).
    Millis now = monoMs();
    if (last_restart_log_ == 0 || now - last_restart_log_ >= opt_.quiet_burst_ms) {
        PCLOUD_LOG(Info,
                   "A new AMQP connection on the channel: the agent restarted; answering it on a "
                   "new session",
                   {{"assembly", opt_.session.assembly},
                    {"old_session_bytes", std::to_string(session_bytes_in_)},
                    {"not_logged_before", std::to_string(restarts_not_logged_)}});
        last_restart_log_ = now;
        restarts_not_logged_ = 0;
    } else {
        ++restarts_not_logged_;
    }
    foldSessionStats();
    {
        std::lock_guard lock(mu_);
        attached_ = false;
        to_send_.clear();
        ++stats_.restarted_sessions;
    }
    newSession();
}

bool ChannelPeer::feed(const char* data, std::size_t n) {
    while (n > 0 && session_) {
        auto rb = session_->readBuffer();
        if (rb.size == 0)
            return false;
        std::size_t k = std::min(n, rb.size);
        std::memcpy(rb.data, data, k);
        session_bytes_in_ += k;
        session_->readDone(k);
        if (!session_->process() || session_->misbehaved())
            return false;
        data += k;
        n -= k;
    }
    return session_ != nullptr;
}

void ChannelPeer::foldSessionStats() {
    if (!session_)
        return;
    std::lock_guard lock(mu_);
    const auto& s = session_->stats();
    stats_.session.reports += s.reports;
    stats_.session.refused_links += s.refused_links;
    stats_.session.mismatched_hellos += s.mismatched_hellos;
    stats_.session.commands_sent += s.commands_sent;
    stats_.session.commands_dropped += s.commands_dropped;
}

void ChannelPeer::closeSocket(int retryMs) {
    if (fd_ >= 0) {
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd_, nullptr);
        ::close(fd_);
        fd_ = -1;
    }
    foldSessionStats();
    session_.reset();
    tick_at_ = 0;
    {
        std::lock_guard lock(mu_);
        connected_ = false;
        attached_ = false;
        to_send_.clear();
    }
    retry_at_ = retryMs > 0 ? monoMs() + retryMs : 0;
}

void ChannelPeer::endSession(const std::string& why, bool misbehaved) {
    if (misbehaved) {
        {
            std::lock_guard lock(mu_);
            ++stats_.dropped_connections;
        }
        noteBurst(true, why);
    } else {
        PCLOUD_LOG(Info, "The agent's AMQP connection on the channel ended; reopening",
                   {{"assembly", opt_.session.assembly}, {"reason", why}});
    }
    // Closing our side makes the guest see the host side go away (POLLHUP on its port), so
    // the agent starts a fresh AMQP connection once we are back.
    closeSocket(misbehaved ? opt_.misbehave_ms : opt_.reopen_ms);
}

void ChannelPeer::readSocket(bool& eof, std::string& err) {
    for (int i = 0; i < 16 && session_; ++i) {
        if (throttled())
            return;
        auto rb = session_->readBuffer();
        if (rb.size == 0)
            return;
        ssize_t n = ::read(fd_, rb.data, rb.size);
        if (n > 0) {
            auto len = static_cast<std::size_t>(n);
            std::size_t at =
                session_bytes_in_ > 0 ? findAmqpHeader(rb.data, len, agentAttached()) : len;
            if (at < len) {
                // A restarted agent's new connection (see the header): what precedes the
                // header is the old connection's last bytes; they end with the old session.
                std::string fresh(rb.data + at, len - at);
                restartSession();
                if (!feed(fresh.data(), fresh.size()))
                    return;
                continue;
            }
            session_bytes_in_ += len;
            session_->readDone(len);
            if (!session_->process() || session_->misbehaved())
                return;
            continue;
        }
        if (n == 0) {
            eof = true;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            err = std::strerror(errno);
            eof = true;
        }
        return;
    }
}

bool ChannelPeer::writeSocket(std::string& err) {
    while (session_) {
        auto wb = session_->writeBuffer();
        if (wb.size == 0)
            return true;
        ssize_t n = ::send(fd_, wb.data, wb.size, MSG_NOSIGNAL);
        if (n > 0) {
            session_->writeDone(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        err = n < 0 ? std::strerror(errno) : "write returned 0";
        return false;
    }
    return true;
}

void ChannelPeer::updateInterest() {
    if (fd_ < 0 || !session_)
        return;
    epoll_event ev{};
    ev.events = EPOLLRDHUP;
    bool wantRead = !throttled();
    if (wantRead)
        ev.events |= EPOLLIN;
    if (session_->writeBuffer().size > 0)
        ev.events |= EPOLLOUT;
    ev.data.u64 = kSockTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd_, &ev);
    if (reading_ && !wantRead) {
        {
            std::lock_guard lock(mu_);
            ++stats_.throttles;
        }
        noteBurst(false, "");
    }
    if (session_)
        session_->setCreditAllowed(wantRead);
    reading_ = wantRead;
}

void ChannelPeer::run() {
    epoll_event events[8];
    for (;;) {
        armTimer(0);
        int n = epoll_wait(epoll_fd_, events, 8, -1);
        if (n < 0 && errno != EINTR)
            return;
        bool connectNow = false;
        std::deque<std::pair<std::string, std::string>> sends;
        {
            std::lock_guard lock(mu_);
            if (stopping_)
                return;
            if (want_reconnect_) {
                want_reconnect_ = false;
                connectNow = true;
            }
            sends.swap(to_send_);
        }
        bool sockEvent = false;
        std::uint32_t sockFlags = 0;
        for (int i = 0; i < n; ++i) {
            if (events[i].data.u64 == kWakeTag) {
                std::uint64_t v;
                [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
            } else if (events[i].data.u64 == kTimerTag) {
                std::uint64_t v;
                [[maybe_unused]] ssize_t r = ::read(timer_fd_, &v, sizeof v);
            } else if (events[i].data.u64 == kSockTag) {
                sockEvent = true;
                sockFlags = events[i].events;
            }
        }
        Millis now = monoMs();
        if (retry_at_ > 0 && now >= retry_at_) {
            retry_at_ = 0;
            connectNow = true;
        }
        if (connectNow)
            tryConnect();
        if (fd_ < 0 || !session_)
            continue;
        for (auto& [body, cid] : sends)
            session_->send(body, cid);
        std::string err;
        bool eof = false;
        if (sockEvent && (sockFlags & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
            eof = true;
        if (!eof && (!sockEvent || (sockFlags & EPOLLIN) || reading_))
            readSocket(eof, err);
        if (eof) {
            // QEMU closed the socket (it exited?): a crash suspicion, as with the relay.
            closeSocket(opt_.retry_ms);
            emit(virt::ChannelEventKind::Eof, err.empty() ? "peer closed" : err);
            continue;
        }
        if (tick_at_ > 0 && now >= tick_at_) {
            Millis next = session_->tick(now);
            tick_at_ = next > 0 ? next : 0;
        }
        // Writing can finish proton's part of a close (a protocol error answered with its
        // own header and a close frame): process again so the end is seen now.
        bool alive = true, writeFailed = false;
        for (int round = 0; round < 2 && alive && !writeFailed; ++round) {
            alive = session_->process();
            writeFailed = !writeSocket(err);
        }
        if (writeFailed) {
            closeSocket(opt_.retry_ms);
            emit(virt::ChannelEventKind::Eof, err);
            continue;
        }
        if (session_->misbehaved()) {
            endSession(session_->error(), true);
            continue;
        }
        if (!alive) {
            endSession(session_->error().empty() ? "closed by the agent" : session_->error(),
                       false);
            continue;
        }
        if (session_->writeBuffer().size > opt_.max_write_buffer) {
            endSession("the agent does not read its commands", true);
            continue;
        }
        updateInterest();
    }
}

} // namespace pcloud::dped
