#include "cped/zone_journal.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace pcloud::cped {

std::string zoneJournalEventKey(std::uint64_t seq) {
    char digits[21];
    std::snprintf(digits, sizeof digits, "%020llu", static_cast<unsigned long long>(seq));
    return std::string(kZoneJournalEventPrefix) + digits;
}

std::optional<std::uint64_t> zoneJournalSeqOf(const std::string& key) {
    const std::size_t n = std::strlen(kZoneJournalEventPrefix);
    if (key.size() != n + 20 || key.compare(0, n, kZoneJournalEventPrefix) != 0)
        return std::nullopt;
    std::uint64_t seq = 0;
    const char* begin = key.data() + n;
    const char* end = key.data() + key.size();
    auto [ptr, ec] = std::from_chars(begin, end, seq);
    if (ec != std::errc() || ptr != end || seq == 0)
        return std::nullopt;
    return seq;
}

JournalCatchUp planJournalCatchUp(std::uint64_t local, const std::optional<ZoneJournalHead>& zone,
                                  std::optional<bool> sameLast) {
    JournalCatchUp c;
    if (!zone) {
        c.kind = JournalCatchUp::Kind::Seed;
        return c;
    }
    const bool keep = local <= zone->last && sameLast != false;
    if (keep && local == zone->last)
        return c;
    const std::uint64_t after = keep ? local : 0; // the last seq this copy keeps
    c.kind = keep ? JournalCatchUp::Kind::Copy : JournalCatchUp::Kind::SetAsideThenCopy;
    c.from = std::max(after + 1, zone->first);
    c.to = zone->last;
    c.missing = std::min(c.from, zone->last + 1) - (after + 1);
    return c;
}

std::string describe(const JournalCatchUp& c, std::uint64_t local) {
    const bool some = c.from <= c.to;
    const std::string range = std::to_string(c.from) + ".." + std::to_string(c.to);
    const std::string gone = c.missing == 0
                                 ? ""
                                 : "; " + std::to_string(c.missing) +
                                       " older ones are no longer in etcd and are not in this copy";
    switch (c.kind) {
    case JournalCatchUp::Kind::UpToDate:
        return "this copy has the zone's last seq, " + std::to_string(local);
    case JournalCatchUp::Kind::Seed:
        return "the zone has no journal yet: it starts after this copy's last seq, " +
               std::to_string(local);
    case JournalCatchUp::Kind::Copy:
        return (some ? "copy seqs " + range + " from the zone's journal"
                     : "nothing to copy from the zone's journal (its last seq is " +
                           std::to_string(c.to) + ")") +
               gone;
    case JournalCatchUp::Kind::SetAsideThenCopy:
        return "this copy's last event, seq " + std::to_string(local) +
               (local > c.to ? ", is past the zone's last (" + std::to_string(c.to) + ")"
                             : ", is not the zone's event of that seq") +
               ": its files are set aside, then " +
               (some ? "seqs " + range + " are copied" : std::string("nothing is copied")) + gone;
    }
    return "";
}

} // namespace pcloud::cped
