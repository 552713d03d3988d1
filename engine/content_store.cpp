#include "engine/content_store.hpp"

namespace chunkd::engine {

std::string blob_path(const std::string& data_dir, std::string_view digest) {
  std::string path = data_dir;
  path += "/blobs/";
  path.append(digest.substr(0, 2));
  path += '/';
  path.append(digest);
  return path;
}

}  // namespace chunkd::engine
