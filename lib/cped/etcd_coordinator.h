#pragma once
// The etcd Coordinator (lib/cped/coordinator.h): lib/etcd's election with a fencing epoch
// and keys under /pcloud/ in etcd, every write a Txn guarded by the leadership. Lives in
// its own library (pcloud_cped_etcd) so only what needs gRPC links it.

#include "common/clock.h"
#include "cped/coordinator.h"

#include <memory>
#include <string>

namespace pcloud::cped {

// `settings.url` is "etcd://h1:2379,h2:2379", or "etcds://..." for TLS with the settings'
// files (the CA is required then; the client certificate and key when etcd checks client
// certificates); `node_name` is stored as the candidate key's value. TLS files given with a
// plain URL are an error: the operator meant TLS. The clock must outlive the coordinator.
Result<std::unique_ptr<Coordinator>>
makeEtcdCoordinator(const ClusterSettings& settings, const Clock& clock, std::int64_t ttl_s = 2);

} // namespace pcloud::cped
