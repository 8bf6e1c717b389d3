#include "bus/address.h"
#include "bus/proton_util.h"

#include <gtest/gtest.h>

namespace pcloud::bus {

TEST(BusAddress, DefaultTopicsAreTheEventsTopicAndItsChildren) {
    auto t = defaultTopicPatterns();
    EXPECT_TRUE(matchesTopic("pcloud.events", t));
    EXPECT_TRUE(matchesTopic("pcloud.events.web", t));
    EXPECT_FALSE(matchesTopic("pcloud.events.", t));
    EXPECT_FALSE(matchesTopic("pcloud.eventsx", t));
    EXPECT_FALSE(matchesTopic("pcloud.cped", t));
    EXPECT_FALSE(matchesTopic("pcloud.reports.node01", t));
}

TEST(BusAddress, StripsRabbitMqPrefixes) {
    std::vector<std::string> p{"/queue/", "/topic/"};
    EXPECT_EQ(stripPrefix("/queue/pcloud.cped", p), "pcloud.cped");
    EXPECT_EQ(stripPrefix("/topic/pcloud.events", p), "pcloud.events");
    EXPECT_EQ(stripPrefix("pcloud.cped", p), "pcloud.cped");
    EXPECT_EQ(stripPrefix("/queue/", p), "/queue/");
}

TEST(BusAddress, ParsesUrls) {
    detail::ParsedUrl u;
    std::string err;
    ASSERT_TRUE(detail::parseUrl("amqp://guest:guest@127.0.0.1:5672", u, err)) << err;
    EXPECT_EQ(u.user, "guest");
    EXPECT_EQ(u.password, "guest");
    EXPECT_EQ(u.hostPort(), "127.0.0.1:5672");
    EXPECT_TRUE(u.loopback());
    detail::ParsedUrl v;
    ASSERT_TRUE(detail::parseUrl("localhost", v, err));
    EXPECT_EQ(v.hostPort(), "localhost:5672");
    detail::ParsedUrl w;
    EXPECT_FALSE(detail::parseUrl("http://127.0.0.1:80", w, err));
    EXPECT_NE(err.find("http"), std::string::npos);
    EXPECT_FALSE(detail::parseUrl("amqp://127.0.0.1:notaport", w, err));
    EXPECT_NE(err.find("notaport"), std::string::npos);
}

} // namespace pcloud::bus
