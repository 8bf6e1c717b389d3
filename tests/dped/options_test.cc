// dped's command line: every option reads as '--key value' and '--key=value', and a bad
// value is refused with a message naming the option.
#include "dped/runtime.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace pcloud;

namespace {

Result<dped::Options> parse(std::vector<std::string> args) {
    args.insert(args.begin(), "dped");
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    return dped::parseOptions(static_cast<int>(argv.size()), argv.data());
}

TEST(DpedOptions, RefereeReconcileIntervalDefaultsToTenSeconds) {
    auto o = parse({"--deployable", "web"});
    ASSERT_TRUE(o.ok()) << o.error().describe();
    EXPECT_EQ(o->referee_reconcile_ms, 10'000);
}

TEST(DpedOptions, RefereeReconcileIntervalInBothSpellings) {
    auto a = parse({"--deployable", "web", "--referee-reconcile-ms", "500"});
    ASSERT_TRUE(a.ok()) << a.error().describe();
    EXPECT_EQ(a->referee_reconcile_ms, 500);
    auto b = parse({"--deployable=web", "--referee-reconcile-ms=2500"});
    ASSERT_TRUE(b.ok()) << b.error().describe();
    EXPECT_EQ(b->referee_reconcile_ms, 2500);
}

TEST(DpedOptions, BadRefereeReconcileIntervalIsRefusedByName) {
    for (const std::string v : {"", "0", "99", "3600001", "1s", "-500", "5 00"}) {
        auto o = parse({"--deployable", "web", "--referee-reconcile-ms=" + v});
        ASSERT_FALSE(o.ok()) << "accepted '" << v << "'";
        EXPECT_NE(o.error().message.find("--referee-reconcile-ms"), std::string::npos)
            << o.error().message;
        EXPECT_NE(o.error().message.find("'" + v + "'"), std::string::npos) << o.error().message;
    }
    auto missing = parse({"--deployable", "web", "--referee-reconcile-ms"});
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message.find("--referee-reconcile-ms needs a value"),
              std::string::npos)
        << missing.error().message;
}

TEST(DpedOptions, SigningKeyAndCertificateGoTogether) {
    auto both = parse({"--deployable", "web", "--key", "/k.pem", "--cert=/c.pem"});
    ASSERT_TRUE(both.ok()) << both.error().describe();
    EXPECT_EQ(both->key, "/k.pem");
    EXPECT_EQ(both->cert, "/c.pem");
    auto one = parse({"--deployable", "web", "--key", "/k.pem"});
    ASSERT_FALSE(one.ok());
    EXPECT_NE(one.error().message.find("--key and --cert go together"), std::string::npos);
    auto dir = parse({"--deployable", "web", "--pki-dir", "/etc/pcloud/pki"});
    ASSERT_TRUE(dir.ok()) << dir.error().describe();
    EXPECT_EQ(dir->key, "/etc/pcloud/pki/dped.web.key");
    EXPECT_EQ(dir->cert, "/etc/pcloud/pki/dped.web.crt");
    EXPECT_FALSE(parse({"--deployable", "web", "--pki-dir", "/p", "--key", "/k.pem"}).ok());
}

TEST(DpedOptions, EpochIsADecimalAboveZeroInBothSpellings) {
    auto none = parse({"--deployable", "web"});
    ASSERT_TRUE(none.ok()) << none.error().describe();
    EXPECT_EQ(none->epoch, 0u); // unfenced
    auto a = parse({"--deployable", "web", "--epoch", "12"});
    ASSERT_TRUE(a.ok()) << a.error().describe();
    EXPECT_EQ(a->epoch, 12u);
    auto b = parse({"--deployable=web", "--epoch=9223372036854775807"});
    ASSERT_TRUE(b.ok()) << b.error().describe();
    EXPECT_EQ(b->epoch, 9223372036854775807u);
    for (const std::string v : {"", "0", "-1", "+3", "3x", " 3", "0x1f", "9223372036854775808"}) {
        auto o = parse({"--deployable", "web", "--epoch=" + v});
        ASSERT_FALSE(o.ok()) << "accepted '" << v << "'";
        EXPECT_NE(o.error().message.find("option --epoch '" + v + "' is not an epoch"),
                  std::string::npos)
            << o.error().message;
    }
    auto missing = parse({"--deployable", "web", "--epoch"});
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message.find("--epoch needs a value"), std::string::npos)
        << missing.error().message;
}

} // namespace
