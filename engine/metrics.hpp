// Prometheus metrics owned by the loop thread: counters, gauges and histograms registered once,
// updated through stable references (no lookup on the hot path), rendered as the text exposition
// format by GET /metrics.
//
// Names follow Prometheus conventions with units: chunkd_blocks_sent_total,
// chunkd_publish_latency_seconds. `labels` is the inside of the braces, e.g.
// R"(route="create",status="201")", or empty. Registering the same name+labels twice returns the
// same object.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace chunkd::engine {

class Counter {
 public:
  void inc(std::uint64_t n = 1) { value_ += n; }
  std::uint64_t value() const { return value_; }

 private:
  std::uint64_t value_ = 0;
};

class Gauge {
 public:
  void set(double v) { value_ = v; }
  void add(double v) { value_ += v; }
  double value() const { return value_; }

 private:
  double value_ = 0;
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  std::uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  const std::vector<double>& upper_bounds() const { return bounds_; }
  const std::vector<std::uint64_t>& bucket_counts() const { return buckets_; }  // not cumulative

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> buckets_;  // one per bound, plus +Inf
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  Counter& counter(const std::string& name, const std::string& help,
                   const std::string& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const std::string& labels = {});
  // A gauge read at render time (queue depths, bytes stored...).
  void gauge_fn(const std::string& name, const std::string& help, const std::string& labels,
                std::function<double()> read);
  // A counter kept elsewhere (a library's statistics), read at render time; must not decrease.
  void counter_fn(const std::string& name, const std::string& help, const std::string& labels,
                  std::function<double()> read);
  // Forgets a gauge_fn / counter_fn series (its reader is about to go away); absent: nothing.
  void drop_fn(const std::string& name, const std::string& labels);
  Histogram& histogram(const std::string& name, const std::string& help,
                       std::vector<double> upper_bounds, const std::string& labels = {});

  // Looks up a registered counter's current value (tests); 0 when absent.
  std::uint64_t counter_value(const std::string& name, const std::string& labels = {}) const;

  std::string render() const;

 private:
  enum class Kind { Counter, Gauge, Histogram };
  struct Family {
    Kind kind;
    std::string help;
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::function<double()>> read_fns;  // gauge_fn / counter_fn
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& family(const std::string& name, Kind kind, const std::string& help);
  std::map<std::string, Family> families_;
};

}  // namespace chunkd::engine
