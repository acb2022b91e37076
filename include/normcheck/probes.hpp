// normcheck — `normcheck diagnose`: targeted probes that tell what a backend does, point by
// point (docs/diagnose.md). Each probe runs a few small cases through the ordinary case runner
// (plugins stay isolated) and compares the outputs with the predictions of each candidate
// behaviour, or fits how the error grows with κ, n or the dtype (tolerance-model.md §3.4).
#pragma once

#include <string>
#include <vector>

#include "normcheck/backend.hpp"

namespace normcheck {

struct ProbeResult {
  std::string point;     ///< what was probed, e.g. "momentum direction"
  std::string finding;   ///< the answer, e.g. "new-weight: running ← (1−f)·running + f·batch"
  std::string evidence;  ///< the figures behind it (distances in budgets, fitted slopes, …)
  bool determined = false;  ///< false: unsupported by the backend, or no candidate fits
};

/// Runs every probe on backend b. Never throws for backend failures (a probe whose cases are
/// unsupported or fail to run is reported as not determined, with the reason).
std::vector<ProbeResult> run_probes(Backend& b);

}  // namespace normcheck
