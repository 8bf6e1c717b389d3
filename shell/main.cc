// pcloudsh: the pcloud shell. Everything lives in lib/control (shell_app.cc, cli.cc).
#include "control/shell_app.h"

int main(int argc, char** argv) {
    return pcloud::control::runShell(argc, argv);
}
