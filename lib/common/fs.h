#pragma once
// File helpers shared by the store, the event journal and the apache referee.

#include "common/result.h"

#include <functional>
#include <string>
#include <sys/types.h>

namespace pcloud::fs {

// Replaces `path` with `contents` atomically: write a fresh temp file next to it
// (PATH.tmp.RANDOM, created with O_CREAT|O_EXCL|O_NOFOLLOW, so a planted file or symlink
// is never written through), fsync it, rename it over PATH, then fsync the directory (an
// error there is returned: the rename may not survive a power cut). A writer killed at
// any point leaves either the old file or the new one, never a half file. The file gets
// `mode` (state files are private: 0600). `beforeRename` is a test hook (simulated crash).
Status writeAtomic(const std::string& path, const std::string& contents,
                   const std::function<bool()>& beforeRename = {}, mode_t mode = 0600);

Result<std::string> readFile(const std::string& path);
bool exists(const std::string& path);
// mkdir -p; created directories get `mode`.
Status makeDirs(const std::string& path, mode_t mode = 0755);
// mkdir -p for a directory only its owner may use (the state dir): parents 0755, the
// directory itself 0700, also when it exists already with a wider mode.
Status makePrivateDir(const std::string& path);

} // namespace pcloud::fs
