#pragma once
// Shared by the RabbitMQ tests (rabbitmq_test.cc, rabbitmq_tls_test.cc): whether the broker
// of scripts/setup-rabbitmq.sh answers, and whether it must.
#include "support/test_support.h"

#include <cstdlib>
#include <string>
#include <unistd.h>

namespace pcloud::bus::test {

inline bool portAnswers(int port) {
    int fd = testsupport::connectLoopback(port);
    if (fd < 0)
        return false;
    ::close(fd);
    return true;
}

// With PCLOUD_TEST_RABBITMQ=1 (the README test command sets it) the broker was set up on
// purpose, so its absence is a failure, not a skip.
inline bool required() {
    const char* v = std::getenv("PCLOUD_TEST_RABBITMQ");
    return v && std::string(v) == "1";
}

} // namespace pcloud::bus::test
