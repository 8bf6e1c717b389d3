#pragma once
// For the tests and benches that stand in for cped on pcloud.journal: dped submits each event
// as a request and sends it again until cped answers that it journaled it (journal_gate.h),
// so a stand-in must answer the same way, or it would see every event again and again.

#include "bus/client.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace pcloud::testsupport {

// Serves pcloud.journal on `client`: every submission goes to `take`, then is answered
// journaled. Returns the id for waitSubscribed().
inline std::uint64_t serveJournal(bus::Client& client,
                                  std::function<void(const bus::Message&)> take) {
    return client.serve(
        "pcloud.journal",
        [take = std::move(take)](const bus::Message& m) -> std::optional<std::string> {
            take(m);
            return std::string(R"({"v":1,"type":"reply","ok":true,"result":{}})");
        });
}

} // namespace pcloud::testsupport
