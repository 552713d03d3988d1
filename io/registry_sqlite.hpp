// Private to io/: the SQLite pieces of the registry store that are not the store itself: the
// schema and its version, the connection set-up, the manifest encoding, the durable creation of
// the registry directory and SQLite's error category. Engine code includes io/registry_store.hpp.
//
// Thread: any, on one connection at a time (see io/registry_store.cpp).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "base/expected.hpp"

namespace chunkd::io::detail {

inline constexpr int kBusyTimeoutMs = 5000;

std::error_code sqlite_error(int code);

// ": <sqlite3_errmsg>" when it says more than the result code's own message, else "": a detail
// suffix that does not repeat what base::Error::message() appends anyway.
std::string sqlite_cause(sqlite3* db, int code);

// Unsigned 64-bit values are stored as the signed integer with the same bits.
inline sqlite3_int64 to_sql(std::uint64_t value) { return static_cast<sqlite3_int64>(value); }
inline std::uint64_t from_sql(sqlite3_int64 value) { return static_cast<std::uint64_t>(value); }

std::string column_text(sqlite3_stmt* stmt, int column);

// A manifest is stored as a blob of little-endian 64-bit hashes.
void encode_manifest(const std::vector<std::uint64_t>& manifest, std::vector<unsigned char>& out);
// False when the blob is not a whole number of hashes.
bool decode_manifest(const void* data, int bytes, std::vector<std::uint64_t>& out);

// streams.allowed_things: NULL for no list, else the patterns joined by '\n' (an empty list is
// ""). REQUIRES: no pattern contains '\n', and a one-pattern list's pattern is not empty (the
// control API's validation guarantees both; asserted).
std::optional<std::string> join_patterns(const std::optional<std::vector<std::string>>& patterns);
std::vector<std::string> split_patterns(std::string_view joined);

// Configures a fresh connection (WAL, synchronous=FULL, foreign keys) and brings the schema to
// the version this chunkd writes. Fails with a sqlite_category() code; the detail names `path`
// and the step, and says what to do when the file is damaged or from another release.
Expected<void> prepare_database(sqlite3* db, const std::string& path);

// Opens (creating `dir` durably and the file if needed) <dir>/registry.sqlite3 and prepares it
// (prepare_database). `user` names who opens it in errors ("" or " for jobs"). The caller owns the
// connection; `path` is set to the file's path.
Expected<sqlite3*> open_registry_database(const std::string& dir, std::string_view user,
                                          std::string& path);

// create_directories, then fsync every directory whose entries changed, so that a fresh registry
// directory survives power loss too.
Expected<void> create_durable_directories(const std::string& dir);

}  // namespace chunkd::io::detail
