// The epoch fence (lib/policy/epoch_fence.h) as transcripts: a receiver starts at a floor,
// commands arrive with their epochs, and each line is the verdict and the floor after it.
// pcloud-node's EpochFloor, the agent's envelope check and dped's raise all use this rule.
#include "policy/epoch_fence.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

using namespace pcloud::policy;

namespace {

std::string run(std::uint64_t floor, const std::vector<std::uint64_t>& epochs) {
    std::ostringstream out;
    out << "floor=" << floor << "\n";
    for (auto e : epochs) {
        auto c = checkEpoch(floor, e);
        out << "epoch " << e << " -> " << toString(c.verdict) << " floor=" << c.floor;
        if (!c.accepted())
            out << " (" << staleEpochMessage(e, floor, "r") << ")";
        out << "\n";
        floor = c.floor;
    }
    return out.str();
}

} // namespace

TEST(EpochFence, UnfencedSingleNodeStaysAcceptedUntilAHigherEpochIsSeen) {
    EXPECT_EQ(run(0, {0, 0, 3, 0, 3}),
              "floor=0\n"
              "epoch 0 -> same floor=0\n"
              "epoch 0 -> same floor=0\n"
              "epoch 3 -> raise floor=3\n"
              "epoch 0 -> stale floor=3 (stale epoch 0: r has accepted epoch 3 (a newer "
              "leader has acted))\n"
              "epoch 3 -> same floor=3\n");
}

TEST(EpochFence, AnOldLeaderIsRefusedOnceTheNewOneActedAndTheFloorNeverGoesDown) {
    EXPECT_EQ(run(5, {4, 5, 9, 8, 4, 10}),
              "floor=5\n"
              "epoch 4 -> stale floor=5 (stale epoch 4: r has accepted epoch 5 (a newer "
              "leader has acted))\n"
              "epoch 5 -> same floor=5\n"
              "epoch 9 -> raise floor=9\n"
              "epoch 8 -> stale floor=9 (stale epoch 8: r has accepted epoch 9 (a newer "
              "leader has acted))\n"
              "epoch 4 -> stale floor=9 (stale epoch 4: r has accepted epoch 9 (a newer "
              "leader has acted))\n"
              "epoch 10 -> raise floor=10\n");
}

TEST(EpochFence, BoundariesOfTheRange) {
    constexpr std::uint64_t max = ~std::uint64_t{0};
    static_assert(checkEpoch(max, max).verdict == EpochVerdict::Same);
    static_assert(checkEpoch(max - 1, max).verdict == EpochVerdict::Raise);
    static_assert(checkEpoch(max, max - 1).verdict == EpochVerdict::Stale);
    static_assert(checkEpoch(max, 0).floor == max);
    EXPECT_EQ(staleEpochMessage(1, 2, "this node"),
              "stale epoch 1: this node has accepted epoch 2 (a newer leader has acted)");
}

TEST(EpochFence, EpochTextIsADecimalFromOneToTheLargestSignedValue) {
    EXPECT_EQ(parseEpoch("1"), 1u);
    EXPECT_EQ(parseEpoch("42"), 42u);
    EXPECT_EQ(parseEpoch("9223372036854775807"), kMaxEpoch);
    for (const char* bad : {"", "0", "-1", "+1", " 1", "1 ", "1x", "0x10", "1e3",
                            "9223372036854775808", "99999999999999999999999"})
        EXPECT_FALSE(parseEpoch(bad).has_value()) << "'" << bad << "'";
}
