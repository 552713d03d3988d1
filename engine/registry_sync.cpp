#include "engine/registry_sync.hpp"

#include <memory>
#include <utility>

#include "io/log.hpp"
#include "protocol/control.hpp"

namespace chunkd::engine {

RegistrySync::RegistrySync(Catalog& catalog, io::RegistryStore& registry, Metrics& metrics,
                           std::function<void()> collect_garbage)
    : catalog_(catalog),
      registry_(registry),
      metrics_(metrics),
      collect_garbage_(std::move(collect_garbage)) {
  auto stat = [this](auto field) {
    return [this, field] { return static_cast<double>(registry_.stats().*field); };
  };
  metrics_.gauge_fn("chunkd_registry_connected", "1 while the shared registry is connected.", "",
                    [this] { return registry_.stats().connected ? 1.0 : 0.0; });
  metrics_.counter_fn("chunkd_registry_reconnects_total",
                      "Connections to the shared registry re-established.", "",
                      stat(&io::RegistryStats::reconnects));
  metrics_.counter_fn("chunkd_registry_notifications_total",
                      "Changes other instances made to the shared registry, heard of.", "",
                      stat(&io::RegistryStats::notifications));
  metrics_.counter_fn("chunkd_registry_writes_total", "Registry writes committed.", "",
                      stat(&io::RegistryStats::writes));
  metrics_.counter_fn("chunkd_registry_write_seconds_total",
                      "Time from submission to commit of the registry writes committed.", "",
                      stat(&io::RegistryStats::write_seconds));
}

void RegistrySync::start() {
  registry_.on_change([this](const std::optional<std::string>& id) { changed(id); });
}

void RegistrySync::count(const char* kind) {
  metrics_
      .counter("chunkd_registry_changes_applied_total",
               "Catalog entries put or erased after other instances' changes, by kind.",
               std::string("kind=\"") + kind + "\"")
      .inc();
}

void RegistrySync::changed(const std::optional<std::string>& id) {
  if (!id) {
    reload_all();
    return;
  }
  if (auto problem = protocol::validate_stream_id(*id)) {
    LOG_WARN("registry", "ignored a change notification for an invalid stream id (%zu bytes): %s",
             id->size(), problem->message.c_str());
    return;
  }
  if (loading_.contains(*id)) {
    again_.insert(*id);
  } else if (loading_.size() >= kMaxLoadsInFlight) {
    reload_all();  // read after every load queued: covers this id too
  } else {
    load_one(*id);
  }
}

void RegistrySync::load_one(const std::string& id) {
  loading_.insert(id);
  registry_.load(id, [this, id](Expected<std::vector<io::StoredStream>> loaded) {
    applied_one(id, std::move(loaded));
  });
}

void RegistrySync::reload_all() {
  if (reloading_) {
    reload_again_ = true;
    return;
  }
  reloading_ = true;
  registry_.load(std::nullopt, [this](Expected<std::vector<io::StoredStream>> loaded) {
    applied_all(std::move(loaded));
  });
}

bool RegistrySync::put(io::StoredStream stream, bool counted) {
  StreamSnapshot before = catalog_.find(stream.id);
  bool files_replaced = false;
  if (before) {
    files_replaced = before->files.size() != stream.files.size();
    for (std::size_t i = 0; !files_replaced && i < stream.files.size(); ++i) {
      files_replaced = before->files[i].digest != stream.files[i].digest;
    }
  }
  if (counted) count(before ? "updated" : "created");
  catalog_.put(std::make_shared<const io::StoredStream>(std::move(stream)));
  return files_replaced;
}

void RegistrySync::applied_one(const std::string& id,
                               Expected<std::vector<io::StoredStream>> loaded) {
  loading_.erase(id);
  bool collect = false;
  if (!loaded) {
    LOG_WARN("registry", "cannot read stream %s after another instance changed it: %s", id.c_str(),
             loaded.error().message().c_str());
  } else if (loaded->empty()) {
    collect = catalog_.erase(id);
    if (collect) {
      count("deleted");
      LOG_INFO("registry", "stream %s deleted by another instance", id.c_str());
    }
  } else if (loaded->size() == 1 && loaded->front().id == id) {
    LOG_INFO("registry", "stream %s version %llu from another instance", id.c_str(),
             static_cast<unsigned long long>(loaded->front().version));
    collect = put(std::move(loaded->front()), true);
  }
  if (again_.erase(id) != 0) load_one(id);
  if (collect && collect_garbage_) collect_garbage_();
}

void RegistrySync::applied_all(Expected<std::vector<io::StoredStream>> loaded) {
  reloading_ = false;
  if (!loaded) {
    LOG_WARN("registry", "cannot reload the registry: %s", loaded.error().message().c_str());
  } else {
    std::set<std::string, std::less<>> present;
    for (const auto& s : *loaded) present.insert(s.id);
    bool collect = false;
    for (const StreamSnapshot& s : catalog_.page(std::nullopt, true, catalog_.size())) {
      if (!present.contains(s->id) && catalog_.erase(s->id)) {
        count("deleted");
        collect = true;
      }
    }
    for (auto& s : *loaded) {
      const bool is_new = !catalog_.find(s.id);  // counted; an unchanged one is not
      collect = put(std::move(s), is_new) || collect;
    }
    LOG_INFO("registry", "reloaded: %zu streams", catalog_.size());
    if (collect && collect_garbage_) collect_garbage_();
  }
  if (std::exchange(reload_again_, false)) reload_all();
}

}  // namespace chunkd::engine
