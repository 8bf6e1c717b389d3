// cped: the pcloud control daemon. Everything lives in lib/cped (cped_app.cc).
#include "cped/cped_app.h"
#ifdef PCLOUD_WITH_ETCD
#include "cped/etcd_coordinator.h"
#endif

int main(int argc, char** argv) {
#ifdef PCLOUD_WITH_ETCD
    return pcloud::cped::runCped(
        argc, argv, [](const pcloud::cped::ClusterSettings& settings, const pcloud::Clock& c) {
            return pcloud::cped::makeEtcdCoordinator(settings, c, settings.lease_ttl_s);
        });
#else
    return pcloud::cped::runCped(argc, argv);
#endif
}
