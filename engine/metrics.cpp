#include "engine/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "base/assert.hpp"

namespace chunkd::engine {
namespace {

void append_number(std::string& out, double v) {
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.9g", v);
  }
  out += buf;
}

void append_series(std::string& out, const std::string& name, const std::string& labels,
                   double value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  append_number(out, value);
  out += '\n';
}

std::string join_labels(const std::string& labels, const std::string& extra) {
  if (labels.empty()) return extra;
  return labels + "," + extra;
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), buckets_(bounds_.size() + 1, 0) {
  CHUNKD_ASSERT(std::is_sorted(bounds_.begin(), bounds_.end()));
}

void Histogram::observe(double v) {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  buckets_[static_cast<std::size_t>(it - bounds_.begin())]++;
  count_++;
  sum_ += v;
}

Metrics::Family& Metrics::family(const std::string& name, Kind kind, const std::string& help) {
  auto [it, inserted] = families_.try_emplace(name);
  if (inserted) {
    it->second.kind = kind;
    it->second.help = help;
  } else if (it->second.kind != kind) {
    throw std::logic_error("metric " + name + " registered with two kinds");
  }
  return it->second;
}

Counter& Metrics::counter(const std::string& name, const std::string& help,
                          const std::string& labels) {
  auto& slot = family(name, Kind::Counter, help).counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& Metrics::gauge(const std::string& name, const std::string& help, const std::string& labels) {
  auto& slot = family(name, Kind::Gauge, help).gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

void Metrics::gauge_fn(const std::string& name, const std::string& help, const std::string& labels,
                       std::function<double()> read) {
  family(name, Kind::Gauge, help).read_fns[labels] = std::move(read);
}

void Metrics::drop_fn(const std::string& name, const std::string& labels) {
  if (auto it = families_.find(name); it != families_.end()) it->second.read_fns.erase(labels);
}

void Metrics::counter_fn(const std::string& name, const std::string& help,
                         const std::string& labels, std::function<double()> read) {
  family(name, Kind::Counter, help).read_fns[labels] = std::move(read);
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help,
                              std::vector<double> upper_bounds, const std::string& labels) {
  auto& slot = family(name, Kind::Histogram, help).histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(std::move(upper_bounds));
  return *slot;
}

std::uint64_t Metrics::counter_value(const std::string& name, const std::string& labels) const {
  auto f = families_.find(name);
  if (f == families_.end()) return 0;
  auto c = f->second.counters.find(labels);
  return c == f->second.counters.end() ? 0 : c->second->value();
}

std::string Metrics::render() const {
  std::string out;
  out.reserve(4096);
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    switch (f.kind) {
      case Kind::Counter:
        out += "# TYPE " + name + " counter\n";
        for (const auto& [labels, c] : f.counters) {
          append_series(out, name, labels, static_cast<double>(c->value()));
        }
        for (const auto& [labels, read] : f.read_fns) append_series(out, name, labels, read());
        break;
      case Kind::Gauge:
        out += "# TYPE " + name + " gauge\n";
        for (const auto& [labels, g] : f.gauges) append_series(out, name, labels, g->value());
        for (const auto& [labels, read] : f.read_fns) append_series(out, name, labels, read());
        break;
      case Kind::Histogram:
        out += "# TYPE " + name + " histogram\n";
        for (const auto& [labels, h] : f.histograms) {
          std::uint64_t cumulative = 0;
          const auto& bounds = h->upper_bounds();
          for (std::size_t i = 0; i <= bounds.size(); ++i) {
            cumulative += h->bucket_counts()[i];
            std::string le = "le=\"";
            if (i < bounds.size()) {
              append_number(le, bounds[i]);
            } else {
              le += "+Inf";
            }
            le += '"';
            append_series(out, name + "_bucket", join_labels(labels, le),
                          static_cast<double>(cumulative));
          }
          append_series(out, name + "_sum", labels, h->sum());
          append_series(out, name + "_count", labels, static_cast<double>(h->count()));
        }
        break;
    }
  }
  return out;
}

}  // namespace chunkd::engine
