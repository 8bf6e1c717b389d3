#pragma once
// HAProxy driver: the runtime API (stats socket, level admin) of HAProxy 2.6.
// Ready/Drain/Out map to `set server B/S state ready|drain|maint`; members that come and
// go are `add server` (created in maint, then set to their state) and `del server`
// (after maint; HAProxy refuses while the server still has connections, in which case
// it stays in maint, receives nothing, and the next apply tries again). Every change of
// one apply() goes in ONE line, commands separated by ';', on ONE connection, followed
// by `show servers state B` whose answer verifies the result.
//
// pcloud owns the whole backend: servers in it that are not in the desired set are
// taken out. HAProxy forgets runtime changes on reload/restart; reconcile() notices
// (show info Pid / Start_time_sec changed) and re-applies the desired state.

#include "referee/referee.h"

#include <optional>

namespace pcloud::referee {

struct HaproxyInfo {
    long pid = 0;
    long long start_time_sec = 0;
    bool operator==(const HaproxyInfo&) const = default;
};

// Pure parsers/planners, tested without a socket.
// Parses `show servers state B` (format version 1) into members sorted by name.
Result<std::vector<ActualMember>> parseServersState(const std::string& text,
                                                    const std::string& backend);
Result<HaproxyInfo> parseShowInfo(const std::string& text);
// The runtime API commands that turn `actual` into `desired`, in order.
std::vector<std::string> planHaproxyCommands(const std::string& backend,
                                             const std::vector<Member>& desired,
                                             const std::vector<ActualMember>& actual);

class HaproxyReferee final : public Referee {
public:
    HaproxyReferee(std::string socketPath, std::string backend, Millis ioTimeoutMs);

    std::string describe() const override;
    Status apply(const std::vector<Member>& desired) override;
    Result<std::vector<ActualMember>> read() override;
    Result<DriftReport> reconcile(const std::vector<Member>& desired) override;

    // Sends `commands` as one ';'-separated line on one connection; one answer each.
    Result<std::vector<std::string>> send(const std::vector<std::string>& commands);

private:
    struct Snapshot {
        HaproxyInfo info;
        std::vector<ActualMember> members;
    };
    Result<Snapshot> snapshot();
    Status converge(const std::vector<Member>& desired, const std::vector<ActualMember>& actual);

    std::string socket_;
    std::string backend_;
    Millis io_timeout_ms_;
    std::optional<HaproxyInfo> last_info_; // as of the last clean reconcile
};

} // namespace pcloud::referee
