#pragma once
// One exit-status enum for every pcloud executable (Pacemaker's crm_exit_t idea), so that
// cped can tell "config error: do not respawn" from "crashed: respawn with backoff".

namespace pcloud {

enum class ExitCode : int {
    Ok = 0,
    Error = 1,        // a runtime failure reported to the user (e.g. cped said no)
    Usage = 2,        // bad command line or bad input file: fix the input, do not retry
    Config = 78,      // configuration/state invalid (EX_CONFIG): supervisor must NOT respawn
    Unavailable = 69, // a dependency (broker, libvirtd) is unreachable: respawn with backoff
    Software = 70,    // internal error / broken invariant: respawn with backoff
    Locked = 75,      // another instance holds the lock (EX_TEMPFAIL): do not start a second
};

constexpr int toInt(ExitCode c) {
    return static_cast<int>(c);
}

// Whether a supervisor should start a process again after it exited with this status.
constexpr bool shouldRespawn(int status) {
    return status != toInt(ExitCode::Ok) && status != toInt(ExitCode::Config) &&
           status != toInt(ExitCode::Usage) && status != toInt(ExitCode::Locked);
}

} // namespace pcloud
