#pragma once
// Address rules shared by the hub and the client (docs/protocol/bus.md). Pure functions.

#include <string>
#include <string_view>
#include <vector>

namespace pcloud::bus {

// The events topic and its sub-topics; everything else is a point-to-point queue.
inline constexpr std::string_view kEventsTopic = "pcloud.events";
// Prefix of the addresses the hub generates for dynamic receivers (reply addresses).
inline constexpr std::string_view kDynamicPrefix = "pcloud.reply.";
// The application property that marks a message as replaceable (heartbeats).
inline constexpr std::string_view kCoalesceKey = "coalesce-key";

// A topic pattern is an exact address, or ends in '.' and then matches every address that
// starts with it ("pcloud.events." matches "pcloud.events.web").
std::vector<std::string> defaultTopicPatterns();
bool matchesTopic(std::string_view address, const std::vector<std::string>& patterns);

// Removes the first prefix of `prefixes` that `address` starts with (RabbitMQ naming:
// "/queue/pcloud.cped" -> "pcloud.cped"). Returns the address unchanged otherwise.
std::string stripPrefix(std::string_view address, const std::vector<std::string>& prefixes);

} // namespace pcloud::bus
