// pcloudsh: the pcloud shell. Everything lives in lib/shell (shell_app.cc, cli.cc).
#include "shell/shell_app.h"

int main(int argc, char** argv) {
    return pcloud::shell::runShell(argc, argv);
}
