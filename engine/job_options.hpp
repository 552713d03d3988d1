// The settings of the jobs service ([jobs] in the config file, SPEC.md §3; engine/job_service.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace chunkd::engine {

struct JobOptions {
  bool enabled = true;          // jobs.enabled: subscribe to the jobs topics and serve /jobs
  std::size_t max_jobs = 1000;  // jobs.max_jobs: jobs kept, finished ones too
  std::uint64_t max_executions = 100000;  // jobs.max_executions: over every job
  double thing_requests_per_s = 10;  // jobs.thing_requests_per_s: per thing, burst of twice that
  std::string topic_prefix = "$aws/things";  // mqtt.topic_prefix
  int qos = 0;  // mqtt.qos: replies and notifications are published as blocks are
};

}  // namespace chunkd::engine
