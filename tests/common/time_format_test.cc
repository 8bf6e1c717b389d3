#include "common/time_format.h"

#include <gtest/gtest.h>

using namespace pcloud;

TEST(TimeFormat, Rfc3339RoundTrip) {
    Millis t = 1'795'300'801'123;
    std::string s = formatRfc3339(t);
    EXPECT_EQ(s.size(), 24u);
    EXPECT_EQ(s.back(), 'Z');
    auto back = parseRfc3339(s);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_EQ(*back, t);
}

TEST(TimeFormat, Rfc3339RejectsGarbageAndOffsets) {
    EXPECT_FALSE(parseRfc3339("yesterday").ok());
    EXPECT_FALSE(parseRfc3339("2026-11-21T22:40:01+02:00").ok());
    EXPECT_FALSE(parseRfc3339("2026-13-21T22:40:01Z").ok());
    EXPECT_FALSE(parseRfc3339("2026-11-21T24:40:01Z").ok());
    EXPECT_FALSE(parseRfc3339("-001-11-21T22:40:01Z").ok());
    EXPECT_EQ(formatRfc3339(kMaxRfc3339Ms), "9999-12-31T23:59:59.999Z");
    EXPECT_EQ(formatRfc3339(kMinRfc3339Ms), "0000-01-01T00:00:00.000Z");
    EXPECT_EQ(*parseRfc3339("9999-12-31T23:59:59.999Z"), kMaxRfc3339Ms);
    EXPECT_EQ(*parseRfc3339("0000-01-01T00:00:00Z"), kMinRfc3339Ms);
}

TEST(TimeFormat, Durations) {
    EXPECT_EQ(*parseDuration("500ms"), 500);
    EXPECT_EQ(*parseDuration("30s"), 30'000);
    EXPECT_EQ(*parseDuration("30"), 30'000);
    EXPECT_EQ(*parseDuration("5m"), 300'000);
    EXPECT_EQ(*parseDuration("2h"), 7'200'000);
    EXPECT_EQ(*parseDuration("INFINITY"), kInfinite);
    EXPECT_FALSE(parseDuration("5 parsecs").ok());
    EXPECT_FALSE(parseDuration("-3s").ok());
    // Regression (fuzz_store_xml): seconds that overflow Millis once multiplied.
    auto big = parseDuration("3644444444444444440");
    ASSERT_FALSE(big.ok());
    EXPECT_NE(big.error().message.find("longer than 100 years"), std::string::npos);
    EXPECT_FALSE(parseDuration("9223372036854775807ms").ok());
    EXPECT_FALSE(parseDuration("106752d").ok());
    EXPECT_EQ(*parseDuration("36600d"), kMaxDurationMs);
    EXPECT_FALSE(parseDuration("").ok());
    EXPECT_EQ(formatDuration(300'000), "5m");
    EXPECT_EQ(formatDuration(1'500), "1500ms");
    EXPECT_EQ(formatDuration(kInfinite), "INFINITY");
}
