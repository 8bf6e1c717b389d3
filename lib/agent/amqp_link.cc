#include "agent/amqp_link.h"

#include "common/fs.h"
#include "common/log.h"

#include <proton/connection_options.hpp>
#include <proton/delivery.h>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/link.h>
#include <proton/message.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender_options.hpp>
#include <proton/ssl.hpp>
#include <proton/transport.hpp>
#include <proton/types.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pcloud::agent {
namespace {

// Proton C++ exposes no size limit for an incoming delivery still being received, and no
// public way to reach the C link. This accessor reads the wrapped pn_link_t (a protected
// member of the wrapper base) so partial deliveries can be capped; it only reads.
struct LinkAccess : proton::receiver {
    static pn_link_t* get(const proton::receiver& r) {
        return static_cast<const LinkAccess&>(r).pn_object();
    }
};

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r'))
        s.pop_back();
    return s;
}

} // namespace

std::string findVirtioPort(const std::string& name, const std::string& sysRoot,
                           const std::string& devRoot) {
    DIR* dir = ::opendir(sysRoot.c_str());
    if (!dir)
        return {};
    std::string found;
    while (dirent* e = ::readdir(dir)) {
        std::string port = e->d_name;
        if (port == "." || port == "..")
            continue;
        auto text = fs::readFile(sysRoot + "/" + port + "/name");
        if (text && trimmed(*text) == name) {
            found = devRoot + "/" + port;
            break;
        }
    }
    ::closedir(dir);
    return found;
}

AmqpLink::AmqpLink(Endpoint endpoint, std::string reportsAddress, std::string commandsAddress,
                   std::string containerId, std::size_t maxMessageSize, AgentCore& core,
                   const Clock& clock)
    : ep_(std::move(endpoint)), reports_addr_(std::move(reportsAddress)),
      commands_addr_(std::move(commandsAddress)), container_id_(std::move(containerId)),
      max_message_size_(maxMessageSize), core_(core), clock_(clock) {}

AmqpLink::~AmqpLink() {
    sender_ = proton::sender();
    receiver_ = proton::receiver();
    driver_.reset();
    if (fd_ >= 0)
        ::close(fd_);
}

void AmqpLink::scheduleRetry(Millis now) {
    retry_at_ = now + backoff_;
    backoff_ = std::min<Millis>(backoff_ * 2, 5'000);
}

void AmqpLink::startConnect(Millis now) {
    if (ep_.kind == Endpoint::Kind::Virtio) {
        virtio_path_ = findVirtioPort(ep_.port_name);
        if (virtio_path_.empty()) {
            PCLOUD_LOG(Warning, "virtio-serial port not found; will look again",
                       {{"port", ep_.port_name}});
            scheduleRetry(now);
            return;
        }
        fd_ = ::open(virtio_path_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd_ < 0) {
            PCLOUD_LOG(Warning, "Cannot open the virtio-serial port; will retry",
                       {{"path", virtio_path_}, {"error", std::strerror(errno)}});
            scheduleRetry(now);
            return;
        }
        PCLOUD_LOG(Info, "Opened the virtio-serial port", {{"path", virtio_path_}});
        state_ = State::WaitHost;
        retry_at_ = now; // check the host side at once
        return;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string port = std::to_string(ep_.port);
    int rc = ::getaddrinfo(ep_.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || !res) {
        PCLOUD_LOG(Warning, "Cannot resolve the hub address; will retry",
                   {{"host", ep_.host}, {"error", ::gai_strerror(rc)}});
        scheduleRetry(now);
        return;
    }
    fd_ = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ >= 0) {
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); // reports are latency-bound
        rc = ::connect(fd_, res->ai_addr, res->ai_addrlen);
    }
    ::freeaddrinfo(res);
    if (fd_ < 0 || (rc < 0 && errno != EINPROGRESS)) {
        PCLOUD_LOG(Info, "Cannot connect to the hub; will retry",
                   {{"host", ep_.host}, {"port", port}, {"error", std::strerror(errno)}});
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = -1;
        scheduleRetry(now);
        return;
    }
    state_ = State::Connecting;
    if (rc == 0)
        startDriver(now);
}

void AmqpLink::startDriver(Millis now) {
    driver_ = std::make_unique<proton::io::connection_driver>(container_id_);
    proton::connection_options opts;
    opts.handler(*this);
    opts.container_id(container_id_);
    opts.sasl_enabled(true);
    if (ep_.tls) {
        // Proton's TLS layer runs inside the driver's transport, over our own socket.
        opts.ssl_client_options(proton::ssl_client_options(
            proton::ssl_certificate(ep_.cert, ep_.key), ep_.ca, proton::ssl::VERIFY_PEER));
    }
    if (!ep_.user.empty()) {
        opts.user(ep_.user);
        opts.password(ep_.password);
        opts.sasl_allowed_mechs("PLAIN");
        opts.sasl_allow_insecure_mechs(true); // loopback, virtio-serial or inside TLS
    } else {
        opts.sasl_allowed_mechs(ep_.tls ? "EXTERNAL" : "ANONYMOUS");
    }
    if (ep_.kind == Endpoint::Kind::Tcp)
        opts.virtual_host(ep_.host);
    opts.idle_timeout(proton::duration(30'000));
    opts.max_frame_size(64 * 1024);
    driver_->connect(opts);
    state_ = State::Open;
    sender_open_ = false;
    failed_ = false;
    fail_reason_.clear();
    next_tick_ = now;
    ++connects_;
    PCLOUD_LOG(
        Info, "AMQP connection started",
        {{"endpoint", ep_.kind == Endpoint::Kind::Tcp ? ep_.host + ":" + std::to_string(ep_.port)
                                                      : virtio_path_}});
}

void AmqpLink::teardown(const std::string& why, Millis now) {
    bool wasOpen = sender_open_;
    sender_ = proton::sender();
    receiver_ = proton::receiver();
    sender_open_ = false;
    want_write_ = false;
    driver_.reset();
    next_tick_ = kNever;
    core_.onLinkDown();
    if (wasOpen)
        PCLOUD_LOG(Notice, "AMQP connection closed", {{"reason", why}});
    else
        PCLOUD_LOG(Info, "AMQP connection closed", {{"reason", why}});
    if (ep_.kind == Endpoint::Kind::Virtio && fd_ >= 0) {
        // Keep the port open; wait for the host side to come back, then start afresh.
        state_ = State::WaitHost;
        retry_at_ = now + 100;
        backoff_ = 100;
        return;
    }
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
    state_ = State::Idle;
    scheduleRetry(now);
}

void AmqpLink::readInput(Millis now) {
    for (int i = 0; i < 16 && driver_; ++i) {
        auto rb = driver_->read_buffer();
        if (rb.size == 0)
            return;
        ssize_t n = ::read(fd_, rb.data, rb.size);
        if (n > 0) {
            driver_->read_done(static_cast<std::size_t>(n));
            checkPartialDelivery(now);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        failed_ = true;
        fail_reason_ = n == 0 ? "the hub closed the connection" : std::strerror(errno);
        return;
    }
}

void AmqpLink::checkPartialDelivery(Millis now) {
    if (!receiver_ || failed_)
        return;
    pn_link_t* l = LinkAccess::get(receiver_);
    if (!l)
        return;
    pn_delivery_t* d = pn_link_current(l);
    if (d && pn_delivery_partial(d) && pn_delivery_pending(d) > max_message_size_) {
        PCLOUD_LOG(Warning, "Incoming message is larger than the limit; dropping the connection",
                   {{"limit", std::to_string(max_message_size_)},
                    {"received", std::to_string(pn_delivery_pending(d))}});
        driver_->connection().close(proton::error_condition(
            "amqp:link:message-size-exceeded",
            "message larger than " + std::to_string(max_message_size_) + " bytes"));
    }
}

void AmqpLink::writeOutput(Millis now) {
    while (driver_ && !failed_) {
        auto wb = driver_->write_buffer();
        if (wb.size == 0) {
            want_write_ = false;
            return;
        }
        ssize_t n = ep_.kind == Endpoint::Kind::Tcp ? ::send(fd_, wb.data, wb.size, MSG_NOSIGNAL)
                                                    : ::write(fd_, wb.data, wb.size);
        if (n > 0) {
            driver_->write_done(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            want_write_ = true;
            return;
        }
        failed_ = true;
        fail_reason_ = n == 0 ? "write returned 0" : std::strerror(errno);
    }
}

void AmqpLink::pump(Millis now) {
    for (int round = 0; round < 4 && driver_; ++round) {
        if (!driver_->dispatch()) {
            teardown(fail_reason_.empty() ? "connection finished" : fail_reason_, now);
            return;
        }
        if (sender_open_ && sender_) {
            auto& box = core_.outbox();
            while (!box.empty() && sender_.credit() > 0) {
                proton::message m;
                m.body(std::move(box.front().body));
                m.content_type("application/json");
                if (!box.front().correlation_id.empty())
                    m.correlation_id(box.front().correlation_id);
                if (!user_id_.empty())
                    m.user(user_id_);
                box.pop_front();
                sender_.send(m);
            }
        }
        writeOutput(now);
        if (failed_) {
            driver_->disconnected(proton::error_condition("pcloud:io", fail_reason_));
            teardown(fail_reason_, now);
            return;
        }
        if (!driver_->has_events())
            return;
    }
}

void AmqpLink::prepare(PollSet& ps, Millis now) {
    polled_ = false;
    switch (state_) {
    case State::Idle:
        ps.wakeAt(retry_at_);
        if (!core_.readyToConnect(now))
            ps.wakeAt(core_.settleDeadline());
        return;
    case State::Connecting:
        poll_index_ = ps.add(fd_, POLLOUT);
        polled_ = true;
        return;
    case State::WaitHost:
        if (now >= retry_at_) {
            poll_index_ = ps.add(fd_, POLLOUT);
            polled_ = true;
        } else {
            ps.wakeAt(retry_at_);
        }
        return;
    case State::Open:
        pump(now);
        if (state_ != State::Open)
            return prepare(ps, now);
        poll_index_ = ps.add(fd_, want_write_ ? (POLLIN | POLLOUT) : POLLIN);
        polled_ = true;
        ps.wakeAt(next_tick_);
        return;
    }
}

void AmqpLink::dispatch(const PollSet& ps, Millis now) {
    short re = polled_ ? ps.revents(poll_index_) : 0;
    switch (state_) {
    case State::Idle:
        if (now >= retry_at_ && core_.readyToConnect(now))
            startConnect(now);
        return;
    case State::Connecting: {
        if (!re)
            return;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            PCLOUD_LOG(Info, "Cannot connect to the hub; will retry",
                       {{"host", ep_.host},
                        {"port", std::to_string(ep_.port)},
                        {"error", std::strerror(err)}});
            ::close(fd_);
            fd_ = -1;
            state_ = State::Idle;
            scheduleRetry(now);
            return;
        }
        startDriver(now);
        return;
    }
    case State::WaitHost:
        if (!polled_)
            return;
        if (re & (POLLHUP | POLLERR)) {
            retry_at_ = now + backoff_;
            backoff_ = std::min<Millis>(backoff_ * 2, 1'000);
            return;
        }
        if (re & POLLOUT) {
            // The host side is there. Bytes left from an earlier connection are stale.
            char junk[4096];
            while (::read(fd_, junk, sizeof junk) > 0) {
            }
            backoff_ = 100;
            startDriver(now);
        }
        return;
    case State::Open:
        if (ep_.kind == Endpoint::Kind::Virtio && (re & POLLHUP)) {
            teardown("the host side of the virtio-serial port disconnected", now);
            return;
        }
        if (re & (POLLIN | POLLHUP | POLLERR))
            readInput(now);
        if (driver_ && (re & POLLOUT))
            writeOutput(now);
        if (driver_ && now >= next_tick_) {
            auto next = driver_->tick(proton::timestamp(now));
            next_tick_ = next.milliseconds() == 0 ? kNever : next.milliseconds();
        }
        if (driver_ && failed_) {
            driver_->disconnected(proton::error_condition("pcloud:io", fail_reason_));
            teardown(fail_reason_, now);
            return;
        }
        if (driver_)
            pump(now);
        return;
    }
}

void AmqpLink::on_connection_open(proton::connection& c) {
    sender_ = c.open_sender(reports_addr_);
    receiver_ = c.open_receiver(commands_addr_, proton::receiver_options().credit_window(16));
    if (pn_link_t* l = LinkAccess::get(receiver_))
        pn_link_set_max_message_size(l, max_message_size_);
}

void AmqpLink::on_sender_open(proton::sender&) {
    sender_open_ = true;
    backoff_ = 100;
    core_.onLinkUp();
}

void AmqpLink::on_sendable(proton::sender&) {}

void AmqpLink::on_message(proton::delivery&, proton::message& m) {
    if (allowed_ && !allowed_(m.user())) {
        ++refused_senders_;
        std::string sender = m.user().empty() ? "-" : m.user().substr(0, 200);
        if (refused_logged_.size() < 64 && refused_logged_.insert(sender).second)
            PCLOUD_LOG(Warning,
                       "Dropped a command from a sender that may not command this agent (logged "
                       "once per sender)",
                       {{"address", commands_addr_},
                        {"user_id", sender},
                        {"expected", expected_},
                        {"refused_total", std::to_string(refused_senders_)}});
        return;
    }
    std::string body;
    const proton::value& v = m.body();
    if (v.type() == proton::STRING)
        body = proton::get<std::string>(v);
    else if (v.type() == proton::BINARY) {
        auto b = proton::get<proton::binary>(v);
        body.assign(b.begin(), b.end());
    }
    core_.onMessage(body);
}

void AmqpLink::on_transport_error(proton::transport& t) {
    failed_ = true;
    fail_reason_ = t.error().what();
}

void AmqpLink::on_connection_error(proton::connection& c) {
    PCLOUD_LOG(Warning, "The hub closed the connection with an error",
               {{"error", c.error().what()}});
}

void AmqpLink::on_receiver_close(proton::receiver& r) {
    PCLOUD_LOG(Warning, "The hub closed the command link; reconnecting",
               {{"address", commands_addr_}, {"error", r.error().what()}});
    r.connection().close();
}

void AmqpLink::on_sender_close(proton::sender& s) {
    PCLOUD_LOG(Warning, "The hub closed the report link; reconnecting",
               {{"address", reports_addr_}, {"error", s.error().what()}});
    sender_open_ = false;
    s.connection().close();
}

} // namespace pcloud::agent
