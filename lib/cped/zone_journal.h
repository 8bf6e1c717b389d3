#pragma once
// The zone's event journal (docs/ha.md "The shared journal"). With cped --cluster the
// events and their seqs are the zone's, not one node's:
//
// - the leader numbers each event after the zone's last one and writes it to etcd first,
//   in one Txn guarded by its term and by the zone's last seq (so two writers can never
//   give one seq to two events), then to its own events.jsonl, then publishes it;
// - a node that becomes leader copies the events it lacks from etcd into its own file
//   before it journals or serves anything, so seqs go on by one across leaders and
//   `events` (and `events --follow` after a reconnect) finds every event wherever it was
//   journaled;
// - etcd keeps the newest kZoneJournalKeep events; older ones stay in the files of the
//   nodes that journaled or copied them.
//
// Keys, under /pcloud/journal/: `last` (the zone's last seq, decimal) and `e/<seq>` (the
// event's journal line; seq zero-padded to 20 digits, so keys sort as numbers).

#include "common/result.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pcloud::cped {

inline constexpr std::uint64_t kZoneJournalKeep = 10'000;
inline constexpr const char* kZoneJournalLastKey = "/pcloud/journal/last";
inline constexpr const char* kZoneJournalEventPrefix = "/pcloud/journal/e/";

// "/pcloud/journal/e/00000000000000000042"
std::string zoneJournalEventKey(std::uint64_t seq);
// The seq of an event key; nullopt when `key` is not one.
std::optional<std::uint64_t> zoneJournalSeqOf(const std::string& key);

struct ZoneJournalHead {
    std::uint64_t last = 0;  // the zone's last seq
    std::uint64_t first = 0; // the oldest seq etcd still holds; last + 1 when it holds none
    bool operator==(const ZoneJournalHead&) const = default;
};

// The zone's journal in its store (etcd); implemented by the etcd Coordinator.
class ZoneJournalStore {
public:
    virtual ~ZoneJournalStore() = default;
    // nullopt when the zone has no journal yet (no `last` key).
    virtual Result<std::optional<ZoneJournalHead>> head() = 0;
    // The events of seqs from..to (inclusive) that the store holds, in order, at most
    // `limit`: (seq, journal line) each.
    virtual Result<std::vector<std::pair<std::uint64_t, std::string>>>
    read(std::uint64_t from, std::uint64_t to, std::size_t limit) = 0;
    // Writes `line` as event `seq`, while this node leads and only if the zone's last seq is
    // seq - 1. A write whose reply was lost and that is sent again finds its own line and
    // succeeds. Errors: "not-leader"/"stale-epoch" as for every guarded write, or
    // "journal-moved: ..." when the zone's last seq is another (this copy is behind).
    virtual Status append(std::uint64_t seq, const std::string& line) = 0;
    // Starts the zone's journal at `last` (this leader's own last seq), only if it has none.
    virtual Status seed(std::uint64_t last) = 0;
};

inline constexpr const char* kJournalMoved = "journal-moved";

// What a new leader does to its copy (local last seq `local`) before it journals: pure.
struct JournalCatchUp {
    enum class Kind {
        UpToDate,
        Seed,            // the zone has no journal: it starts at `local`
        Copy,            // append the zone's events from..to (none when from > to)
        SetAsideThenCopy // the copy has seqs the zone gave to other events (local > last)
    };
    Kind kind = Kind::UpToDate;
    std::uint64_t from = 0;
    std::uint64_t to = 0;
    // Seqs after `local` (or after 0, once set aside) that etcd no longer holds: they are
    // not in this copy.
    std::uint64_t missing = 0;
    bool operator==(const JournalCatchUp&) const = default;
};
// `sameLast`: whether the zone's event of seq `local` is this copy's last event (nullopt when
// etcd no longer holds it, or local is 0). A copy whose last event differs from the zone's
// of the same seq (a node's own journal from before it joined the zone) is set aside too.
JournalCatchUp planJournalCatchUp(std::uint64_t local, const std::optional<ZoneJournalHead>& zone,
                                  std::optional<bool> sameLast);
// "copy seqs 5..9 from the zone's journal; 3 older ones are no longer in etcd", for logs.
std::string describe(const JournalCatchUp& c, std::uint64_t local);

} // namespace pcloud::cped
