// The process backend's state file and /proc parsing: pure, so every bad input is tried.
#include "agent/process_state.h"

#include <gtest/gtest.h>

#include <unistd.h>

using namespace pcloud;
using namespace pcloud::agent;

TEST(ProcessState, RoundTrips) {
    ProcessState s;
    s.boot_id = "b0075e3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    s.units["httpd"] = RecordedProcess{412, 412, 98765, "/bin/busybox httpd -f -p 80 -h /www"};
    s.units["db"] = RecordedProcess{7, 6, 0, "/bin/db"};
    auto d = decodeProcessState(encodeProcessState(s), "f");
    ASSERT_TRUE(d.ok()) << d.error().describe();
    EXPECT_EQ(d->boot_id, s.boot_id);
    ASSERT_EQ(d->units.size(), 2u);
    EXPECT_EQ(d->units.at("httpd").pid, 412);
    EXPECT_EQ(d->units.at("httpd").pgid, 412);
    EXPECT_EQ(d->units.at("httpd").start_time, 98765u);
    EXPECT_EQ(d->units.at("httpd").command, "/bin/busybox httpd -f -p 80 -h /www");
    EXPECT_EQ(d->units.at("db").pgid, 6);
}

TEST(ProcessState, CorruptFilesAreErrorsNamingTheFile) {
    const char* bad[] = {
        "",
        "{not json",
        "[]",
        R"({"v":2,"boot_id":"b","units":{}})",
        R"({"boot_id":"b","units":{}})",
        R"({"v":1,"units":{}})",
        R"({"v":1,"boot_id":"b"})",
        R"({"v":1,"boot_id":"b","units":[]})",
        R"({"v":1,"boot_id":"b","units":{"x":5}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pgid":1,"start_time":1,"command":"c"}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":0,"pgid":1,"start_time":1,"command":"c"}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":-4,"pgid":1,"start_time":1,"command":"c"}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":99999999999,"pgid":1,"start_time":1,"command":"c"}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":"12","pgid":1,"start_time":1,"command":"c"}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":1,"pgid":1,"start_time":-1,"command":"c"}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":1,"pgid":1,"start_time":1.5,"command":"c"}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":1,"pgid":1,"start_time":1,"command":""}}})",
        R"({"v":1,"boot_id":"b","units":{"x":{"pid":1,"pgid":1,"start_time":1}}})",
    };
    for (const char* text : bad) {
        auto d = decodeProcessState(text, "/run/pcloud-agent/processes.json");
        ASSERT_FALSE(d.ok()) << text;
        EXPECT_EQ(d.error().describe().rfind("/run/pcloud-agent/processes.json: ", 0), 0u)
            << d.error().describe();
    }
}

TEST(ProcStat, ParsesFieldsAfterTheLastParenthesis) {
    // comm with spaces and a ')' of its own; pgrp is field 5, starttime field 22.
    std::string text = "4242 (we) ird (x) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
                       "123456 1000 100 18446744073709551615\n";
    auto s = parseProcStat(text);
    ASSERT_TRUE(s.ok()) << s.error().describe();
    EXPECT_EQ(s->state, 'S');
    EXPECT_EQ(s->pgid, 4240);
    EXPECT_EQ(s->start_time, 123456u);
    EXPECT_FALSE(parseProcStat("4242 no parens S 1 2").ok());
    EXPECT_FALSE(parseProcStat("4242 (x) S 1 2 3").ok());
    EXPECT_FALSE(
        parseProcStat("1 (x) S 1 pg 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12 1 1").ok());
    EXPECT_FALSE(
        parseProcStat("1 (x) S 1 4 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12x 1 1").ok());
}

TEST(ProcStat, ReadsThisProcess) {
    auto s = readProcStat(::getpid());
    ASSERT_TRUE(s);
    EXPECT_EQ(s->state, 'R');
    EXPECT_EQ(s->pgid, ::getpgrp());
    EXPECT_GT(s->start_time, 0u);
    auto again = readProcStat(::getpid());
    ASSERT_TRUE(again);
    EXPECT_EQ(again->start_time, s->start_time);
    auto cmd = readCmdline(::getpid());
    ASSERT_TRUE(cmd);
    ASSERT_FALSE(cmd->empty());
    EXPECT_NE(cmd->front().find("agent_unit_test"), std::string::npos) << cmd->front();
}
