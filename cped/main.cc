// cped: the pcloud control daemon. Everything lives in lib/cped (cped_app.cc).
#include "cped/cped_app.h"

int main(int argc, char** argv) {
    return pcloud::cped::runCped(argc, argv);
}
