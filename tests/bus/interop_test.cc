// A foreign AMQP stack (python3-qpid-proton) talking to the embedded hub: proves the hub
// speaks AMQP 1.0, not just "whatever our own client does".
#include "bus_test_util.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>

namespace pcloud::bus::test {

namespace {
std::string run(const std::string& cmd, int& status) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) {
        status = -1;
        return out;
    }
    char buf[4096];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    status = pclose(p);
    return out;
}
} // namespace

TEST(BusInterop, PythonProtonClientTalksToTheHub) {
    int status = 0;
    run("/usr/bin/python3 -c 'import proton' 2>&1", status);
    if (status != 0)
        GTEST_SKIP()
            << "python3-qpid-proton is not installed (apt-get install python3-qpid-proton)";

    Hub hub(insecureOptions());
    ASSERT_TRUE(hub.start("amqp://127.0.0.1:0").ok());
    Client cpp;
    ASSERT_TRUE(cpp.connect(hubUrl(hub)).ok());
    ASSERT_TRUE(cpp.waitConnected(kDeadline));
    Inbox reports;
    ASSERT_TRUE(
        cpp.waitSubscribed(cpp.subscribe("pcloud.reports.py", reports.callback()), kDeadline));
    auto serveId = cpp.serve("pcloud.cped", [](const Message& m) -> std::optional<std::string> {
        auto j = nlohmann::json::parse(m.body, nullptr, false);
        return nlohmann::json{
            {"v", 1}, {"id", j.is_discarded() ? "" : j.value("id", "")}, {"ok", true}}
            .dump();
    });
    ASSERT_TRUE(cpp.waitSubscribed(serveId, kDeadline));
    // Waiting for the Python client in the agent queue.
    ASSERT_TRUE(cpp.send("pcloud.agent.py", R"({"v":1,"type":"ping","id":"p1"})").ok());

    std::string cmd = "timeout 30 /usr/bin/python3 " PCLOUD_BUS_TEST_DIR
                      "/interop_client.py 127.0.0.1:" +
                      std::to_string(hub.boundPort()) + " 2>&1";
    std::string out = run(cmd, status);
    ASSERT_EQ(status, 0) << out;
    EXPECT_NE(out.find("agent-got {\"v\":1,\"type\":\"ping\",\"id\":\"p1\"}"), std::string::npos)
        << out;
    EXPECT_NE(out.find("reply-ok py-1"), std::string::npos) << out;
    ASSERT_TRUE(reports.waitFor(1));
    EXPECT_EQ(reports.messages()[0].body, R"({"v":1,"type":"hello","assembly":"py"})");
    EXPECT_EQ(reports.messages()[0].properties.at("coalesce-key"), "hb.py");
}

} // namespace pcloud::bus::test
