// cped: the pcloud control daemon. Everything lives in lib/control (cped_app.cc).
#include "control/cped_app.h"

int main(int argc, char** argv) {
    return pcloud::control::runCped(argc, argv);
}
