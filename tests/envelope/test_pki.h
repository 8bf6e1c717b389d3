#pragma once
// A throwaway PKI for tests, made with the real `openssl` CLI in a temp dir, with the
// conventions of pcloud's PKI (docs/security.md): DIR/ca.crt, DIR/<kind>.<name>.{crt,key}
// (key 0600), the identity `kind:name` in the certificate CN, Ed25519 keys.
#include <string>

namespace pcloud::testpki {

class TestPki {
public:
    // Makes DIR/ca.{key,crt} (CN "pcloud test CA <tag>"). Throws std::runtime_error naming
    // the openssl command and its output when a step fails (no openssl: a loud failure).
    explicit TestPki(const std::string& tag = "a");
    ~TestPki(); // removes the directory
    TestPki(const TestPki&) = delete;
    TestPki& operator=(const TestPki&) = delete;

    const std::string& dir() const { return dir_; }
    std::string caCert() const { return dir_ + "/ca.crt"; }
    std::string caPem() const;

    enum class KeyType { Ed25519, P256, P384 };
    // Issues DIR/<kind>.<name>.{key,crt} for identity "kind:name" (the file name has '.' for
    // ':'), valid for `days` from now. `cn` overrides the CN (default: the identity).
    void issue(const std::string& identity, KeyType type = KeyType::Ed25519, int days = 365,
               const std::string& cn = {});
    std::string keyPath(const std::string& identity) const;
    std::string certPath(const std::string& identity) const;
    std::string keyPem(const std::string& identity) const;
    std::string certPem(const std::string& identity) const;

private:
    std::string base(const std::string& identity) const;
    std::string dir_;
};

} // namespace pcloud::testpki
