// The content store's background runs besides ingests, shared by engine/content_store.cpp (which
// owns and destroys them) and engine/content_store_upkeep.cpp (which runs them). Loop thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/content_store.hpp"
#include "engine/content_store_work.hpp"

namespace chunkd::engine {

struct ContentStore::GcRun {
  ContentStore* store = nullptr;
  uv_work_t work{};
  std::string data_dir;
  std::vector<std::string> live;
  store_work::ScanResult scan;
  std::vector<std::function<void(const GcResult&)>> waiters;
};

// One writability check of data_dir on the thread pool (probe_storage()).
struct ContentStore::Probe {
  ContentStore* store = nullptr;
  uv_work_t work{};
  int result = 0;  // 0: writable, else the errno
};

}  // namespace chunkd::engine
