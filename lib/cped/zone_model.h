#pragma once
// The zone's shared model (docs/ha.md "The shared model"). With cped --cluster the operator's
// model and desired state live in etcd as one snapshot at /pcloud/model/snapshot:
//
// - the leader writes it after every command that changed them, through the Coordinator's
//   guarded put, so only a node that still leads can write it;
// - a node that becomes leader reads it before it serves or starts a dped, and takes it
//   when it differs from its own files (which it then rewrites), so whichever host leads
//   next runs the same deployables;
// - the first leader of a zone whose etcd holds none writes its own.
//
// The snapshot holds the files' text as the XML store and DesiredState write them:
//   {"v":1,"generation":7,"epoch":42,"writer":"h1",
//    "files":{"db_deployable.xml":"...","db_assemblies.xml":"...","desired.json":"...",
//             "db_hosts.xml":"..." (only once a host exists)}}
// `generation` counts the writes (a leader goes on from the one it took); `epoch` and
// `writer` say who wrote it.

#include "common/result.h"
#include "cped/desired_state.h"
#include "model/model.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace pcloud::cped {

inline constexpr const char* kZoneModelKey = "model/snapshot"; // under /pcloud/
// etcd refuses a request over 1.5 MiB by default (--max-request-bytes).
inline constexpr std::size_t kZoneModelMaxBytes = 1024 * 1024;

struct ZoneModel {
    std::uint64_t generation = 0;
    std::int64_t epoch = 0;
    std::string writer;
    model::Model model;
    DesiredState desired;
};

// The files of `model` and `desired` as one canonical JSON text (the snapshot's "files"):
// equal texts, equal content.
std::string zoneModelFiles(const model::Model& model, const DesiredState& desired);

// The snapshot of `files` (zoneModelFiles) written as `generation` by `writer` at `epoch`;
// an error when it is larger than kZoneModelMaxBytes.
Result<std::string> formatZoneModel(const std::string& files, std::uint64_t generation,
                                    std::int64_t epoch, const std::string& writer);

// Reads a snapshot. Errors name `where` (the etcd key) and what is wrong with it: not JSON,
// a field missing or of the wrong type, or a file that does not load, named with its line
// as the store names it ("etcd /pcloud/model/snapshot: db_assemblies.xml:3: ...").
Result<ZoneModel> parseZoneModel(const std::string& text, const std::string& where);

} // namespace pcloud::cped
