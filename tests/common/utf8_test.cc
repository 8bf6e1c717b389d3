// utf8Excerpt: outside text cut to fit a message must still be UTF-8, or the JSON reply that
// carries it cannot be serialised (nlohmann::json::dump() throws type_error 316).
#include "common/utf8.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace pcloud;

TEST(Utf8Excerpt, CutsOnlyBetweenCharacters) {
    // "é" is 2 bytes: a 3-byte limit keeps "aé" whole, a 2-byte one only "a".
    EXPECT_EQ(utf8Excerpt("a\xC3\xA9z", 3), "a\xC3\xA9...");
    EXPECT_EQ(utf8Excerpt("a\xC3\xA9z", 2), "a...");
    EXPECT_EQ(utf8Excerpt("a\xC3\xA9z", 4), "a\xC3\xA9z");
    // A 4-byte character (U+1F600) is never split either.
    EXPECT_EQ(utf8Excerpt("\xF0\x9F\x98\x80!", 3), "...");
    EXPECT_EQ(utf8Excerpt("short", 64), "short");
    EXPECT_EQ(utf8Excerpt("", 10), "");
}

TEST(Utf8Excerpt, ReplacesBytesThatAreNotUtf8) {
    EXPECT_EQ(utf8Excerpt("ok\x80\xFFok", 64), "ok??ok");
    EXPECT_EQ(utf8Excerpt("\xC3", 64), "?");           // a character cut off at the end
    EXPECT_EQ(utf8Excerpt("\xED\xA0\x80", 64), "???"); // a surrogate
}

// The shape the fuzzer found (fuzz_command_api, regress-referee-name-cut.json): a name over
// the 64-byte limit whose 64th byte is inside a character. Any excerpt serialises.
TEST(Utf8Excerpt, EveryExcerptOfAnyTextSerialises) {
    std::string text = std::string(62, 'x') + "\xE8\x8F\x9E" + ".tail\x80\xC3";
    for (std::size_t max = 0; max < text.size() + 2; ++max) {
        auto e = utf8Excerpt(text, max);
        EXPECT_TRUE(isValidUtf8(e)) << max;
        EXPECT_NO_THROW((void)nlohmann::json(e).dump()) << max;
        EXPECT_LE(e.size(), max + 3) << max; // at most the limit, then "..."
    }
}
