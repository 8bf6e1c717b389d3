#include "test_pki.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace pcloud::testpki {
namespace {

void run(const std::string& cmd) {
    std::string full = cmd + " 2>&1";
    FILE* p = ::popen(full.c_str(), "r");
    if (!p)
        throw std::runtime_error("cannot run: " + cmd);
    std::string out;
    char buf[512];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p))
        out.append(buf, n);
    int rc = ::pclose(p);
    if (rc != 0)
        throw std::runtime_error("openssl step failed (status " + std::to_string(rc) + "): " + cmd +
                                 "\n" + out);
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw std::runtime_error("cannot read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string genKey(TestPki::KeyType t, const std::string& out) {
    switch (t) {
    case TestPki::KeyType::Ed25519:
        return "openssl genpkey -algorithm ed25519 -out '" + out + "'";
    case TestPki::KeyType::P256:
        return "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '" + out + "'";
    case TestPki::KeyType::P384:
        return "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out '" + out + "'";
    }
    return {};
}

} // namespace

TestPki::TestPki(const std::string& tag) {
    char tmpl[] = "/tmp/pcloud-test-pki-XXXXXX";
    if (!::mkdtemp(tmpl))
        throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    run(genKey(KeyType::Ed25519, dir_ + "/ca.key"));
    ::chmod((dir_ + "/ca.key").c_str(), 0600);
    run("openssl req -x509 -new -key '" + dir_ + "/ca.key' -subj '/CN=pcloud test CA " + tag +
        "' -days 3650 -out '" + dir_ + "/ca.crt'");
}

TestPki::~TestPki() {
    if (!dir_.empty())
        std::system(("rm -rf '" + dir_ + "'").c_str());
}

std::string TestPki::caPem() const {
    return slurp(caCert());
}

std::string TestPki::base(const std::string& identity) const {
    std::string file = identity;
    for (auto& c : file)
        if (c == ':')
            c = '.';
    return dir_ + "/" + file;
}

void TestPki::issue(const std::string& identity, KeyType type, int days, const std::string& cn) {
    const std::string b = base(identity);
    run(genKey(type, b + ".key"));
    ::chmod((b + ".key").c_str(), 0600);
    run("openssl req -new -key '" + b + ".key' -subj '/CN=" + (cn.empty() ? identity : cn) +
        "' -out '" + b + ".csr'");
    run("openssl x509 -req -in '" + b + ".csr' -CA '" + dir_ + "/ca.crt' -CAkey '" + dir_ +
        "/ca.key' -CAcreateserial -days " + std::to_string(days) + " -out '" + b + ".crt'");
}

std::string TestPki::keyPath(const std::string& identity) const {
    return base(identity) + ".key";
}
std::string TestPki::certPath(const std::string& identity) const {
    return base(identity) + ".crt";
}
std::string TestPki::keyPem(const std::string& identity) const {
    return slurp(keyPath(identity));
}
std::string TestPki::certPem(const std::string& identity) const {
    return slurp(certPath(identity));
}

} // namespace pcloud::testpki
