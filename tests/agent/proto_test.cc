#include "proto/agent_messages.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace pcloud;
using namespace pcloud::proto;

namespace {

constexpr Millis kNow = 1'700'000'000'000;

DecodeFailure failureOf(const std::string& body, std::size_t max = 65536) {
    auto r = decodeCommand(body, max, kNow);
    EXPECT_TRUE(std::holds_alternative<DecodeFailure>(r)) << body;
    if (auto* f = std::get_if<DecodeFailure>(&r))
        return *f;
    return {};
}

Command commandOf(const std::string& body) {
    auto r = decodeCommand(body, 65536, kNow);
    if (auto* f = std::get_if<DecodeFailure>(&r))
        ADD_FAILURE() << f->code << ": " << f->message;
    if (auto* c = std::get_if<Command>(&r))
        return *c;
    return {};
}

} // namespace

TEST(AgentProto, HeartbeatRoundTrip) {
    Heartbeat h{42, "b-1", 12'345, kNow};
    auto r = decodeReport(encodeHeartbeat(h));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->type, "heartbeat");
    auto back = std::get<Heartbeat>(r->body);
    EXPECT_EQ(back.seq, 42u);
    EXPECT_EQ(back.boot_id, "b-1");
    EXPECT_EQ(back.uptime, 12'345);
    EXPECT_EQ(back.sent_at, kNow);
    auto j = nlohmann::json::parse(encodeHeartbeat(h));
    EXPECT_EQ(j["v"], 1);
}

TEST(AgentProto, ServiceRoundTripKeepsReadyAndNotFound) {
    UnitState s;
    s.unit = "nginx.service";
    s.active_state = "failed";
    s.sub_state = "failed";
    s.result = "signal";
    s.main_pid = 0;
    s.exit_code = 137;
    s.changed_at = kNow;
    s.ready = false;
    auto r = decodeReport(encodeService(s));
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto back = std::get<UnitState>(r->body);
    EXPECT_TRUE(back.sameAs(s));
    EXPECT_EQ(back.changed_at, kNow);

    UnitState nf;
    nf.unit = "nosuch.service";
    nf.load_state = "not-found";
    nf.active_state = "not-found";
    auto j = nlohmann::json::parse(encodeService(nf));
    EXPECT_FALSE(j.contains("ready")); // no probe: no verdict
    EXPECT_EQ(j["active_state"], "not-found");
}

TEST(AgentProto, HelloAndReplyRoundTrip) {
    Hello h;
    h.assembly = "node01";
    h.backend = "systemd";
    h.sent_at = kNow;
    UnitState u;
    u.unit = "a";
    u.active_state = "active";
    h.units = {u, u};
    auto r = decodeReport(encodeHello(h));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(std::get<Hello>(r->body).units.size(), 2u);

    Reply rep{"c-1", false, ErrorInfo{"not-found", "no such unit"}, nullptr};
    auto rr = decodeReport(encodeReply(rep));
    ASSERT_TRUE(rr.ok());
    auto back = std::get<Reply>(rr->body);
    EXPECT_EQ(back.id, "c-1");
    EXPECT_FALSE(back.ok);
    ASSERT_TRUE(back.error);
    EXPECT_EQ(back.error->code, "not-found");
}

TEST(AgentProto, EveryCommandRoundTrips) {
    for (auto t : {CommandType::Start, CommandType::Stop, CommandType::Restart, CommandType::Status,
                   CommandType::Watch, CommandType::Probe, CommandType::Ping}) {
        Command c;
        c.type = t;
        c.id = std::string("id-") + toString(t);
        c.deadline = 5000;
        c.unit = "web.service";
        if (t == CommandType::Watch) {
            c.units = {"web.service", "db"};
            c.commands = {{"db", "/bin/sleep 100"}};
            model::Probe p;
            p.port = 8080;
            c.probes = {{"web.service", p}};
            c.heartbeat_interval = 750;
        }
        if (t == CommandType::Probe)
            c.probe = model::Probe{};
        Command back = commandOf(encodeCommand(c));
        EXPECT_EQ(back.type, t);
        EXPECT_EQ(back.id, c.id);
        EXPECT_EQ(back.deadline, 5000);
        if (t == CommandType::Watch) {
            EXPECT_EQ(back.units, c.units);
            EXPECT_EQ(back.commands, c.commands);
            EXPECT_EQ(back.probes.at("web.service").port, 8080);
            EXPECT_EQ(back.heartbeat_interval, 750);
        }
        if (t == CommandType::Probe) {
            EXPECT_TRUE(back.probe.has_value());
        }
    }
}

TEST(AgentProto, AbsoluteDeadlineBecomesBudget) {
    Command c =
        commandOf(R"({"v":1,"type":"ping","id":"p","deadline":"2023-11-14T22:13:30.000Z"})");
    EXPECT_EQ(c.deadline, 10'000);
    auto f = failureOf(R"({"v":1,"type":"ping","id":"p","deadline":"2020-01-01T00:00:00Z"})");
    EXPECT_EQ(f.code, kErrTimeout);
    EXPECT_EQ(f.id, "p");
}

TEST(AgentProto, GarbageIsRejectedWithACodeAndTheIdWhenReadable) {
    EXPECT_EQ(failureOf("not json").code, kErrMalformed);
    EXPECT_EQ(failureOf("[1,2]").code, kErrMalformed);
    EXPECT_EQ(failureOf("{}").code, kErrMalformed);
    EXPECT_EQ(failureOf(R"({"v":2,"type":"ping","id":"x"})").code, kErrVersion);
    auto unknown = failureOf(R"({"v":1,"type":"explode","id":"x9"})");
    EXPECT_EQ(unknown.code, kErrUnknownType);
    EXPECT_EQ(unknown.id, "x9");
    EXPECT_EQ(failureOf(R"({"v":1,"type":"ping"})").code, kErrBadField);
    EXPECT_EQ(failureOf(R"({"v":1,"type":"start","id":"a"})").code, kErrBadField);
    EXPECT_EQ(failureOf(R"({"v":1,"type":"start","id":"a","unit":7})").code, kErrBadField);
    EXPECT_EQ(failureOf(R"({"v":1,"type":"start","id":"a","unit":"../x y"})").code, kErrBadField);
    EXPECT_EQ(failureOf(R"({"v":1,"type":"watch","id":"a","units":"x"})").code, kErrBadField);
    EXPECT_EQ(failureOf(R"({"v":1,"type":"watch","id":"a","units":[1]})").code, kErrBadField);
    for (const char* hb : {"99", "600001", "\"1s\"", "1.5", "-1"}) {
        auto bad = failureOf(std::string(R"({"v":1,"type":"watch","id":"hb","units":[],)") +
                             "\"heartbeat_ms\":" + hb + "}");
        EXPECT_EQ(bad.code, kErrBadField) << hb;
        EXPECT_NE(bad.message.find("heartbeat_ms"), std::string::npos) << bad.message;
        EXPECT_EQ(bad.id, "hb");
    }
    EXPECT_FALSE(
        commandOf(R"({"v":1,"type":"watch","id":"a","units":[]})").heartbeat_interval.has_value());
    EXPECT_EQ(
        failureOf(R"({"v":1,"type":"probe","id":"a","unit":"u","probe":{"kind":"udp","port":1}})")
            .code,
        kErrBadField);
    EXPECT_EQ(failureOf(R"({"v":1,"type":"ping","id":"a","deadline":true})").code, kErrBadField);
    EXPECT_EQ(failureOf(std::string(70'000, ' '), 65'536).code, kErrTooLarge);
    // Invalid UTF-8 inside a string does not throw anywhere on the way back out.
    auto f = failureOf("{\"v\":1,\"type\":\"\xff\xfe\",\"id\":\"z\"}");
    Reply r{f.id, false, ErrorInfo{f.code, f.message}, nullptr};
    EXPECT_FALSE(encodeReply(r).empty());
}
