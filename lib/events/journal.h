#pragma once
// EventJournal: the append-only record of every event, STATE_DIR/events.jsonl, one JSON
// object per line. cped is its only writer; it assigns `seq`.
//
// Durability: each append is one write(2) of a whole line followed by fdatasync(2) (unless
// JournalOptions::sync_each_append is false), so an event that was published has been on
// disk first. A crash mid-write leaves at most one torn last line; open() ignores it with a
// warning, terminates it with a newline, and continues the seq after the last good line.
//
// Rotation: before an append, when the current file holds at least one line and either
// its size would exceed max_bytes or its first event is older than max_age, the file is
// renamed events.jsonl.1 (older ones shift to .2, .3 ...) and a new file is started.
// Only keep_files rotated files are kept; older ones are deleted.
//
// seq is monotonic across restarts: open() recovers the last seq from the tail of the
// newest non-empty file (the current one, else .1, .2 ...).

#include "common/clock.h"
#include "common/result.h"
#include "events/event.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::events {

struct JournalOptions {
    std::uint64_t max_bytes = 16 * 1024 * 1024; // rotate when the file would exceed this
    Millis max_age = 7LL * 24 * 3600 * 1000;    // rotate when its first event is older
    int keep_files = 5;                         // rotated files kept: events.jsonl.1..K
    bool sync_each_append = true;               // fdatasync after every line
};

struct ReplayQuery {
    std::uint64_t since_seq = 0;      // events with seq > since_seq
    std::optional<Millis> since_time; // and time >= since_time
    std::string deployable;           // empty = every deployable
    std::size_t limit = 0;            // 0 = no limit
    // With a limit: true keeps the newest `limit` matches (a tail, for `events` without
    // --since); false keeps the oldest `limit` (a page, for replay from a point).
    bool newest = false;
};

struct ReplayResult {
    std::vector<Event> events;
    bool more = false;          // the limit cut off further matches
    std::uint64_t last_seq = 0; // the journal's last seq when the replay was read
};

class EventJournal {
public:
    static Result<std::unique_ptr<EventJournal>> open(std::string dir, JournalOptions options,
                                                      const Clock& clock);
    ~EventJournal();
    EventJournal(const EventJournal&) = delete;
    EventJournal& operator=(const EventJournal&) = delete;

    // Assigns the next seq (and the time, when 0), writes the line, and returns the event
    // as written. Thread-safe.
    Result<Event> append(Event e);
    // Writes an event numbered elsewhere (a zone's journal in etcd, docs/ha.md "The shared
    // journal"): refused unless its seq is after the last one here and it has a time. A
    // seq may skip some (events this copy never had).
    Result<Event> appendNumbered(Event e);
    // Renames events.jsonl (and events.jsonl.N) to events-TAG.jsonl (.N) and starts an empty
    // journal (last seq 0): a copy whose seqs another journal has given to other events.
    // Returns the new name of the current file.
    Result<std::string> setAside(const std::string& tag);
    Result<ReplayResult> replay(const ReplayQuery& q) const;
    std::uint64_t lastSeq() const;
    // Problems found while reading (torn or garbage lines), for the daemon to log.
    std::vector<std::string> takeWarnings();

    std::string currentPath() const;
    std::string rotatedPath(int n) const;

private:
    EventJournal(std::string dir, JournalOptions options, const Clock& clock);
    Status openCurrent();
    Status rotate();
    Result<Event> writeLocked(Event e); // e's seq and time are set; mutex_ held
    void warn(std::string w) const;

    std::string dir_;
    JournalOptions options_;
    const Clock& clock_;
    mutable std::mutex mutex_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
    std::optional<Millis> first_time_; // time of the current file's first event
    std::uint64_t last_seq_ = 0;
    mutable std::vector<std::string> warnings_;
};

} // namespace pcloud::events
