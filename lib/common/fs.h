#pragma once
// File helpers shared by the store, the event journal and the apache referee.

#include "common/result.h"

#include <functional>
#include <string>

namespace pcloud::fs {

// Replaces `path` with `contents` atomically: write PATH.tmp.PID, fsync it, rename it over
// PATH, then fsync the directory. A writer killed at any point leaves either the old file
// or the new one, never a half file. `beforeRename` is a test hook (simulated crash).
Status writeAtomic(const std::string& path, const std::string& contents,
                   const std::function<bool()>& beforeRename = {});

Result<std::string> readFile(const std::string& path);
bool exists(const std::string& path);
// mkdir -p
Status makeDirs(const std::string& path);

} // namespace pcloud::fs
