#include "engine/catalog.hpp"

#include <algorithm>

namespace chunkd::engine {

StreamSnapshot Catalog::find(std::string_view stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second;
}

void Catalog::put(StreamSnapshot stream) {
  std::string id = stream->id;
  streams_.insert_or_assign(std::move(id), std::move(stream));
}

bool Catalog::erase(std::string_view stream_id) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return false;
  streams_.erase(it);
  return true;
}

std::vector<StreamSnapshot> Catalog::page(std::optional<std::string_view> after_id, bool ascending,
                                          std::size_t limit) const {
  std::vector<StreamSnapshot> out;
  if (ascending) {
    auto it = after_id ? streams_.upper_bound(*after_id) : streams_.begin();
    for (; it != streams_.end() && out.size() < limit; ++it) out.push_back(it->second);
  } else {
    auto it = after_id ? streams_.lower_bound(*after_id) : streams_.end();
    while (it != streams_.begin() && out.size() < limit) {
      --it;
      out.push_back(it->second);
    }
  }
  return out;
}

std::vector<std::string> Catalog::referenced_digests() const {
  std::vector<std::string> out;
  for (const auto& [id, s] : streams_) {
    for (const auto& f : s->files) out.push_back(f.digest);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

const io::StoredFile* find_file(const io::StoredStream& stream, std::uint32_t file_id) {
  for (const auto& f : stream.files) {
    if (f.file_id == file_id) return &f;
  }
  return nullptr;
}

}  // namespace chunkd::engine
