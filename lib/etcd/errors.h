#pragma once
// What etcd's error messages mean, for code that must not link the gRPC client (cped's pure
// retry rule, lib/cped/coordinator.h) as well as for the client itself.

#include <string>

namespace pcloud::etcd {

// Whether an error (a call's message, "etcd EP: CALL: CODE: ...") says that the member could
// not serve the request, not that etcd refused it: it has no raft leader, its leader changed
// or it stopped (removed from the cluster, shutting down), or the request timed out inside
// etcd. The request may or may not have been applied; the next call goes to another member.
inline bool memberCouldNotServe(const std::string& error) {
    for (const char* said :
         {"etcdserver: no leader", "etcdserver: not leader", "etcdserver: leader changed",
          "etcdserver: request timed out", "etcdserver: server stopped", "raft: stopped"})
        if (error.find(said) != std::string::npos)
            return true;
    return false;
}

} // namespace pcloud::etcd
