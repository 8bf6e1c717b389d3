#include "test_peer.h"

#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/listen_handler.hpp>
#include <proton/listener.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/sender.hpp>
#include <proton/target.hpp>
#include <proton/work_queue.hpp>

#include <nlohmann/json.hpp>

#include <future>
#include <stdexcept>
#include <thread>

namespace pcloud::testing {

struct TestPeer::Impl : proton::messaging_handler, proton::listen_handler {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Received> received;
    std::size_t cursor = 0;
    proton::sender command_sender; // used on the container thread only
    proton::work_queue* wq = nullptr;
    bool link_ready = false;
    std::promise<int> port_promise;
    bool port_set = false;
    std::unique_ptr<proton::container> container;
    std::thread thread;
    proton::listener listener;

    // listen_handler
    void on_open(proton::listener& l) override {
        if (!port_set) {
            port_set = true;
            port_promise.set_value(l.port());
        }
    }
    void on_error(proton::listener&, const std::string& what) override {
        if (!port_set) {
            port_set = true;
            port_promise.set_exception(std::make_exception_ptr(std::runtime_error(what)));
        }
    }
    proton::connection_options on_accept(proton::listener&) override {
        return proton::connection_options().handler(*this);
    }

    // messaging_handler
    void on_sender_open(proton::sender& s) override {
        if (!s.active())
            s.open();
        std::lock_guard lk(mu);
        command_sender = s;
        wq = &s.work_queue();
        link_ready = true;
        cv.notify_all();
    }
    void on_sender_close(proton::sender&) override { dropLink(); }
    void on_connection_close(proton::connection&) override { dropLink(); }
    void on_transport_close(proton::transport&) override { dropLink(); }
    void on_transport_error(proton::transport&) override { dropLink(); }
    void dropLink() {
        std::lock_guard lk(mu);
        link_ready = false;
        wq = nullptr;
        command_sender = proton::sender();
    }
    void on_message(proton::delivery& d, proton::message& m) override {
        Received r;
        r.at = Clock::now();
        r.address = d.receiver().target().address();
        if (m.body().type() == proton::STRING)
            r.body = proton::get<std::string>(m.body());
        if (!m.correlation_id().empty())
            r.correlation_id = proton::to_string(m.correlation_id());
        auto rep = proto::decodeReport(r.body);
        if (rep)
            r.report = *rep;
        std::lock_guard lk(mu);
        received.push_back(std::move(r));
        cv.notify_all();
    }
};

TestPeer::TestPeer(int port) : impl_(std::make_unique<Impl>()) {
    impl_->container = std::make_unique<proton::container>("pcloud-test-peer");
    auto fut = impl_->port_promise.get_future();
    impl_->listener = impl_->container->listen("127.0.0.1:" + std::to_string(port), *impl_);
    impl_->thread = std::thread([this] {
        try {
            impl_->container->run();
        } catch (const std::exception&) {
        }
    });
    port_ = fut.get();
}

TestPeer::~TestPeer() {
    impl_->container->stop();
    if (impl_->thread.joinable())
        impl_->thread.join();
}

std::optional<TestPeer::Received>
TestPeer::waitFor(const std::function<bool(const Received&)>& pred,
                  std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::unique_lock lk(impl_->mu);
    while (true) {
        while (impl_->cursor < impl_->received.size()) {
            const Received& r = impl_->received[impl_->cursor++];
            if (pred(r))
                return r;
        }
        if (impl_->cv.wait_until(lk, deadline) == std::cv_status::timeout &&
            impl_->cursor >= impl_->received.size())
            return std::nullopt;
    }
}

void TestPeer::skipAll() {
    std::lock_guard lk(impl_->mu);
    impl_->cursor = impl_->received.size();
}

std::size_t TestPeer::receivedCount() const {
    std::lock_guard lk(impl_->mu);
    return impl_->received.size();
}

bool TestPeer::waitCommandLink(std::chrono::milliseconds timeout) {
    std::unique_lock lk(impl_->mu);
    return impl_->cv.wait_for(lk, timeout, [&] { return impl_->link_ready; });
}

bool TestPeer::send(const std::string& body, const std::string& correlationId) {
    std::lock_guard lk(impl_->mu);
    if (!impl_->link_ready || !impl_->wq)
        return false;
    Impl* impl = impl_.get();
    return impl_->wq->add([impl, body, correlationId] {
        if (!impl->command_sender)
            return;
        proton::message m;
        m.body(body);
        if (!correlationId.empty())
            m.correlation_id(proton::message_id(correlationId));
        impl->command_sender.send(m);
    });
}

std::optional<proto::UnitState>
TestPeer::waitService(const std::string& unit,
                      const std::function<bool(const proto::UnitState&)>& pred,
                      std::chrono::milliseconds timeout, Clock::time_point* at) {
    auto r = waitFor(
        [&](const Received& r) {
            if (r.report.type != "service")
                return false;
            const auto& s = std::get<proto::UnitState>(r.report.body);
            return s.unit == unit && pred(s);
        },
        timeout);
    if (!r)
        return std::nullopt;
    if (at)
        *at = r->at;
    return std::get<proto::UnitState>(r->report.body);
}

std::optional<proto::Hello> TestPeer::waitHello(std::chrono::milliseconds timeout) {
    auto r = waitFor([](const Received& r) { return r.report.type == "hello"; }, timeout);
    if (!r)
        return std::nullopt;
    return std::get<proto::Hello>(r->report.body);
}

std::optional<proto::Reply> TestPeer::waitReply(const std::string& id,
                                                std::chrono::milliseconds timeout) {
    auto r = waitFor(
        [&](const Received& r) {
            return r.report.type == "reply" && std::get<proto::Reply>(r.report.body).id == id;
        },
        timeout);
    if (!r)
        return std::nullopt;
    return std::get<proto::Reply>(r->report.body);
}

std::string commandBody(const std::string& type, const std::string& id, const std::string& unit,
                        long deadlineMs) {
    nlohmann::json j = {{"v", 1}, {"type", type}, {"id", id}, {"deadline", deadlineMs}};
    if (!unit.empty())
        j["unit"] = unit;
    return j.dump();
}

} // namespace pcloud::testing
