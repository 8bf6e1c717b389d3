#include "events/event.h"

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::events;

TEST(Event, JsonRoundTrip) {
    Event e{7,        1'795'300'801'123, "dep01", "node01", std::string("httpd"),
            "failed", "monitor failed",  "c-1"};
    auto back = parseLine(toLine(e));
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_EQ(*back, e);
    EXPECT_EQ(toJson(e)["time"], "2026-11-21T22:40:01.123Z");
}

TEST(Event, HumanLine) {
    Event e{7,        1'795'300'801'123, "dep01", "node01", std::string("httpd"),
            "failed", "monitor failed",  ""};
    EXPECT_EQ(formatHuman(e), "2026-11-21T22:40:01.123Z dep01/node01/httpd failed: monitor failed");
    e.service.reset();
    e.assembly.clear();
    e.reason.clear();
    EXPECT_EQ(formatHuman(e), "2026-11-21T22:40:01.123Z dep01 failed");
}

TEST(Event, AcceptsMillisecondTimeAndNoService) {
    auto e = fromJson(nlohmann::json{{"deployable", "d"}, {"state", "started"}, {"time", 5}});
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->time, 5);
    EXPECT_FALSE(e->service.has_value());
    EXPECT_EQ(e->seq, 0u);
}

// Regression (fuzz_journal_line): an integer time past year 9999 was accepted, and its
// journal line (RFC 3339 with an eight-digit year) did not parse back.
TEST(Event, TimeMustFitRfc3339) {
    for (long long t :
         {253'402'300'800'000LL, -62'167'219'200'001LL, 1'764'000'000'000'000'000LL}) {
        auto e = fromJson(nlohmann::json{{"deployable", "d"}, {"state", "s"}, {"time", t}});
        ASSERT_FALSE(e.ok()) << t;
        EXPECT_NE(e.error().message.find("\"time\" is out of range"), std::string::npos);
    }
    EXPECT_FALSE(fromJson(nlohmann::json{{"deployable", "d"},
                                         {"state", "s"},
                                         {"time", 18'446'744'073'709'551'615ULL}})
                     .ok());
    for (long long t : {253'402'300'799'999LL, -62'167'219'200'000LL, 0LL}) {
        auto e = fromJson(nlohmann::json{{"deployable", "d"}, {"state", "s"}, {"time", t}});
        ASSERT_TRUE(e.ok()) << t;
        auto back = parseLine(toLine(*e));
        ASSERT_TRUE(back.ok()) << t << ": " << back.error().message;
        EXPECT_EQ(*back, *e);
    }
}

TEST(Event, RejectsBadInput) {
    EXPECT_FALSE(parseLine("{").ok());
    EXPECT_FALSE(parseLine("[1,2]").ok());
    EXPECT_FALSE(fromJson(nlohmann::json{{"state", "x"}}).ok());      // no deployable
    EXPECT_FALSE(fromJson(nlohmann::json{{"deployable", "d"}}).ok()); // no state
    auto bad = fromJson(nlohmann::json{{"deployable", "d"}, {"state", "s"}, {"time", "yesterday"}});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("time"), std::string::npos);
    EXPECT_FALSE(fromJson(nlohmann::json{{"deployable", 3}, {"state", "s"}}).ok());
    EXPECT_FALSE(fromJson(nlohmann::json{{"deployable", "d"}, {"state", "s"}, {"seq", -1}}).ok());
}
