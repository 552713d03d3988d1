// The content-addressed store under <data_dir>/blobs: each file a stream version references is
// stored once, named by its XXH3-128 digest, and never changed after it is written.
// Layout: <data_dir>/blobs/<first two hex digits>/<32 hex digits>.
#pragma once

#include <string>
#include <string_view>

namespace chunkd::engine {

std::string blob_path(const std::string& data_dir, std::string_view digest);

}  // namespace chunkd::engine
