#pragma once
// Apache driver (mod_proxy_balancer). pcloud owns exactly one file, the managed include,
// written in cloudManager's format:
//
//   <Proxy balancer://CLUSTER>
//       BalancerMember http://IP:PORT route=NAME [status=+N | status=+S]
//   </Proxy>
//   ProxyPass /ALIAS balancer://CLUSTER/
//
// Ready members are plain, Drain members get status=+N (drain: only their own sticky
// sessions), Out members status=+S (stopped: nothing). Out members are kept in the file
// so the whole desired set is visible in one place; Out members without an address are
// left out. route=NAME carries the member name (and makes sticky sessions work).
//
// A change is written atomically (fs::writeAtomic), checked with `APACHECTL -t`, then
// made live with `APACHECTL -k graceful`. If the check fails the previous file is put
// back byte for byte (or removed if there was none), nothing is reloaded, Apache keeps
// serving the old configuration, and apply() returns an Error quoting apachectl.

#include "referee/managed_file.h"
#include "referee/referee.h"

namespace pcloud::referee {

// Pure: the managed file for this desired set.
std::string renderApacheConfig(const std::string& cluster, const std::string& alias,
                               const std::vector<Member>& desired);
// Pure: members from a managed file (as written by renderApacheConfig, or hand-edited).
Result<std::vector<ActualMember>> parseApacheConfig(const std::string& text,
                                                    const std::string& file);

class ApacheReferee final : public Referee {
public:
    struct Settings {
        std::string config_file;
        std::string cluster;
        std::string alias = "/";
        // Command prefix; "-t" and "-k graceful" are appended. For a private instance:
        // "apache2 -f /srv/web/httpd.conf -d /srv/web".
        std::string apachectl = "apachectl";
        Millis command_timeout_ms = 15'000;
    };
    explicit ApacheReferee(Settings settings);

    std::string describe() const override;
    Status apply(const std::vector<Member>& desired) override;
    Result<std::vector<ActualMember>> read() override;
    Result<DriftReport> reconcile(const std::vector<Member>& desired) override;

private:
    Settings settings_;
    ManagedFile file_;
};

} // namespace pcloud::referee
