#pragma once
// The epoch fence (docs/ha.md "Epoch fencing"): the one rule by which a receiver of
// commands (pcloud-node, the agent, dped itself when cped raises its epoch) judges the
// leadership epoch a command carries against the highest epoch it has accepted so far,
// its floor.
//
// - An epoch lower than the floor is stale: a newer leader has acted here since, so the
//   sender lost its leadership; refused, and the floor stays.
// - An epoch equal to the floor is accepted and changes nothing.
// - A higher epoch is accepted and becomes the floor. The receiver persists the new floor
//   before it acts, so that a restarted receiver still refuses the older leader.
// Epoch 0 is the unfenced single node: accepted only while no higher epoch was seen.
//
// Header-only and pure (no I/O, no clock) on purpose: the node, the envelope verifier and
// dped apply it without linking the rest of pcloud_policy.

#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace pcloud::policy {

enum class EpochVerdict {
    Same,  // equal to the floor: accepted, nothing changes
    Raise, // higher: accepted, the floor becomes this epoch
    Stale, // lower: refused, the floor stays
};

inline const char* toString(EpochVerdict v) {
    switch (v) {
    case EpochVerdict::Same:
        return "same";
    case EpochVerdict::Raise:
        return "raise";
    case EpochVerdict::Stale:
        return "stale";
    }
    return "?";
}

struct EpochCheck {
    EpochVerdict verdict = EpochVerdict::Same;
    std::uint64_t floor = 0; // the floor after the check
    bool accepted() const { return verdict != EpochVerdict::Stale; }
};

constexpr EpochCheck checkEpoch(std::uint64_t floor, std::uint64_t epoch) {
    if (epoch < floor)
        return {EpochVerdict::Stale, floor};
    if (epoch == floor)
        return {EpochVerdict::Same, floor};
    return {EpochVerdict::Raise, epoch};
}

// The words of every refusal, naming both numbers and who holds the floor ("this node").
// Starts with "stale epoch " (pcloud-node's reply code is chosen by that prefix).
inline std::string staleEpochMessage(std::uint64_t epoch, std::uint64_t floor,
                                     const std::string& holder) {
    return "stale epoch " + std::to_string(epoch) + ": " + holder + " has accepted epoch " +
           std::to_string(floor) + " (a newer leader has acted)";
}

// The largest epoch anywhere: envelopes and the node protocol carry it as a JSON integer,
// read as a signed 64-bit value.
inline constexpr std::uint64_t kMaxEpoch =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

// An epoch given as text (dped --epoch): decimal digits only, 1..kMaxEpoch; nullopt else.
inline std::optional<std::uint64_t> parseEpoch(std::string_view text) {
    std::uint64_t v = 0;
    if (text.empty() || text.front() < '0' || text.front() > '9')
        return std::nullopt;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v == 0 || v > kMaxEpoch)
        return std::nullopt;
    return v;
}

} // namespace pcloud::policy
