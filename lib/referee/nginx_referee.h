#pragma once
// nginx driver (open source nginx, ngx_http_upstream_module). pcloud owns exactly one
// file, the managed include, holding one upstream block:
//
//   upstream UPSTREAM {
//       server IP:PORT; # pcloud:member=NAME
//       server IP:PORT down; # pcloud:member=NAME pcloud:drain
//       server IP:PORT down; # pcloud:member=NAME
//   }
//
// The operator's nginx.conf includes it inside http {} and proxies to it with
// `proxy_pass http://UPSTREAM;`. Ready members are plain servers, Out members are
// `down`. Open source nginx has no drain state, so Drain members are `down` too and
// carry a `pcloud:drain` marker so read() reports Drain back; requests already in flight
// finish on the old worker processes during the graceful reload. Out members without an
// address are left out. nginx wants at least one server in an upstream: with none to
// write, the block holds `server 127.0.0.1:1 down; # pcloud:placeholder`.
//
// A change is written atomically (fs::writeAtomic), checked with `NGINX -t`, then made
// live with `NGINX -s reload`. If the check fails the previous file is put back byte for
// byte (or removed if there was none), nothing is reloaded, nginx keeps serving the old
// configuration, and apply() returns an Error quoting nginx.

#include "referee/managed_file.h"
#include "referee/referee.h"

namespace pcloud::referee {

// Pure: the managed file for this desired set.
std::string renderNginxConfig(const std::string& upstream, const std::vector<Member>& desired);
// Pure: members from a managed file (as written by renderNginxConfig, or hand-edited).
// A file that is not one `upstream UPSTREAM { ... }` block of one-line statements is an
// Error naming the file and line.
Result<std::vector<ActualMember>>
parseNginxConfig(const std::string& text, const std::string& upstream, const std::string& file);

class NginxReferee final : public Referee {
public:
    struct Settings {
        std::string config_file;
        std::string upstream;
        // Command prefix; "-t" and "-s reload" are appended. For a private instance:
        // "nginx -p /srv/web -c /srv/web/nginx.conf".
        std::string nginx = "nginx";
        Millis command_timeout_ms = 15'000;
    };
    explicit NginxReferee(Settings settings);

    std::string describe() const override;
    Status apply(const std::vector<Member>& desired) override;
    Result<std::vector<ActualMember>> read() override;
    Result<DriftReport> reconcile(const std::vector<Member>& desired) override;

private:
    Settings settings_;
    ManagedFile file_;
};

} // namespace pcloud::referee
