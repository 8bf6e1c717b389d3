// pcloud-node: one per hypervisor host. Everything is in lib/node (node_main.h).
#include "node/node_main.h"

int main(int argc, char** argv) {
    return pcloud::node::nodeMain(argc, argv);
}
