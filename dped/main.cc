// dped: the per-deployable policy daemon. Everything is in lib/dped (runtime.h).
#include "dped/runtime.h"

int main(int argc, char** argv) {
    return pcloud::dped::dpedMain(argc, argv);
}
