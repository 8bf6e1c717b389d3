#pragma once
// SystemdBackend: follows systemd units over the system D-Bus with sdbus-c++, without a
// polling loop. Manager.Subscribe() makes systemd emit signals; each watched unit's object
// gets a PropertiesChanged match (ActiveState/SubState on the Unit interface, Result/MainPID/
// ExecMain* on the Service interface). Jobs go through StartUnit/StopUnit/RestartUnit
// ("replace") and finish when JobRemoved names their job. Reloading(false), UnitNew and a new
// owner of org.freedesktop.systemd1 (daemon-reexec) re-read the watched units. A lost bus is
// reopened with backoff and the full state is resent.
//
// The sdbus connection runs no thread of its own: its fd and timeout go into the agent's
// poll() and processPendingRequest() runs when it is ready.

#include "agent/backend.h"
#include "common/clock.h"

#include <sdbus-c++/sdbus-c++.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace pcloud::agent {

// "nginx" -> "nginx.service"; names with a known unit suffix are kept.
std::string normalizeUnitName(const std::string& name);

class SystemdBackend : public UnitBackend {
public:
    // Opens the bus at construction; if that fails the backend retries from the loop.
    explicit SystemdBackend(const Clock& clock);
    ~SystemdBackend() override;

    const char* name() const override { return "systemd"; }
    void setWatch(const std::vector<std::string>& units,
                  const std::map<std::string, std::string>& commands) override;
    std::vector<std::string> watched() const override { return order_; }
    std::optional<proto::UnitState> state(const std::string& unit) const override;
    void runJob(JobKind kind, const std::string& unit, JobCallback done) override;

    bool busConnected() const { return bus_ != nullptr; }
    bool settled() const override { return !bus_ || pending_reads_ == 0; }

    void prepare(PollSet& ps, Millis now) override;
    void dispatch(const PollSet& ps, Millis now) override;

private:
    struct Unit {
        std::string watched_name; // as the controller wrote it; used in reports
        std::string systemd_name; // normalized
        std::string path;         // D-Bus object path, empty until resolved
        std::unique_ptr<sdbus::IProxy> proxy;
        sdbus::Slot match;
        proto::UnitState st;
        int exec_code = 0; // CLD_EXITED / CLD_KILLED / CLD_DUMPED
        int exec_status = 0;
    };

    bool connect();
    void disconnect(const std::string& why);
    void resolve(Unit& u);
    void resolveAll();
    void onPropertiesChanged(const std::string& unit, sdbus::Message& msg);
    void onManagerSignal(sdbus::Message& msg);
    void applyProps(Unit& u, const std::map<std::string, sdbus::Variant>& props);
    void finishState(Unit& u);
    void emit(Unit& u);
    void processBus();
    void failAllJobs(const std::string& why);

    const Clock& clock_;
    std::unique_ptr<sdbus::IConnection> bus_;
    std::unique_ptr<sdbus::IProxy> manager_;
    sdbus::Slot manager_match_;
    sdbus::Slot owner_match_;
    std::map<std::string, Unit> units_; // by watched name
    std::vector<std::string> order_;
    std::map<std::string, JobCallback> jobs_; // job object path -> caller
    std::set<std::string> to_resolve_;        // watched names to re-read after processing
    std::set<std::string> pending_emit_;      // Service-only changes to report
    bool resolve_all_ = false;
    bool resync_ = false;
    int pending_reads_ = 0; // unit readings whose replies have not arrived yet
    std::size_t poll_index_ = 0;
    bool polled_ = false;
    Millis reconnect_at_ = 0;
    Millis backoff_ = 100;
};

} // namespace pcloud::agent
